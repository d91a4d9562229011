package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// SIGHUP adding a third job server under foreground load: no job fails,
// and of a fixed set of keys about a third move, all of them to the new
// server (rendezvous hashing: a key never moves between the old ones).
func TestOpsReloadAddsBackend(t *testing.T) {
	t.Parallel()
	js := []*Server{startGearproxyServer(t), startGearproxyServer(t), startGearproxyServer(t)}
	p := startOpsProxy(t, []proxyBackend{{Name: "js1", Addr: js[0].Addr}, {Name: "js2", Addr: js[1].Addr}}, "")
	file := filepath.Join(filepath.Dir(p.LogPath), "gearproxy.toml")

	// Where a fixed set of keys lands: background jobs nobody works,
	// listed by each server's "show unique jobs".
	const keys = 300
	c := dialRaw(t, p.Work)
	submitKeys := func() {
		for k := range keys {
			c.Send(protocol.SubmitJobBg, "ops.where", fmt.Sprintf("k%d", k), "")
			if r := c.Recv(); r.Type != protocol.JobCreated {
				t.Fatalf("submit k%d: %s", k, r)
			}
		}
	}
	uniques := func(s *Server) map[string]bool {
		a := dialRaw(t, s.Addr)
		defer a.Close()
		a.SendLine("show unique jobs")
		set := map[string]bool{}
		for _, u := range a.RecvList() {
			set[u] = true
		}
		return set
	}
	submitKeys()
	before := []map[string]bool{uniques(js[0]), uniques(js[1])}
	if len(before[0])+len(before[1]) != keys {
		t.Fatalf("%d + %d keys on the two servers, want %d", len(before[0]), len(before[1]), keys)
	}

	// Foreground load through the reload.
	opsWorker(t, p.Work, 0, "ops.move")
	opsWorker(t, p.Work, 0, "ops.move")
	var (
		stop      atomic.Bool
		completed atomic.Int64
		mu        sync.Mutex
		failures  []string
		wg        sync.WaitGroup
	)
	progress := make(chan struct{}, 100000)
	for cl := range 4 {
		wg.Go(func() {
			g, err := dialGear(p.Work)
			if err != nil {
				t.Error(err)
				return
			}
			defer g.conn.Close()
			for n := 0; !stop.Load(); n++ {
				key := fmt.Sprintf("m%d-%d", cl, n)
				g.send(protocol.SubmitJob, "ops.move", key, key)
				typ, args, err := g.recv(time.Minute)
				if err == nil && typ == protocol.JobCreated {
					typ, args, err = g.recv(time.Minute)
				}
				if err != nil || typ != protocol.WorkComplete || args[1] != key {
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%s: %v %q %v", key, typ, args, err))
					mu.Unlock()
					return
				}
				completed.Add(1)
				progress <- struct{}{}
			}
		})
	}
	for range 50 {
		<-progress
	}

	orig, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	added := string(orig) + fmt.Sprintf("[[backend]]\nname = \"js3\"\naddress = %q\n", js[2].Addr)
	if err := os.WriteFile(file, []byte(added), 0o600); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	for sum(p.metrics(t), "gearproxy_backend_up") != 3 {
		select {
		case <-p.Exited():
			t.Fatalf("exited on SIGHUP:\n%s", p.Log())
		case <-time.After(20 * time.Millisecond):
		}
	}
	// Some load after the third server is in.
	for range 50 {
		<-progress
	}
	stop.Store(true)
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d failed jobs: %s", len(failures), strings.Join(failures, "; "))
	}
	if n := sum(p.metrics(t), "gearproxy_jobs_submitted_total", `function="ops.move"`, `backend="js3"`); n == 0 {
		t.Errorf("no foreground job went to the new server")
	}

	// The same keys again: those that now prefer js3 are created there;
	// the others coalesce with their queued job where they were.
	submitKeys()
	after := []map[string]bool{uniques(js[0]), uniques(js[1]), uniques(js[2])}
	for i := range 2 {
		for u := range after[i] {
			if !before[i][u] {
				t.Errorf("%s moved to js%d, an old server", u, i+1)
			}
		}
	}
	moved := len(after[2])
	if moved < keys/6 || moved > keys/2 {
		t.Errorf("%d of %d keys moved to the new server, want about a third", moved, keys)
	}
	t.Logf("%d of %d keys moved; %d foreground jobs completed", moved, keys, completed.Load())
}
