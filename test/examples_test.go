package test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestExamplesPHP runs examples/php through `gearproxy connect` as
// examples/README.md says.
func TestExamplesPHP(t *testing.T) {
	t.Parallel()
	requirePeer(t, "gearmand", "php")
	up, _ := connectUpstream(t)
	workerSide := startConnect(t, up, connectPassword)
	clientSide := startConnect(t, up, connectPassword)
	examples, _ := filepath.Abs("../examples/php")
	worker := startTool(t, nil, "php", filepath.Join(examples, "worker.php"), workerSide.Addr, "2")
	r := runTool(t, 30*time.Second, nil, "php", filepath.Join(examples, "client.php"), clientSide.Addr, "hello")
	if r.Exit != 0 || !strings.HasPrefix(r.Stdout, "reverse(hello) = olleh\nbackground job queued: known=") {
		t.Fatalf("client.php:\n%s", r)
	}
	w := worker.Wait(30 * time.Second)
	if w.Exit != 0 || !strings.Contains(w.Stdout, "reverse hello -> olleh\n") || !strings.Contains(w.Stdout, "(background)") {
		t.Fatalf("worker.php:\n%s", w)
	}
}

// TestExamplesGo builds examples/go and runs the worker and the client
// with TLS + SCRAM as examples/README.md says.
func TestExamplesGo(t *testing.T) {
	t.Parallel()
	requirePeer(t, "gearmand")
	up, _ := connectUpstream(t)
	dir := t.TempDir()
	build := exec.Command("go", "build", "-o", dir+"/", "./examples/go/client", "./examples/go/worker")
	build.Dir = ".."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build examples: %v\n%s", err, out)
	}
	common := []string{"-server", up.Addr, "-server-name", up.ServerName, "-ca", up.CAFile, "-user", connectUser}
	env := "GEARPROXY_PASSWORD=" + connectPassword
	worker := startTool(t, nil, "env", append([]string{env, filepath.Join(dir, "worker")}, common...)...)
	r := runTool(t, 30*time.Second, nil, "env", append([]string{env, filepath.Join(dir, "client")}, append(common, "hello", "world")...)...)
	if r.Exit != 0 || r.Stdout != "\"hello\" -> \"olleh\"\n\"world\" -> \"dlrow\"\n" {
		t.Fatalf("client:\n%s\nworker:\n%s", r, worker.Kill())
	}
	// The worker runs until a signal.
	if w := worker.Kill(); strings.Count(w.Stdout, "reverse \"") != 2 {
		t.Fatalf("worker:\n%s", w)
	}
	r = runTool(t, 30*time.Second, nil, "env", append([]string{env, filepath.Join(dir, "client")},
		append(common, "-background", "later")...)...)
	if r.Exit != 0 || r.Stdout != "\"later\" queued: known=true running=false\n" {
		t.Fatalf("client -background:\n%s", r)
	}
	// A wrong password fails at once with AUTH_FAILED.
	r = runTool(t, 30*time.Second, nil, "env", append([]string{"GEARPROXY_PASSWORD=wrong", filepath.Join(dir, "client")},
		append(common, "x")...)...)
	if r.Exit == 0 || r.TimedOut || !strings.Contains(r.Stderr, "AUTH_FAILED") {
		t.Fatalf("client with a wrong password:\n%s", r)
	}
}
