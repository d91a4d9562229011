package proxy

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/gearproxy/gearproxy/backend"
	"github.com/gearproxy/gearproxy/jobserver"
	"github.com/gearproxy/gearproxy/protocol"
	"github.com/gearproxy/gearproxy/router"
)

// libgearman pairs JOB_CREATED with submits by order alone: 50 pipelined
// submits spread over 3 backends must be answered in submit order.
func TestPipelinedSubmitsKeepOrder(t *testing.T) {
	srv, _, _ := startBundled(t, 3, nil)
	addr := listen(t, srv, "local")
	c := dial(t, addr)
	const n = 50
	for i := range n {
		typ := protocol.SubmitJobBg
		if i%3 == 0 {
			typ = protocol.SubmitJob
		}
		c.w.WritePacket(protocol.Req, typ, []byte("order"), []byte(fmt.Sprintf("u%d", i)), []byte("x"))
	}
	c.w.Flush()
	seen := map[int]int{}
	for i := range n {
		h := c.expect(protocol.JobCreated)[0]
		b, _, ok := srv.codec().Decode("local", []byte(h))
		if !ok {
			t.Fatalf("reply %d: handle %q does not decode", i, h)
		}
		want := srv.router().Pick(router.Key([]byte("order"), []byte(fmt.Sprintf("u%d", i)), nil), srv.router().All())
		if b != want {
			t.Fatalf("reply %d is from backend %d, submit %d went to %d: replies out of order", i, b, i, want)
		}
		seen[b]++
	}
	if len(seen) != 3 {
		t.Fatalf("50 uniques used only backends %v", seen)
	}
}

// Two clients submit the same unique: the worker runs the job once and
// both clients get its result under the same handle.
func TestCoalescing(t *testing.T) {
	srv, _, _ := startBundled(t, 3, nil)
	addr := listen(t, srv, "local")
	a, b := dial(t, addr), dial(t, addr)
	a.send(protocol.SubmitJob, "co", "same", "data-a")
	ha := a.expect(protocol.JobCreated)[0]
	b.send(protocol.SubmitJob, "co", "same", "data-b")
	hb := b.expect(protocol.JobCreated)[0]
	if ha != hb {
		t.Fatalf("coalesced handles differ: %q %q", ha, hb)
	}
	w := dial(t, addr)
	w.send(protocol.CanDo, "co")
	w.send(protocol.GrabJob)
	job := w.expect(protocol.JobAssign)
	if job[0] != ha || job[2] != "data-a" {
		t.Fatalf("assigned %q, want %q with the first submit's data", job, ha)
	}
	w.send(protocol.WorkData, job[0], "partial")
	w.send(protocol.WorkComplete, job[0], "done")
	for _, c := range []*peer{a, b} {
		if got := c.expect(protocol.WorkData); got[0] != ha || got[1] != "partial" {
			t.Fatalf("WORK_DATA %q", got)
		}
		if got := c.expect(protocol.WorkComplete); got[0] != ha || got[1] != "done" {
			t.Fatalf("WORK_COMPLETE %q", got)
		}
	}
	w.send(protocol.GrabJob)
	w.expect(protocol.NoJob)
}

// WORK_EXCEPTION reaches sessions that asked for exceptions; the others
// get a clean WORK_FAIL (no stray NUL after the handle).
func TestExceptionsPerSession(t *testing.T) {
	srv, _, _ := startBundled(t, 2, nil)
	addr := listen(t, srv, "local")
	with, without := dial(t, addr), dial(t, addr)
	with.send(protocol.OptionReq, "exceptions")
	if got := with.expect(protocol.OptionRes); got[0] != "exceptions" {
		t.Fatalf("OPTION_RES %q", got)
	}
	without.send(protocol.OptionReq, "bogus")
	if got := without.expect(protocol.Error); got[0] != "UNKNOWN_OPTION" {
		t.Fatalf("ERROR %q", got)
	}
	with.send(protocol.SubmitJob, "ex", "u1", "d")
	h := with.expect(protocol.JobCreated)[0]
	without.send(protocol.SubmitJob, "ex", "u1", "d")
	without.expect(protocol.JobCreated)
	w := dial(t, addr)
	w.send(protocol.CanDo, "ex")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign)
	w.send(protocol.WorkException, h, "boom")
	if got := with.expect(protocol.WorkException); got[0] != h || got[1] != "boom" {
		t.Fatalf("WORK_EXCEPTION %q", got)
	}
	if got := without.expect(protocol.WorkFail); len(got) != 1 || got[0] != h {
		t.Fatalf("WORK_FAIL %q, want exactly the handle", got)
	}
}

