package jobserver

import (
	"strings"
	"testing"

	"github.com/gearproxy/gearproxy/protocol"
)

func TestForegroundJobLifecycle(t *testing.T) {
	_, addr := testServer(t, Options{})
	c, w := dial(t, addr), dial(t, addr)
	c.send(protocol.SubmitJob, "reverse", "u1", "hello")
	c.expect(protocol.JobCreated, "H:test:1")
	w.canDo("reverse")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign, "H:test:1", "reverse", "hello")
	w.send(protocol.WorkData, "H:test:1", "part")
	w.send(protocol.WorkWarning, "H:test:1", "warn")
	w.send(protocol.WorkStatus, "H:test:1", "1", "2")
	w.send(protocol.WorkComplete, "H:test:1", "olleh\x00with nul")
	c.expect(protocol.WorkData, "H:test:1", "part")
	c.expect(protocol.WorkWarning, "H:test:1", "warn")
	c.expect(protocol.WorkStatus, "H:test:1", "1", "2")
	c.expect(protocol.WorkComplete, "H:test:1", "olleh\x00with nul")
	// Finished: unknown to GET_STATUS, and the worker's late packet errs.
	c.send(protocol.GetStatus, "H:test:1")
	c.expect(protocol.StatusRes, "H:test:1", "0", "0", "0", "0")
	w.send(protocol.WorkComplete, "H:test:1", "again")
	w.expect(protocol.Error, "JOB_NOT_FOUND")
	w.send(protocol.GrabJob)
	w.expect(protocol.NoJob)
}

func TestPriorityFIFOAndAbilityOrder(t *testing.T) {
	_, addr := testServer(t, Options{})
	c, w := dial(t, addr), dial(t, addr)
	subs := []struct {
		typ  protocol.Type
		fn   string
		data string
	}{
		{protocol.SubmitJobLowBg, "a", "a-low1"},
		{protocol.SubmitJobBg, "a", "a-norm1"},
		{protocol.SubmitJobHighBg, "a", "a-high1"},
		{protocol.SubmitJobLowBg, "a", "a-low2"},
		{protocol.SubmitJobBg, "a", "a-norm2"},
		{protocol.SubmitJobHighBg, "a", "a-high2"},
		{protocol.SubmitJobBg, "b", "b-norm1"},
		{protocol.SubmitJobLowBg, "b", "b-low1"},
	}
	for _, s := range subs {
		c.send(s.typ, s.fn, "", s.data)
		c.read()
	}
	// Registered a then b: b is scanned first (newest registration).
	w.canDo("a", "b")
	want := []string{"b-norm1", "b-low1", "a-high1", "a-high2", "a-norm1", "a-norm2", "a-low1", "a-low2"}
	for _, d := range want {
		w.send(protocol.GrabJobUniq)
		r := w.expect(protocol.JobAssignUniq)
		if got := r.args[3]; got != d {
			t.Fatalf("grabbed %q, want %q", got, d)
		}
		w.send(protocol.WorkComplete, r.args[0], "")
	}
	w.send(protocol.GrabJob)
	w.expect(protocol.NoJob)
}

