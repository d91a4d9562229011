package jobserver

import (
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/jobserver/store"
	"github.com/gearproxy/gearproxy/protocol"
)

// JOB_CREATED of a background job leaves only after Store.Add returned,
// and replies behind it on the same connection wait too.
func TestDurableSubmitWaitsForStore(t *testing.T) {
	fs := newFakeStore()
	fs.gate = make(chan struct{})
	_, addr := testServer(t, Options{Store: fs})
	c, other := dial(t, addr), dial(t, addr)
	c.send(protocol.SubmitJobBg, "f", "u", "data")
	c.send(protocol.SubmitJob, "f", "", "fg") // in memory, but after the bg reply
	c.send(protocol.EchoReq, "after")
	a := dial(t, addr)
	waitFor(t, func() bool { return strings.Contains(a.admin("show jobs", true), "H:test:2\t") })
	// Another connection is not held up while the store works.
	other.send(protocol.SubmitJob, "f", "", "x")
	other.expect(protocol.JobCreated, "H:test:3")
	if got := a.admin("show jobs", true); !strings.HasPrefix(got, "H:test:1\t0\t0\t0\n") {
		t.Fatalf("show jobs while storing: %q", got)
	}
	fs.gate <- struct{}{}
	c.expect(protocol.JobCreated, "H:test:1")
	c.expect(protocol.JobCreated, "H:test:2")
	c.expect(protocol.EchoRes, "after")
	if got := a.admin("show jobs", true); !strings.HasPrefix(got, "H:test:1\t0\t0\t1\n") {
		t.Fatalf("show jobs after storing: %q", got)
	}
	j := fs.snapshot()[1]
	if j.Function != "f" || j.Unique != "u" || string(j.Data) != "data" || j.Priority != protocol.Normal {
		t.Fatalf("stored %+v", j)
	}
}

// Two connections submit the same unique while the first Add is in
// flight: one job, one Add, the same handle for both, both after the Add.
func TestConcurrentSameUniqueWhileStoring(t *testing.T) {
	fs := newFakeStore()
	fs.gate = make(chan struct{})
	_, addr := testServer(t, Options{Store: fs})
	c1, c2, w := dial(t, addr), dial(t, addr), dial(t, addr)
	a := dial(t, addr)
	c1.send(protocol.SubmitJobBg, "f", "same", "1")
	waitFor(t, func() bool { return strings.Contains(a.admin("show jobs", true), "H:test:1\t") })
	c2.send(protocol.SubmitJob, "f", "same", "2") // foreground attach
	w.canDo("f")
	w.send(protocol.GrabJob)
	w.expect(protocol.NoJob) // not runnable before it is durable
	fs.gate <- struct{}{}
	c1.expect(protocol.JobCreated, "H:test:1")
	c2.expect(protocol.JobCreated, "H:test:1")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign, "H:test:1", "f", "1")
	w.send(protocol.WorkComplete, "H:test:1", "r")
	c2.expect(protocol.WorkComplete, "H:test:1", "r")
	w.sync()
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if fs.adds != 1 || len(fs.jobs) != 0 || len(fs.removes) != 1 {
		t.Fatalf("adds %d, jobs %d, removes %v", fs.adds, len(fs.jobs), fs.removes)
	}
}

func TestStoreAddFailureAnswersError(t *testing.T) {
	fs := newFakeStore()
	fs.addErr = errors.New("disk full")
	_, addr := testServer(t, Options{Store: fs})
	c := dial(t, addr)
	c.send(protocol.SubmitJobBg, "f", "u", "1")
	c.expect(protocol.Error, "QUEUE_ERROR")
	c.send(protocol.SubmitJob, "f", "u", "fg") // the failed job is gone
	c.expect(protocol.JobCreated, "H:test:2")
}