func TestEchoAndStatus(t *testing.T) {
	srv, _, _ := startBundled(t, 3, nil)
	addr := listen(t, srv, "local")
	c := dial(t, addr)
	c.send(protocol.EchoReq, "ping\x00with nul")
	if got := c.expect(protocol.EchoRes); got[0] != "ping\x00with nul" {
		t.Fatalf("ECHO_RES %q", got)
	}
	c.send(protocol.SubmitJobBg, "st", "unique-1", "d")
	h := c.expect(protocol.JobCreated)[0]
	c.send(protocol.GetStatus, h)
	if got := c.expect(protocol.StatusRes); strings.Join(got, " ") != h+" 1 0 0 0" {
		t.Fatalf("STATUS_RES %q", got)
	}
	c.send(protocol.GetStatusUnique, "unique-1")
	if got := c.expect(protocol.StatusResUnique); strings.Join(got, " ") != "unique-1 1 0 0 0 0" {
		t.Fatalf("STATUS_RES_UNIQUE %q", got)
	}
	c.send(protocol.GetStatusUnique, "nope")
	if got := c.expect(protocol.StatusResUnique); strings.Join(got, " ") != "nope 0 0 0 0 0" {
		t.Fatalf("STATUS_RES_UNIQUE %q", got)
	}
	// A handle of another user, a raw backend handle and garbage are all
	// unknown.
	other := srv.codec().Encode(nil, "mallory", 0, []byte("H:b0:1"))
	for _, f := range []string{string(other), "H:b0:1", "P:zzz", h + "x"} {
		c.send(protocol.GetStatus, f)
		if got := c.expect(protocol.StatusRes); strings.Join(got, " ") != f+" 0 0 0 0" {
			t.Fatalf("STATUS_RES for forged %q: %q", f, got)
		}
	}
}

// One worker drains jobs that landed on every backend.
func TestWorkerDrainsAllBackends(t *testing.T) {
	srv, _, _ := startBundled(t, 3, nil)
	addr := listen(t, srv, "local")
	c := dial(t, addr)
	const n = 60
	for i := range n {
		c.w.WritePacket(protocol.Req, protocol.SubmitJobBg, []byte("drain"), []byte(fmt.Sprintf("u%d", i)), []byte("x"))
	}
	c.w.Flush()
	for range n {
		c.expect(protocol.JobCreated)
	}
	w := dial(t, addr)
	w.send(protocol.CanDo, "drain")
	perBackend := map[int]int{}
	for done := 0; done < n; {
		w.send(protocol.GrabJob)
		typ, args := w.recv()
		switch typ {
		case protocol.JobAssign:
			b, _, _ := srv.codec().Decode("local", []byte(args[0]))
			perBackend[b]++
			w.send(protocol.WorkComplete, args[0], "")
			done++
		case protocol.NoJob:
			t.Fatalf("NO_JOB after %d of %d jobs", done, n)
		}
	}
	if len(perBackend) != 3 {
		t.Fatalf("jobs came from %v", perBackend)
	}
	w.send(protocol.GrabJob)
	w.expect(protocol.NoJob)
}

// A sleeping worker is woken once, by whichever backend gets a job first,
// and NOOPs from the others are merged into that one.
func TestPreSleepNoopMerged(t *testing.T) {
	srv, _, _ := startBundled(t, 3, nil)
	addr := listen(t, srv, "local")
	w := dial(t, addr)
	w.send(protocol.CanDo, "sleepy")
	w.send(protocol.PreSleep)
	c := dial(t, addr)
	var wg sync.WaitGroup
	for i := range 10 {
		c.send(protocol.SubmitJobBg, "sleepy", fmt.Sprintf("u%d", i), "x")
		c.expect(protocol.JobCreated)
	}
	wg.Wait()
	w.expect(protocol.Noop)
	for range 10 {
		w.send(protocol.GrabJob)
		args := w.expect(protocol.JobAssign)
		w.send(protocol.WorkComplete, args[0], "")
	}
	w.send(protocol.GrabJob)
	w.expect(protocol.NoJob)
}

