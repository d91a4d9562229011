package test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// SIGHUP applies what may change live (limits, schedules), names what
// needs a restart (the backend list in this build) and keeps everything
// as it runs when the new file is invalid.
func TestOpsReload(t *testing.T) {
	t.Parallel()
	p := startOpsProxy(t, bundledBackends(2), "[limits]\nmax_connections = 100\n")
	file := filepath.Join(filepath.Dir(p.LogPath), "gearproxy.toml")
	orig, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	reload := func(text, logLine string) {
		t.Helper()
		before := strings.Count(p.Log(), logLine)
		if err := os.WriteFile(file, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		p.cmd.Process.Signal(syscall.SIGHUP)
		for strings.Count(p.Log(), logLine) == before {
			select {
			case <-p.Exited():
				t.Fatalf("gearproxy exited on SIGHUP:\n%s", p.Log())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	echo := func(c *RawConn) {
		t.Helper()
		c.Send(protocol.EchoReq, "ping")
		c.Expect(protocol.EchoRes, "ping")
	}
	held := []*RawConn{dialRaw(t, p.Work), dialRaw(t, p.Work)}
	for _, c := range held {
		echo(c)
	}
	echo(dialRaw(t, p.Work)) // a third is welcome under max_connections = 100

	// Lower max_connections to the two held: the next one is refused.
	lowered := strings.Replace(string(orig), "max_connections = 100", "max_connections = 2", 1)
	reload(lowered, "reload: limits applied")
	busy := dialRaw(t, p.Work)
	if r := busy.Recv(); r.Type != protocol.Error || r.Args[0] != "SERVER_BUSY" {
		t.Fatalf("over the reloaded limit: %s", r)
	}

	// A schedule added by reload shows on the status page.
	withSchedule := lowered + "[[schedule]]\nname = \"added\"\ncron = \"@yearly\"\nfunction = \"ops.yearly\"\n"
	reload(withSchedule, "reload: schedules replaced")
	if _, page := p.get(t, "/"); !strings.Contains(page, "<td>added</td>") {
		t.Errorf("the status page lacks the reloaded schedule")
	}

	// The log level changes live.
	withSchedule = strings.Replace(withSchedule, "[admin]", "[log]\nlevel = \"debug\"\n[admin]", 1)
	reload(withSchedule, "reload: log level set")

	// An invalid file is refused and the running configuration stays.
	reload(withSchedule+"bogus = 1\n", "reload refused")
	if !regexp.MustCompile(`gearproxy.toml:[0-9]+: unknown key schedule.bogus`).MatchString(p.Log()) {
		t.Errorf("the refusal does not say why")
	}

	// A bundled backend would need its store opened: refused with a log
	// line, and the proxy serves on (a gearmand at an address is added
	// live: TestOpsReloadAddsBackend).
	reload(withSchedule+"[[backend]]\nname = \"shard3\"\nbundled = true\n", "adding a bundled backend needs a restart")
	for _, c := range held {
		echo(c)
	}
	if m := p.metrics(t); sum(m, "gearproxy_backend_up") != 2 {
		t.Errorf("backends up after the refused reload: %v", sum(m, "gearproxy_backend_up"))
	}
}
