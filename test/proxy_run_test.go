package test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// gearproxy run stops cleanly, exit status 0, on SIGTERM and on SIGINT.
func TestProxyRunStopsOnSignals(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		p := startProxyRun(t, bundledBackends(2), "")
		c := dialRaw(t, p.Addr)
		c.Send(protocol.EchoReq, "hello")
		c.Expect(protocol.EchoRes, "hello")
		p.cmd.Process.Signal(sig)
		select {
		case <-p.Exited():
		case <-time.After(10 * time.Second):
			t.Fatalf("%v: gearproxy run still running after 10 s", sig)
		}
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("%v: exit status %d\n%s", sig, code, p.Log())
		}
	}
}

// A configuration error names file and line, and gearproxy run refuses to
// start.
func TestProxyRunConfigError(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bad.toml")
	os.WriteFile(cfg, []byte("[[listener]]\naddress = \"127.0.0.1:1\"\n[[backend]]\nname = \"a\"\nbundeld = true\n"), 0o600)
	r := runTool(t, 30*time.Second, nil, gearproxyBinary(t), "run", "-config", cfg)
	if r.Exit == 0 || !strings.Contains(r.Stderr, "bad.toml:5: unknown key backend.bundeld") {
		t.Fatalf("gearproxy run with a bad config: %s", r)
	}
}