func TestCoalescing(t *testing.T) {
	_, addr := testServer(t, Options{})
	c1, c2, w := dial(t, addr), dial(t, addr), dial(t, addr)

	c1.send(protocol.SubmitJob, "f", "same", "first")
	c1.expect(protocol.JobCreated, "H:test:1")
	c2.send(protocol.SubmitJobBg, "f", "same", "second") // data of the first wins
	c2.expect(protocol.JobCreated, "H:test:1")
	c2.send(protocol.SubmitJob, "g", "same", "x") // other function: new job
	c2.expect(protocol.JobCreated, "H:test:2")
	c1.send(protocol.SubmitJob, "f", "", "x") // empty unique never coalesces
	c1.expect(protocol.JobCreated, "H:test:3")
	c1.send(protocol.SubmitJob, "f", "", "x")
	c1.expect(protocol.JobCreated, "H:test:4")
	c1.send(protocol.SubmitJob, "f", "-", "by data") // "-": coalesce on data
	c1.expect(protocol.JobCreated, "H:test:5")
	c2.send(protocol.SubmitJob, "f", "-", "by data")
	c2.expect(protocol.JobCreated, "H:test:5")
	c2.send(protocol.SubmitJob, "f", "-", "other data")
	c2.expect(protocol.JobCreated, "H:test:6")

	w.canDo("f")
	w.send(protocol.GrabJobUniq)
	r := w.expect(protocol.JobAssignUniq, "H:test:1", "f", "same", "first")
	// Late attach while running: c2 gets results from now on.
	c2.send(protocol.SubmitJob, "f", "same", "late")
	c2.expect(protocol.JobCreated, "H:test:1")
	c2.send(protocol.GetStatusUnique, "same") // f's or g's: either may answer
	if r := c2.expect(protocol.StatusResUnique, "same", "1"); r.args[2] == "1" && r.args[5] != "2" {
		t.Fatalf("status of the running job: %v", r)
	}
	w.send(protocol.WorkComplete, r.args[0], "done")
	c1.expect(protocol.WorkComplete, "H:test:1", "done")
	c2.expect(protocol.WorkComplete, "H:test:1", "done")
	// Ended: the unique is free again.
	c1.send(protocol.SubmitJob, "f", "same", "again")
	c1.expect(protocol.JobCreated, "H:test:7")
}

func TestGetStatus(t *testing.T) {
	_, addr := testServer(t, Options{})
	c, w := dial(t, addr), dial(t, addr)
	c.send(protocol.SubmitJobBg, "f", "u", "d")
	c.expect(protocol.JobCreated, "H:test:1")
	c.send(protocol.GetStatus, "H:test:1")
	c.expect(protocol.StatusRes, "H:test:1", "1", "0", "0", "0")
	c.send(protocol.GetStatusUnique, "u")
	c.expect(protocol.StatusResUnique, "u", "1", "0", "0", "0", "0")
	c.send(protocol.GetStatusUnique, "nope")
	c.expect(protocol.StatusResUnique, "nope", "0", "0", "0", "0", "0")
	c.send(protocol.GetStatus, "H:other:1")
	c.expect(protocol.StatusRes, "H:other:1", "0", "0", "0", "0")
	w.canDo("f")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign)
	w.send(protocol.WorkStatus, "H:test:1", "3", "10")
	w.sync()
	c.send(protocol.GetStatus, "H:test:1")
	c.expect(protocol.StatusRes, "H:test:1", "1", "1", "3", "10")
}

func TestExceptions(t *testing.T) {
	_, addr := testServer(t, Options{})
	plain, exc, w := dial(t, addr), dial(t, addr), dial(t, addr)
	exc.send(protocol.OptionReq, "Exceptions")
	exc.expect(protocol.OptionRes, "Exceptions")
	exc.send(protocol.OptionReq, "bogus")
	exc.expect(protocol.Error, "UNKNOWN_OPTION")
	plain.send(protocol.SubmitJob, "f", "u", "d")
	plain.expect(protocol.JobCreated, "H:test:1")
	exc.send(protocol.SubmitJob, "f", "u", "d")
	exc.expect(protocol.JobCreated, "H:test:1")
	w.canDo("f")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign)
	w.send(protocol.WorkException, "H:test:1", "boom")
	exc.expect(protocol.WorkException, "H:test:1", "boom")
	// A clean WORK_FAIL: exactly the handle, no trailing NUL.
	r := plain.read()
	if r.typ != protocol.WorkFail || len(r.args) != 1 || r.args[0] != "H:test:1" {
		t.Fatalf("got %v, want a clean WORK_FAIL", r)
	}
}

func TestWorkerDisconnectRequeuesAndRetryLimit(t *testing.T) {
	_, addr := testServer(t, Options{JobRetries: 2})
	c := dial(t, addr)
	c.send(protocol.SubmitJob, "f", "", "d")
	c.expect(protocol.JobCreated, "H:test:1")
	for try := 1; try <= 2; try++ {
		w := dial(t, addr)
		w.canDo("f")
		w.send(protocol.GrabJob)
		w.expect(protocol.JobAssign, "H:test:1")
		w.nc.Close()
		if try == 1 {
			a := dial(t, addr)
			waitFor(t, func() bool { return strings.Contains(a.admin("show jobs", true), "H:test:1\t1\t0\t0\n") })
		}
	}
	c.expect(protocol.WorkFail, "H:test:1")
	a := dial(t, addr)
	if got := a.admin("status", true); got != "f\t0\t0\t0\n.\n" {
		t.Fatalf("status %q", got)
	}
}

