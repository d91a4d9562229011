package proxy

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
	"github.com/gearproxy/gearproxy/router"
)

// A backend that dies fails every foreground job waiting on it, leaves
// routing, and rejoins when it is back, with the workers' abilities
// replayed so that its new jobs get done.
func TestBackendDiesAndRejoins(t *testing.T) {
	s0, s1 := startTCPJobServer(t, "H:a", ""), startTCPJobServer(t, "H:b", "")
	srv := startProxy(t, Options{Backends: tcpBackends(s0, s1), HealthInterval: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, 2)
	addr := listen(t, srv, "local")

	// A worker that registers but does not grab yet, so jobs wait.
	w := dial(t, addr)
	w.send(protocol.CanDo, "f")
	w.send(protocol.EchoReq, "sync") // CAN_DO has no reply: wait for it to pass
	w.expect(protocol.EchoRes)

	// One foreground job on each backend.
	uniq := func(b int) string {
		for i := 0; ; i++ {
			u := fmt.Sprintf("u%d", i)
			if srv.router().Pick(router.Key([]byte("f"), []byte(u), nil), srv.router().All()) == b {
				return u
			}
		}
	}
	c0, c1 := dial(t, addr), dial(t, addr)
	c0.send(protocol.SubmitJob, "f", uniq(0), "x")
	h0 := c0.expect(protocol.JobCreated)[0]
	c1.send(protocol.SubmitJob, "f", uniq(1), "y")
	h1 := c1.expect(protocol.JobCreated)[0]

	s0.js.Close()
	if got := c0.expect(protocol.WorkFail); got[0] != h0 {
		t.Fatalf("WORK_FAIL %q, want %q", got, h0)
	}
	for srv.Up() != 1 {
		time.Sleep(5 * time.Millisecond)
	}
	// Routing skips the dead backend: its uniques go to the other.
	c0.send(protocol.SubmitJobBg, "f", uniq(0), "z")
	hz := c0.expect(protocol.JobCreated)[0]
	if b, _, _ := srv.codec().Decode("local", []byte(hz)); b != 1 {
		t.Fatalf("job went to backend %d while 0 is down", b)
	}
	// The worker carries on with the live backend.
	for _, want := range []string{h1, hz} {
		w.send(protocol.GrabJob)
		args := w.expect(protocol.JobAssign)
		if args[0] != want {
			t.Fatalf("assigned %q, want %q", args[0], want)
		}
		w.send(protocol.WorkComplete, args[0], "ok")
	}
	if got := c1.expect(protocol.WorkComplete); got[0] != h1 {
		t.Fatalf("WORK_COMPLETE %q", got)
	}

	s0.restart("H:a")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.WaitUp(ctx, 2); err != nil {
		t.Fatal(err)
	}
	// The rejoined backend takes its keys back, and the worker, whose
	// CAN_DO was replayed there, gets the job.
	var h string
	for deadline := time.Now().Add(5 * time.Second); ; {
		c0.send(protocol.SubmitJob, "f", uniq(0), "again")
		h = c0.expect(protocol.JobCreated)[0]
		if b, _, _ := srv.codec().Decode("local", []byte(h)); b == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("backend 0 never took its keys back")
		}
	}
	// The replay of CAN_DO races with the submit, so the first grab may
	// find nothing; the worker then sleeps as libgearman's does and is
	// woken when the job becomes its to take.
	var args []string
	for args == nil {
		w.send(protocol.GrabJob)
		switch typ, a := w.recv(); typ {
		case protocol.JobAssign:
			args = a
		case protocol.NoJob:
			w.send(protocol.PreSleep)
			w.expect(protocol.Noop)
		default:
			t.Fatalf("got %s %q, want JOB_ASSIGN or NO_JOB", typ, a)
		}
	}
	w.send(protocol.WorkComplete, args[0], "back")
	for {
		got := c0.expect(protocol.WorkComplete)
		if got[0] == h {
			break
		}
	}
}

// Two proxy instances with the same backends agree on handles: a job
// submitted through one is found through the other, by handle and by
// unique.
func TestTwoProxiesShareHandles(t *testing.T) {
	s0, s1 := startTCPJobServer(t, "H:a", ""), startTCPJobServer(t, "H:b", "")
	p1 := startProxy(t, Options{Backends: tcpBackends(s0, s1)}, 2)
	p2 := startProxy(t, Options{Backends: tcpBackends(s0, s1)}, 2)
	a, b := dial(t, listen(t, p1, "local")), dial(t, listen(t, p2, "local"))
	for i := range 6 {
		u := fmt.Sprintf("shared-%d", i)
		a.send(protocol.SubmitJobBg, "two", u, "x")
		h := a.expect(protocol.JobCreated)[0]
		b.send(protocol.GetStatus, h)
		if got := b.expect(protocol.StatusRes); strings.Join(got, " ") != h+" 1 0 0 0" {
			t.Fatalf("status through the second proxy: %q", got)
		}
		b.send(protocol.GetStatusUnique, u)
		if got := b.expect(protocol.StatusResUnique); got[1] != "1" {
			t.Fatalf("status by unique through the second proxy: %q", got)
		}
		// Coalescing across instances: the same unique through the
		// other proxy is the same job.
		b.send(protocol.SubmitJobBg, "two", u, "x")
		if h2 := b.expect(protocol.JobCreated)[0]; h2 != h {
			t.Fatalf("second proxy gave %q for the job the first called %q", h2, h)
		}
	}
}

// A worker that finishes a job whose backend died meanwhile hears nothing
// about it (its clients were already told the job failed), and its next
// grab is answered normally: libgearman treats anything else in reply to a
// grab as a protocol error.
func TestResultForDeadBackendDropped(t *testing.T) {
	s0, s1 := startTCPJobServer(t, "H:a", ""), startTCPJobServer(t, "H:b", "")
	srv := startProxy(t, Options{Backends: tcpBackends(s0, s1), HealthInterval: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}, 2)
	addr := listen(t, srv, "local")
	w := dial(t, addr)
	w.send(protocol.CanDo, "d")
	c := dial(t, addr)
	var u string
	for i := 0; ; i++ {
		u = fmt.Sprintf("u%d", i)
		if srv.router().Pick(router.Key([]byte("d"), []byte(u), nil), srv.router().All()) == 0 {
			break
		}
	}
	c.send(protocol.SubmitJob, "d", u, "x")
	h := c.expect(protocol.JobCreated)[0]
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign)
	s0.js.Close()
	c.expect(protocol.WorkFail)
	w.send(protocol.WorkComplete, h, "too late")
	w.send(protocol.GrabJob)
	w.expect(protocol.NoJob)
}
