package test

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// SIGTERM under foreground load: every job a client saw accepted
// (JOB_CREATED) completes with its result, later submits are refused,
// and gearproxy exits 0. Two proxies share two job servers, as in a
// rolling restart: workers on the other proxy finish what is still queued,
// and a slow worker on the draining one finishes the job it holds.
func TestOpsSIGTERMDrain(t *testing.T) {
	t.Parallel()
	servers := []proxyBackend{
		{Name: "js1", Addr: startGearproxyServer(t).Addr},
		{Name: "js2", Addr: startGearproxyServer(t).Addr},
	}
	p := startOpsProxy(t, servers, `drain_timeout = "2m"`)
	other := startOpsProxy(t, servers, "")
	opsWorker(t, other.Work, time.Millisecond, "ops.drain")
	opsWorker(t, p.Work, 100*time.Millisecond, "ops.drain")

	const clients = 6
	var (
		completed atomic.Int64
		mu        sync.Mutex
		lost      []string // accepted, then no result
		refused   int
		wg        sync.WaitGroup
	)
	progress := make(chan struct{}, 1000)
	for c := range clients {
		wg.Go(func() {
			g, err := dialGear(p.Work)
			if err != nil {
				t.Error(err)
				return
			}
			defer g.conn.Close()
			for n := 0; ; n++ {
				key := fmt.Sprintf("c%d-%d", c, n)
				if g.send(protocol.SubmitJob, "ops.drain", key, key) != nil {
					return // closed before the submit: never accepted
				}
				typ, args, err := g.recv(time.Minute)
				if err != nil {
					return // no JOB_CREATED: never accepted
				}
				if typ != protocol.JobCreated {
					mu.Lock()
					refused++
					mu.Unlock()
					if typ != protocol.Error || args[0] != "SHUTTING_DOWN" {
						t.Errorf("%s: %s %q in reply to a submit", key, typ, args)
					}
					return
				}
				typ, args, err = g.recv(time.Minute)
				if err != nil || typ != protocol.WorkComplete || args[1] != key {
					mu.Lock()
					lost = append(lost, fmt.Sprintf("%s: %v %q %v", key, typ, args, err))
					mu.Unlock()
					return
				}
				completed.Add(1)
				progress <- struct{}{}
			}
		})
	}
	// Under load: some jobs done through each path before the signal.
	for range 30 {
		<-progress
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.Exited()
	wg.Wait()
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d", code)
	}
	if len(lost) > 0 {
		t.Errorf("%d accepted jobs without their result: %s", len(lost), strings.Join(lost, "; "))
	}
	if !strings.Contains(p.Log(), "drained: every job in flight finished") {
		t.Errorf("no drained line in the log")
	}
	t.Logf("%d jobs completed, %d submits refused while draining", completed.Load(), refused)
}

// While a drain waits for a job, /readyz answers 503 "draining"; a second
// SIGTERM stops at once, still with exit status 0.
func TestOpsSecondSIGTERM(t *testing.T) {
	t.Parallel()
	p := startOpsProxy(t, bundledBackends(1), `drain_timeout = "10m"`)
	c := dialRaw(t, p.Work)
	c.Send(protocol.SubmitJob, "ops.nobody", "u1", "x") // no worker: it waits
	if r := c.Recv(); r.Type != protocol.JobCreated {
		t.Fatalf("submit: %s", r)
	}
	if code, body := p.get(t, "/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before the signal: %d %s", code, body)
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	for {
		code, body := p.get(t, "/readyz")
		if code == http.StatusServiceUnavailable && strings.Contains(body, "draining") {
			break
		}
		select {
		case <-p.Exited():
			t.Fatalf("exited during the drain with a job in flight:\n%s", p.Log())
		case <-time.After(10 * time.Millisecond):
		}
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.Exited()
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit status %d", code)
	}
	if !strings.Contains(p.Log(), "second signal") {
		t.Errorf("no log line for the second signal")
	}
}
