package test

import (
	"bytes"
	"context"
	"image/png"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// The status page of the real binary shows the test's backends, its
// functions with their queued jobs and workers, the connected user and
// the schedule; headless Chromium renders it (a screenshot is taken).
func TestOpsStatusPage(t *testing.T) {
	t.Parallel()
	p := startOpsProxy(t, bundledBackends(2), `[[schedule]]
name = "nightly"
cron = "0 3 * * *"
function = "ops.report"
`)
	opsWorker(t, p.Work, 0, "ops.resize")
	c := dialRaw(t, p.Work)
	c.Send(protocol.SubmitJobBg, "ops.report", "r1", "x") // no worker: stays queued
	if r := c.Recv(); r.Type != protocol.JobCreated {
		t.Fatalf("submit: %s", r)
	}
	code, page := p.get(t, "/")
	if code != http.StatusOK {
		t.Fatalf("/: %d %s", code, page)
	}
	for _, want := range []string{
		"2 of 2 backends healthy",
		"<td>shard1</td>", "<td>shard2</td>", "<td>bundled</td>",
		"<td>ops.resize</td>", "<td>ops.report</td>",
		"<td>local</td>",
		"<td>nightly</td>", "<code>0 3 * * *</code>",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the status page lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("page:\n%s", page)
	}

	bin, err := exec.LookPath("chromium")
	if err != nil {
		if inCI() {
			t.Fatal("chromium is required in CI")
		}
		t.Skip("no chromium: the page was checked over HTTP only")
	}
	dir := t.TempDir()
	shot := filepath.Join(dir, "status.png")
	// A hang guard only: a browser that never exits must not stall the
	// suite.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--screenshot="+shot, "--window-size=1200,800",
		"--dump-dom", "http://"+p.Admin+"/")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_CACHE_HOME="+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.Bytes())
	}
	dom := stdout.String()
	for _, want := range []string{"<td>shard1</td>", "<td>shard2</td>", "<td>ops.resize</td>", "<td>ops.report</td>"} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered DOM lacks %s", want)
		}
	}
	data, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 800 {
		t.Errorf("screenshot is %dx%d, want 1200x800", b.Dx(), b.Dy())
	}
	if keep := os.Getenv("GEARPROXY_ARTIFACTS"); keep != "" {
		if err := os.MkdirAll(keep, 0o755); err == nil {
			os.WriteFile(filepath.Join(keep, "gearproxy-run-status-page.png"), data, 0o644)
		}
	}
}