func TestStoreRemoveAndRetries(t *testing.T) {
	fs := newFakeStore()
	_, addr := testServer(t, Options{Store: fs, JobRetries: 3})
	a, c := dial(t, addr), dial(t, addr)
	for i, typ := range []protocol.Type{protocol.SubmitJobBg, protocol.SubmitJobHighBg, protocol.SubmitJobLowBg,
		protocol.SubmitJobEpoch, protocol.SubmitJobSched, protocol.SubmitReduceJobBackground, protocol.SubmitJob} {
		switch typ {
		case protocol.SubmitJobEpoch:
			c.send(typ, "f", "e", "1", "epoch")
		case protocol.SubmitJobSched:
			c.send(typ, "f", "s", "*", "*", "*", "*", "*", "sched")
		case protocol.SubmitReduceJobBackground:
			c.send(typ, "f", "r", "red", "agg", "reduce")
		default:
			c.send(typ, "f", "", "plain")
		}
		c.expect(protocol.JobCreated, "H:test:"+strconv.Itoa(i+1))
	}
	stored := fs.snapshot()
	if len(stored) != 6 {
		t.Fatalf("stored %d jobs, want the 6 background ones", len(stored))
	}
	if stored[2].Priority != protocol.High || stored[3].Priority != protocol.Low || stored[4].When != 1 ||
		stored[5].Sched != "* * * * *" || stored[5].When == 0 || stored[6].Reducer != "red" {
		t.Fatalf("stored %+v", stored)
	}
	// Requeue records retries; complete, fail and cancel remove.
	w := dial(t, addr)
	w.canDo("f")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign, "H:test:2") // high first
	w.nc.Close()
	waitFor(t, func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return fs.retries[2] == 1
	})
	w = dial(t, addr)
	w.canDo("f")
	for _, end := range []protocol.Type{protocol.WorkComplete, protocol.WorkFail, protocol.WorkException} {
		w.send(protocol.GrabJob)
		r := w.expect(protocol.JobAssign)
		if end == protocol.WorkFail {
			w.send(end, r.args[0])
		} else {
			w.send(end, r.args[0], "")
		}
	}
	w.sync()
	a.admin("cancel job H:test:6", false)
	stored = fs.snapshot()
	for _, id := range []uint64{2, 1, 4, 6} {
		if _, ok := stored[id]; ok {
			t.Errorf("job %d still stored", id)
		}
	}
	if _, ok := stored[5]; !ok {
		t.Errorf("the SCHED job (not due yet) left the store")
	}
}

// A restart restores priority, FIFO order, coalescing, due times, reducers,
// retries, and continues the handle numbering.
func TestLoadRestoresJobs(t *testing.T) {
	fs := newFakeStore()
	future := time.Now().Add(time.Hour).Unix()
	jobs := []store.Job{
		{ID: 10, Function: "f", Unique: "low1", Data: []byte("l1"), Priority: protocol.Low},
		{ID: 11, Function: "f", Unique: "n1", Data: []byte("n1"), Priority: protocol.Normal, Retries: 2},
		{ID: 12, Function: "f", Unique: "h1", Data: []byte("h1"), Priority: protocol.High},
		{ID: 13, Function: "f", Unique: "n2", Data: []byte("n2"), Priority: protocol.Normal, Reducer: "red"},
		{ID: 14, Function: "f", Unique: "later", Data: []byte("e"), Priority: protocol.Normal, When: future},
		{ID: 15, Function: "f", Unique: "h2", Data: []byte("h2"), Priority: protocol.High},
	}
	for i := range jobs {
		fs.jobs[jobs[i].ID] = jobs[i]
	}
	_, addr := testServer(t, Options{Store: fs})
	a, c, w := dial(t, addr), dial(t, addr), dial(t, addr)
	if got := a.admin("prioritystatus", true); got != "f\t2\t3\t1\t0\n.\n" {
		t.Fatalf("prioritystatus: %q", got)
	}
	if got := a.admin("show jobs", true); !strings.Contains(got, "H:test:11\t2\t0\t1\n") {
		t.Fatalf("show jobs: %q", got)
	}
	c.send(protocol.SubmitJobBg, "f", "n1", "dup") // coalesces with the stored job
	c.expect(protocol.JobCreated, "H:test:11")
	c.send(protocol.SubmitJobBg, "f", "new", "x") // numbering continues
	c.expect(protocol.JobCreated, "H:test:16")
	w.canDo("f")
	for _, want := range []string{"h1", "h2", "n1", "n2", "new", "low1"} {
		w.send(protocol.GrabJobAll)
		r := w.read()
		if r.args[2] != want {
			t.Fatalf("grabbed %v, want unique %q", r, want)
		}
		if want == "n2" && (r.typ != protocol.JobAssignAll || r.args[3] != "red") {
			t.Fatalf("reduce job came back as %v", r)
		}
		w.send(protocol.WorkComplete, r.args[0], "")
	}
	w.send(protocol.GrabJob)
	w.expect(protocol.NoJob) // the epoch job waits for its time
}

func TestLoadErrorRefusesToStart(t *testing.T) {
	fs := newFakeStore()
	fs.jobs[1] = store.Job{ID: 1, Function: "f", Unique: strings.Repeat("u", 64)}
	if _, err := New(Options{Store: fs}); err == nil {
		t.Fatal("New accepted a store it could not load")
	}
}

