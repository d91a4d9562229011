package admin

import (
	"bytes"
	"context"
	"image/png"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// chromium finds the browser or skips; in CI a missing browser fails.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("chromium is required in CI (Debian package chromium; test/run.sh installs it)")
	}
	t.Skip("no chromium")
	return ""
}

// runChromium runs headless Chromium with a private profile and returns
// its standard output.
func runChromium(t *testing.T, bin, dir string, args ...string) []byte {
	t.Helper()
	// A hang guard: a browser that never exits must not stall the suite.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + filepath.Join(dir, "profile")}
	cmd := exec.CommandContext(ctx, bin, append(base, args...)...)
	// Chromium forks helpers: kill the whole group, and keep its files
	// out of the real home directory.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	cmd.Env = append(os.Environ(), "HOME="+dir, "XDG_CONFIG_HOME="+dir, "XDG_CACHE_HOME="+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.Bytes()
}

// The status page, rendered by a real browser from a Source with two
// backends and two functions, shows them; the screenshot is kept.
func TestStatusPageInChromium(t *testing.T) {
	bin := chromium(t)
	s := newTestServer(t, &fakeSource{st: twoBackends()}, nil)
	srv := httptest.NewServer(s.Handler()) // 127.0.0.1
	defer srv.Close()
	dir := t.TempDir()

	dom := string(runChromium(t, bin, dir, "--dump-dom", srv.URL+"/"))
	for _, want := range []string{
		`<title>gearproxy status</title>`,
		`<meta http-equiv="refresh" content="5">`,
		"1 of 2 backends healthy",
		"<td>gearmand-east</td>", "<td>10.0.0.1:4730</td>", `<span class="up">healthy</span>`,
		"<td>bundled-west</td>", `<span class="down">down</span> (connection refused)`,
		"<td>resize_image</td>", "<td>send_email</td>",
		"<td>web</td>", "<td>batch</td>",
	} {
		if !strings.Contains(dom, want) {
			t.Errorf("the rendered DOM lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}

	shot := filepath.Join(dir, "status.png")
	runChromium(t, bin, dir, "--screenshot="+shot, "--window-size=1200,800", srv.URL+"/")
	data, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("screenshot %s: %v", shot, err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 800 {
		t.Errorf("screenshot is %dx%d, want 1200x800", b.Dx(), b.Dy())
	}
	// A page that rendered has text and table lines: many colours, not
	// one blank background.
	colours := map[[4]uint32]bool{}
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y && len(colours) < 16; y += 4 {
		for x := b.Min.X; x < b.Max.X; x += 4 {
			r, g, bl, a := img.At(x, y).RGBA()
			colours[[4]uint32{r, g, bl, a}] = true
		}
	}
	if len(colours) < 16 {
		t.Errorf("the screenshot looks blank: %d colours", len(colours))
	}
	t.Logf("status page screenshot: %s", shot)
	// t.TempDir goes away with the test; GEARPROXY_ARTIFACTS keeps a copy
	// for people and CI to look at.
	if keep := os.Getenv("GEARPROXY_ARTIFACTS"); keep != "" {
		if err := os.MkdirAll(keep, 0o755); err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(keep, "admin-status-page.png")
		if err := os.WriteFile(dst, data, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("copied to %s", dst)
	}
}
