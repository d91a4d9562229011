package test

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
	"github.com/gearproxy/gearproxy/router"
)

// SIGKILL one gearmand under foreground and background load: no client
// hangs, the foreground jobs waiting on it fail within 2 s, the others
// complete, workers carry on, and the restarted gearmand rejoins.
func TestProxySIGKILLBackend(t *testing.T) {
	servers, bs := gearmandBackends(t, 2)
	p := startProxyRun(t, bs, "[health]\ninterval = \"100ms\"\nmax_backoff = \"200ms\"\n")
	r, err := router.New([]router.Member{{Name: "gm1"}, {Name: "gm2"}})
	if err != nil {
		t.Fatal(err)
	}
	uniqueOn := func(fn string, b, from int) (string, int) {
		for i := from; ; i++ {
			u := fmt.Sprintf("u%d", i)
			if r.Pick(router.Key([]byte(fn), []byte(u), nil), r.All()) == b {
				return u, i + 1
			}
		}
	}

	// Foreground jobs nobody works on, waiting on each backend.
	held := map[int][]*RawConn{}
	next := 0
	for b := range 2 {
		for range 3 {
			var u string
			u, next = uniqueOn("held", b, next)
			c := dialRaw(t, p.Addr)
			c.Send(protocol.SubmitJob, "held", u, "x")
			expectType(t, c, protocol.JobCreated)
			held[b] = append(held[b], c)
		}
	}

	// Load: two workers and four clients submitting foreground and
	// background jobs of "load" with fresh uniques.
	stop, stopWorkers := make(chan struct{}), make(chan struct{})
	var wg, workers sync.WaitGroup
	var workerErr atomic.Value
	for range 2 {
		workers.Add(1)
		go func() {
			defer workers.Done()
			err := gearWorker(p.Addr, "load", time.Millisecond, stopWorkers)
			select {
			case <-stopWorkers:
			default:
				workerErr.Store(fmt.Errorf("worker stopped: %v", err))
			}
		}()
	}
	var completed, failed, hung atomic.Int64
	var hungWhat sync.Map
	var loadErr atomic.Value
	for k := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g, err := dialGear(p.Addr)
			if err != nil {
				loadErr.Store(err)
				return
			}
			defer g.conn.Close()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				u := fmt.Sprintf("load-%d-%d", k, i)
				if i%3 == 0 {
					g.send(protocol.SubmitJobBg, "load", u, "bg")
					if _, _, err := g.recv(5 * time.Second); err != nil {
						hung.Add(1)
						hungWhat.Store(u, "background submit: "+err.Error())
						return
					}
					continue
				}
				g.send(protocol.SubmitJob, "load", u, "fg")
				typ, args, err := g.recv(5 * time.Second)
				if err != nil {
					hung.Add(1)
					hungWhat.Store(u, "foreground submit: "+err.Error())
					return
				}
				if typ == protocol.Error {
					failed.Add(1)
					continue
				}
				typ, _, err = g.recv(5 * time.Second)
				switch {
				case err != nil:
					hung.Add(1)
					hungWhat.Store(u, "result of "+args[0]+": "+err.Error())
					return
				case typ == protocol.WorkComplete:
					completed.Add(1)
				default:
					failed.Add(1)
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)

	killed := time.Now()
	servers[0].Kill()
	// Every held job on the killed backend fails within 2 s; those on
	// the other backend stay waiting.
	for _, c := range held[0] {
		reply, err := c.Next(2*time.Second - time.Since(killed))
		if err != nil || reply.Type != protocol.WorkFail {
			t.Fatalf("held job on the killed backend: %v %v after %v", reply, err, time.Since(killed))
		}
	}
	for _, c := range held[1] {
		if reply, err := c.Next(100 * time.Millisecond); !errors.Is(err, ErrQuiet) {
			t.Fatalf("held job on the live backend got %v %v", reply, err)
		}
	}
	before := completed.Load()
	time.Sleep(500 * time.Millisecond)
	if completed.Load() == before {
		t.Fatal("no job completed after the kill: workers or clients stalled")
	}

	// Restart it on the same port: it rejoins, its keys route to it
	// again, and the workers' abilities were replayed there.
	startGearmandAt(t, servers[0].Addr)
	c := dialRaw(t, p.Addr)
	var u string
	u, _ = uniqueOn("load", 0, 1000000)
	for deadline := time.Now().Add(10 * time.Second); ; {
		c.Send(protocol.SubmitJob, "load", u, "again")
		h := expectType(t, c, protocol.JobCreated).Args[0]
		if backendOf(t, []string{"gm1", "gm2"}, h) == 0 {
			if got := expectType(t, c, protocol.WorkComplete); got.Args[1] != "done:again" {
				t.Fatalf("job on the restarted backend: %v", got)
			}
			break
		}
		expectType(t, c, protocol.WorkComplete)
		if time.Now().After(deadline) {
			t.Fatal("the restarted backend never rejoined")
		}
		time.Sleep(50 * time.Millisecond)
	}
	close(stop)
	wg.Wait()
	if e := workerErr.Load(); e != nil {
		t.Fatal(e)
	}
	close(stopWorkers)
	workers.Wait()
	if e := loadErr.Load(); e != nil {
		t.Fatal(e)
	}
	if hung.Load() != 0 {
		hungWhat.Range(func(k, v any) bool {
			t.Logf("%s: %s", k, v)
			return true
		})
		t.Fatalf("%d clients waited 5 s for a reply", hung.Load())
	}
	t.Logf("load: %d completed, %d failed", completed.Load(), failed.Load())
}