// Many connections submitting durable jobs at once: every Add runs
// concurrently with the others (the store can share one commit).
func TestDurableSubmitsAreConcurrent(t *testing.T) {
	fs := newFakeStore()
	fs.gate = make(chan struct{})
	_, addr := testServer(t, Options{Store: fs})
	const n = 8
	var wg sync.WaitGroup
	peers := make([]*peer, n)
	for i := range peers {
		peers[i] = dial(t, addr)
		peers[i].send(protocol.SubmitJobBg, "f", "", "x")
	}
	// All n Adds are waiting on the gate at the same time.
	waitFor(t, func() bool {
		fs.mu.Lock()
		defer fs.mu.Unlock()
		return fs.waiting == n
	})
	for i := 0; i < n; i++ {
		fs.gate <- struct{}{}
	}
	for _, p := range peers {
		wg.Add(1)
		go func(p *peer) {
			defer wg.Done()
			p.expect(protocol.JobCreated)
		}(p)
	}
	wg.Wait()
}

// A background job dropped at the retry limit leaves the store.
func TestRetryLimitDropRemovesFromStore(t *testing.T) {
	fs := newFakeStore()
	_, addr := testServer(t, Options{Store: fs, JobRetries: 1})
	c, w := dial(t, addr), dial(t, addr)
	c.send(protocol.SubmitJobBg, "f", "u", "x")
	c.expect(protocol.JobCreated, "H:test:1")
	w.canDo("f")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign, "H:test:1")
	w.nc.Close()
	waitFor(t, func() bool { return len(fs.snapshot()) == 0 })
	a := dial(t, addr)
	if got := a.admin("status", true); got != "f\t0\t0\t0\n.\n" {
		t.Fatalf("status: %q", got)
	}
}

// With the real bbolt store: jobs acknowledged before a Close are all
// there after a restart, in order, with their uniques.
func TestRestartWithBoltStore(t *testing.T) {
	dir := t.TempDir()
	open := func() store.Store {
		st, err := store.Open(dir, store.Options{Sync: store.SyncAlways})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	s1, addr := testServer(t, Options{Store: open()})
	c := dial(t, addr)
	for i := 0; i < 50; i++ {
		typ := protocol.SubmitJobBg
		if i%10 == 0 {
			typ = protocol.SubmitJobHighBg
		}
		c.send(typ, "f", "u"+strconv.Itoa(i), strconv.Itoa(i))
	}
	for i := 0; i < 50; i++ {
		c.expect(protocol.JobCreated, "H:test:"+strconv.Itoa(i+1))
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}

	_, addr = testServer(t, Options{Store: open()})
	c, w := dial(t, addr), dial(t, addr)
	c.send(protocol.SubmitJobBg, "f", "u7", "dup")
	c.expect(protocol.JobCreated, "H:test:8")
	c.send(protocol.SubmitJobBg, "f", "new", "x")
	c.expect(protocol.JobCreated, "H:test:51")
	w.canDo("f")
	var order []string
	for i := 0; i < 51; i++ {
		w.send(protocol.GrabJobUniq)
		r := w.expect(protocol.JobAssignUniq)
		order = append(order, r.args[3])
		w.send(protocol.WorkComplete, r.args[0], "")
	}
	want := []string{"0", "10", "20", "30", "40"}
	for i := 1; i < 50; i++ {
		if i%10 != 0 {
			want = append(want, strconv.Itoa(i))
		}
	}
	want = append(want, "x")
	if strings.Join(order, ",") != strings.Join(want, ",") {
		t.Fatalf("order after restart:\n got %v\nwant %v", order, want)
	}
}

// More durable submits in flight than a connection may have: the reader
// pauses, replies still come in request order, nothing deadlocks.
func TestManyDurableSubmitsInFlight(t *testing.T) {
	fs := newFakeStore()
	fs.gate = make(chan struct{})
	_, addr := testServer(t, Options{Store: fs})
	c := dial(t, addr)
	const n = maxPersistInFlight + 100
	var b []byte
	for i := 0; i < n; i++ {
		b = protocol.AppendPacket(b, protocol.Req, protocol.SubmitJobBg, []byte("f"), nil, []byte(strconv.Itoa(i)))
	}
	go c.nc.Write(b) // not c.write: Fatal belongs to the test goroutine
	go func() {
		for i := 0; i < n; i++ {
			fs.gate <- struct{}{}
		}
	}()
	for i := 0; i < n; i++ {
		c.expect(protocol.JobCreated, "H:test:"+strconv.Itoa(i+1))
	}
}