// A worker that hangs up right after its WORK_COMPLETE (the gearman CLI
// with -c N does) must not lose the result on the way to the backend.
func TestWorkCompleteThenHangUp(t *testing.T) {
	srv, _, _ := startBundled(t, 2, nil)
	addr := listen(t, srv, "local")
	c := dial(t, addr)
	for i := range 5 {
		w := dial(t, addr)
		w.send(protocol.CanDo, "bye")
		c.send(protocol.SubmitJob, "bye", fmt.Sprintf("u%d", i), "x")
		h := c.expect(protocol.JobCreated)[0]
		w.send(protocol.GrabJob)
		w.expect(protocol.JobAssign)
		w.send(protocol.WorkComplete, h, "last words")
		w.conn.Close()
		if got := c.expect(protocol.WorkComplete); got[1] != "last words" {
			t.Fatalf("WORK_COMPLETE %q", got)
		}
	}
}

// One gearmand hands out the highest priority, then the oldest job; the
// pool does the same across backends for jobs submitted through it.
func TestGrabOrderAcrossBackends(t *testing.T) {
	srv, _, _ := startBundled(t, 3, nil)
	addr := listen(t, srv, "local")
	c := dial(t, addr)
	type sub struct {
		typ  protocol.Type
		data string
	}
	subs := []sub{
		{protocol.SubmitJobLowBg, "low1"}, {protocol.SubmitJobBg, "normal1"}, {protocol.SubmitJobHighBg, "high1"},
		{protocol.SubmitJobLowBg, "low2"}, {protocol.SubmitJobBg, "normal2"}, {protocol.SubmitJobHighBg, "high2"},
		{protocol.SubmitJobBg, "normal3"}, {protocol.SubmitJobBg, "normal4"},
	}
	backends := map[int]bool{}
	for i, sb := range subs {
		c.send(sb.typ, "order", fmt.Sprintf("uniq-%d", i), sb.data)
		b, _, _ := srv.codec().Decode("local", []byte(c.expect(protocol.JobCreated)[0]))
		backends[b] = true
	}
	if len(backends) < 2 {
		t.Fatalf("the jobs used only backends %v", backends)
	}
	w := dial(t, addr)
	w.send(protocol.CanDo, "order")
	var got []string
	for range subs {
		w.send(protocol.GrabJob)
		args := w.expect(protocol.JobAssign)
		got = append(got, args[2])
		w.send(protocol.WorkComplete, args[0], "")
	}
	want := "high1 high2 normal1 normal2 normal3 normal4 low1 low2"
	if strings.Join(got, " ") != want {
		t.Fatalf("assigned %v, want %s", got, want)
	}
}

// A backend whose handles are too long to embed still works through the
// proxy: its handles are mapped in memory, and counted.
func TestLongBackendHandles(t *testing.T) {
	// The longest prefix the bundled server takes: handles reach 45
	// bytes from the tenth job on, one more than fits next to the
	// proxy's 19-byte header.
	js, err := jobserver.New(jobserver.Options{HandlePrefix: "H:" + strings.Repeat("x", 40)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { js.Close() })
	srv := startProxy(t, Options{Backends: []Backend{{Name: "long", Dial: backend.DirectDialer(func(replies net.Conn) (io.WriteCloser, error) { return js.ServeDirect(replies) })}}}, 1)
	addr := listen(t, srv, "local")
	c := dial(t, addr)
	for i := range 9 {
		c.send(protocol.SubmitJobBg, "other", fmt.Sprint(i), "x")
		c.expect(protocol.JobCreated)
	}
	if srv.HandleFallbacks() != 0 {
		t.Fatalf("fallbacks %d for handles that fit", srv.HandleFallbacks())
	}
	c.send(protocol.SubmitJob, "lf", "u", "x")
	h := c.expect(protocol.JobCreated)[0]
	if len(h) > 63 {
		t.Fatalf("client handle %q is %d bytes", h, len(h))
	}
	c.send(protocol.GetStatus, h)
	if got := c.expect(protocol.StatusRes); got[1] != "1" {
		t.Fatalf("STATUS_RES %q", got)
	}
	w := dial(t, addr)
	w.send(protocol.CanDo, "lf")
	w.send(protocol.GrabJob)
	if got := w.expect(protocol.JobAssign); got[0] != h {
		t.Fatalf("JOB_ASSIGN %q, want handle %q", got, h)
	}
	w.send(protocol.WorkComplete, h, "ok")
	if got := c.expect(protocol.WorkComplete); got[0] != h || got[1] != "ok" {
		t.Fatalf("WORK_COMPLETE %q", got)
	}
	if srv.HandleFallbacks() != 1 {
		t.Fatalf("fallbacks %d, want 1", srv.HandleFallbacks())
	}
}
