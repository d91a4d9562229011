package test

import (
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// Two proxies with the same schedule, firing every second (the seconds
// field), in front of the same two job servers: each firing reaches the
// worker exactly once, because both submit the same unique and the job
// server it hashes to coalesces them. The jobs stay queued until both
// proxies have stopped, so that coalescing does not depend on how fast a
// worker would finish them (it holds while a job is queued or running).
func TestOpsScheduleOnceWithTwoProxies(t *testing.T) {
	t.Parallel()
	servers := []*Server{startGearproxyServer(t), startGearproxyServer(t)}
	backends := []proxyBackend{{Name: "js1", Addr: servers[0].Addr}, {Name: "js2", Addr: servers[1].Addr}}
	const sched = `[[schedule]]
name = "tick"
cron = "* * * * * *"
function = "ops.tick"
payload = "p"
timezone = "UTC"
`
	proxies := []*opsProxy{startOpsProxy(t, backends, sched), startOpsProxy(t, backends, sched)}
	// Wait for a few firings that both proxies submitted.
	submitted := func(p *opsProxy) float64 {
		return sum(p.metrics(t), "gearproxy_jobs_submitted_total", `function="ops.tick"`, `user="schedule"`)
	}
	for submitted(proxies[0]) < 3 || submitted(proxies[1]) < 3 {
		time.Sleep(100 * time.Millisecond)
	}
	total := 0.0
	for _, p := range proxies {
		p.cmd.Process.Signal(syscall.SIGTERM)
		<-p.Exited()
		if code := p.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("proxy exit status %d", code)
		}
		total += sumLogged(t, p.Log())
	}
	// Drain both job servers and count each unique.
	uniqueRe := regexp.MustCompile(`^sched:tick:[0-9]+$`)
	seen := map[string]int{}
	for _, s := range servers {
		for _, u := range grabAll(t, s.Addr, "ops.tick") {
			if !uniqueRe.MatchString(u) {
				t.Errorf("unique %q", u)
			}
			seen[u]++
		}
	}
	for u, n := range seen {
		if n != 1 {
			t.Errorf("%s ran %d times", u, n)
		}
	}
	// Both proxies submitted every firing they saw; the job servers kept
	// one job per firing.
	if float64(len(seen)) >= total || len(seen) < 3 {
		t.Errorf("%d jobs at the worker from %v submissions", len(seen), total)
	}
	t.Logf("%d firings, %v submissions", len(seen), total)
}

// sumLogged counts the scheduler's "job submitted" log lines.
func sumLogged(t testing.TB, log string) float64 {
	return float64(strings.Count(log, `msg="schedule: job submitted"`))
}

// grabAll takes every queued job of fn from a job server, as a worker,
// completing each, and returns their uniques.
func grabAll(t testing.TB, addr, fn string) []string {
	t.Helper()
	c := dialRaw(t, addr)
	defer c.Close()
	c.Send(protocol.CanDo, fn)
	var uniques []string
	for {
		c.Send(protocol.GrabJobUniq)
		r := c.Recv()
		switch r.Type {
		case protocol.NoJob:
			return uniques
		case protocol.JobAssignUniq:
			uniques = append(uniques, r.Args[2])
			c.Send(protocol.WorkComplete, r.Args[0], "")
		default:
			t.Fatalf("grab: %s", r)
		}
	}
}