func TestCanDoTimeout(t *testing.T) {
	if testing.Short() {
		t.Skip("waits a second for the timeout")
	}
	_, addr := testServer(t, Options{})
	c, slow, fast := dial(t, addr), dial(t, addr), dial(t, addr)
	c.send(protocol.SubmitJob, "f", "", "d")
	c.expect(protocol.JobCreated, "H:test:1")
	slow.send(protocol.CanDoTimeout, "f", "1") // raised to a second
	slow.send(protocol.GrabJob)
	slow.expect(protocol.JobAssign, "H:test:1")
	fast.canDo("f")
	fast.send(protocol.PreSleep)
	fast.expect(protocol.Noop) // requeued at the timeout
	fast.send(protocol.GrabJob)
	fast.expect(protocol.JobAssign, "H:test:1")
	slow.send(protocol.WorkComplete, "H:test:1", "late")
	slow.expect(protocol.Error, "JOB_NOT_FOUND")
	fast.send(protocol.WorkComplete, "H:test:1", "ok")
	c.expect(protocol.WorkComplete, "H:test:1", "ok")
}

func TestPreSleepWakeups(t *testing.T) {
	_, addr := testServer(t, Options{})
	c, w1, w2, other := dial(t, addr), dial(t, addr), dial(t, addr), dial(t, addr)
	for _, w := range []*peer{w1, w2} {
		w.canDo("f")
		w.send(protocol.PreSleep)
		w.sync()
	}
	other.canDo("g")
	other.send(protocol.PreSleep)
	other.sync()
	c.send(protocol.SubmitJobBg, "f", "", "1")
	c.expect(protocol.JobCreated)
	c.send(protocol.SubmitJobBg, "f", "", "2") // no second NOOP
	c.expect(protocol.JobCreated)
	w1.expect(protocol.Noop)
	w2.expect(protocol.Noop)
	w1.send(protocol.GrabJob)
	w1.expect(protocol.JobAssign, "H:test:1")
	w2.send(protocol.GrabJob)
	w2.expect(protocol.JobAssign, "H:test:2")
	// The g worker got nothing: its next reply is the echo.
	other.sync()
	// PRE_SLEEP with a job waiting: NOOP at once.
	c.send(protocol.SubmitJobBg, "f", "", "3")
	c.expect(protocol.JobCreated)
	w1.send(protocol.PreSleep)
	w1.expect(protocol.Noop)
}

func TestGrabJobAllAndReduce(t *testing.T) {
	_, addr := testServer(t, Options{})
	c, w := dial(t, addr), dial(t, addr)
	c.send(protocol.SubmitReduceJob, "map", "u1", "reduce", "agg", "data1")
	c.expect(protocol.JobCreated, "H:test:1")
	c.send(protocol.SubmitReduceJobBackground, "map", "u2", "reduce", "agg", "data2")
	c.expect(protocol.JobCreated, "H:test:2")
	c.send(protocol.SubmitJob, "map", "u3", "data3")
	c.expect(protocol.JobCreated, "H:test:3")
	c.send(protocol.SubmitReduceJobBackground, "map", "u4", strings.Repeat("r", 65), "agg", "data4")
	c.expect(protocol.Error, "ARGUMENT_TOO_LARGE") // gearmand's limit on the reducer
	w.canDo("map")
	w.send(protocol.GrabJobAll)
	w.expect(protocol.JobAssignAll, "H:test:1", "map", "u1", "reduce", "data1")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign, "H:test:2", "map", "data2")
	w.send(protocol.GrabJobAll) // no reducer: JOB_ASSIGN_UNIQ
	w.expect(protocol.JobAssignUniq, "H:test:3", "map", "u3", "data3")
}

func TestMaxQueue(t *testing.T) {
	_, addr := testServer(t, Options{})
	a, c := dial(t, addr), dial(t, addr)
	if got := a.admin("maxqueue f 1", false); got != "OK\r\n" {
		t.Fatalf("maxqueue on an unknown function: %q", got)
	}
	c.send(protocol.SubmitJobBg, "f", "", "1")
	c.expect(protocol.JobCreated)
	c.send(protocol.SubmitJobBg, "f", "", "2") // no limit yet: f did not exist
	c.expect(protocol.JobCreated)
	if got := a.admin("maxqueue f 2", false); got != "OK\r\n" {
		t.Fatalf("maxqueue: %q", got)
	}
	c.send(protocol.SubmitJobBg, "f", "", "3")
	c.expect(protocol.Error, "QUEUE_ERROR", "Job queue is full")
	c.send(protocol.SubmitJobBg, "f", "", "x")
	c.expect(protocol.Error, "QUEUE_ERROR")
	a.admin("maxqueue f 0 0 5", false) // per priority: low allows 5
	c.send(protocol.SubmitJobLowBg, "f", "", "4")
	c.expect(protocol.JobCreated)
	c.send(protocol.SubmitJobHighBg, "f", "", "5")
	c.expect(protocol.JobCreated) // 0 = unlimited
}

func TestClientDisconnectAbandonsJob(t *testing.T) {
	_, addr := testServer(t, Options{})
	c, w, a := dial(t, addr), dial(t, addr), dial(t, addr)
	c.send(protocol.SubmitJob, "f", "", "abandoned")
	c.expect(protocol.JobCreated, "H:test:1")
	c.nc.Close()
	waitFor(t, func() bool { return strings.Contains(a.admin("show jobs", true), "H:test:1\t0\t1\t0\n") })
	c2 := dial(t, addr)
	c2.send(protocol.SubmitJob, "f", "", "kept")
	c2.expect(protocol.JobCreated, "H:test:2")
	w.canDo("f")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign, "H:test:2", "f", "kept")
	w.send(protocol.GrabJob)
	w.expect(protocol.NoJob)
}

func TestPipelinedReplyOrder(t *testing.T) {
	_, addr := testServer(t, Options{})
	c := dial(t, addr)
	var b []byte
	b = protocol.AppendPacket(b, protocol.Req, protocol.SubmitJob, []byte("f"), []byte(""), []byte("1"))
	b = protocol.AppendPacket(b, protocol.Req, protocol.GetStatus, []byte("H:test:1"))
	b = protocol.AppendPacket(b, protocol.Req, protocol.SubmitJobBg, []byte("f"), []byte(strings.Repeat("u", 64)), []byte("2"))
	b = append(b, "version\n"...)
	b = protocol.AppendPacket(b, protocol.Req, protocol.EchoReq, []byte("e"))
	b = protocol.AppendPacket(b, protocol.Req, protocol.SubmitJobHigh, []byte("f"), []byte(strings.Repeat("u", 63)), []byte("3"))
	b = protocol.AppendPacket(b, protocol.Req, protocol.OptionReq, []byte("nope"))
	b = protocol.AppendPacket(b, protocol.Req, protocol.SubmitJobLow, []byte("f"), []byte(""), []byte("4"))
	c.write(b)
	c.expect(protocol.JobCreated, "H:test:1")
	c.expect(protocol.StatusRes, "H:test:1", "1", "0")
	c.expect(protocol.Error, "ARGUMENT_TOO_LARGE") // 64 bytes: rejected, not truncated
	if l := c.line(); l != "OK 1.1.20+ds\n" {
		t.Fatalf("version: %q", l)
	}
	c.expect(protocol.EchoRes, "e")
	c.expect(protocol.JobCreated, "H:test:2")
	c.expect(protocol.Error, "UNKNOWN_OPTION")
	c.expect(protocol.JobCreated, "H:test:3")
}

func TestInvalidCommands(t *testing.T) {
	_, addr := testServer(t, Options{})
	c := dial(t, addr)
	for _, typ := range []protocol.Type{protocol.JobCreated, protocol.Noop, protocol.AllYours, 5, protocol.SASLMechsReq} {
		c.send(typ)
		c.expect(protocol.Error, "INVALID_COMMAND")
	}
	c.sync()
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if cond() {
			return
		}
		sleepBriefly()
	}
	t.Fatal("condition never became true")
}
