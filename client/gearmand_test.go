package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/client"
)

// fn makes a function name no other test uses, since all share one
// gearmand.
func fn(t testing.TB, name string) string {
	return strings.ReplaceAll(t.Name(), "/", ".") + "." + name
}

func newClient(t testing.TB, cfg client.Config) *client.Client {
	t.Helper()
	c, err := client.Dial(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startWorker runs w until the test ends.
func startWorker(t testing.TB, w *client.Worker) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("worker: %v", err)
		}
	})
}

func newWorker(t testing.TB, cfg client.Config, fns map[string]client.JobHandler) *client.Worker {
	t.Helper()
	w, err := client.NewWorker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, h := range fns {
		if err := w.Register(name, 0, h); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

func timeout(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestRoundTrip: a job's data, warning, status and result reach the
// submitter's callbacks and event channel in order.
func TestRoundTrip(t *testing.T) {
	addr := gearmand(t)
	reverse := fn(t, "reverse")
	startWorker(t, newWorker(t, client.Config{Addr: addr}, map[string]client.JobHandler{
		reverse: func(ctx context.Context, j *client.WorkerJob) ([]byte, error) {
			if err := j.SendStatus(1, 3); err != nil {
				return nil, err
			}
			j.SendData([]byte("partial"))
			j.SendWarning([]byte("careful"))
			j.SendStatus(3, 3)
			b := []byte(j.Data)
			for i, k := 0, len(b)-1; i < k; i, k = i+1, k-1 {
				b[i], b[k] = b[k], b[i]
			}
			return b, nil
		},
	}))
	c := newClient(t, client.Config{Addr: addr})
	var mu sync.Mutex
	var log []string
	note := func(s string) { mu.Lock(); log = append(log, s); mu.Unlock() }
	events := make(chan client.Event, 16)
	task, err := c.Submit(timeout(t), client.Job{Function: reverse, Data: []byte("hello\x00world")}, &client.Handlers{
		Created:  func(t *client.Task) { note("created") },
		Data:     func(t *client.Task, d []byte) { note("data " + string(d)) },
		Warning:  func(t *client.Task, d []byte) { note("warning " + string(d)) },
		Status:   func(t *client.Task, n, d uint64) { note(fmt.Sprintf("status %d/%d", n, d)) },
		Complete: func(t *client.Task, d []byte) { note("complete " + string(d)) },
		Events:   events,
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := task.Wait(timeout(t))
	if err != nil || string(res) != "dlrow\x00olleh" {
		t.Fatalf("got %q, %v", res, err)
	}
	want := []string{"created", "status 1/3", "data partial", "warning careful", "status 3/3", "complete dlrow\x00olleh"}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(log, "|") != strings.Join(want, "|") {
		t.Fatalf("callbacks %q, want %q", log, want)
	}
	var kinds []string
	for len(events) > 0 {
		kinds = append(kinds, (<-events).Kind.String())
	}
	if strings.Join(kinds, " ") != "created status data warning status complete" {
		t.Fatalf("events %v", kinds)
	}
	if !strings.HasPrefix(task.Handle(), "H:") {
		t.Fatalf("handle %q", task.Handle())
	}
	if n, d := task.Progress(); n != 3 || d != 3 {
		t.Fatalf("progress %d/%d", n, d)
	}
}

func TestEcho(t *testing.T) {
	c := newClient(t, client.Config{Addr: gearmand(t)})
	for _, data := range [][]byte{[]byte("ping"), {}, bytes.Repeat([]byte{0, 1, 2}, 100000)} {
		got, err := c.Echo(timeout(t), data)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("echo of %d bytes: %d bytes, %v", len(data), len(got), err)
		}
	}
}

// TestBackgroundPrioritiesAndStatus: background jobs wait without a
// worker, their status is known by handle and by unique, and a worker
// then takes them high, normal, low.
func TestBackgroundPrioritiesAndStatus(t *testing.T) {
	addr := gearmand(t)
	f := fn(t, "queue")
	c := newClient(t, client.Config{Addr: addr})
	ctx := timeout(t)
	handles := map[string]string{}
	for _, j := range []struct {
		unique string
		prio   client.Priority
	}{{"low", client.Low}, {"normal", client.Normal}, {"high", client.High}} {
		task, err := c.Submit(ctx, client.Job{Function: f, Unique: j.unique, Data: []byte(j.unique), Priority: j.prio, Background: true}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := task.Wait(ctx); err != nil {
			t.Fatal(err)
		}
		handles[j.unique] = task.Handle()
	}
	st, err := c.Status(ctx, handles["normal"])
	if err != nil || !st.Known || st.Running {
		t.Fatalf("status %+v, %v", st, err)
	}
	su, err := c.StatusUnique(ctx, "high")
	if err != nil || !su.Known || su.Running {
		t.Fatalf("status by unique %+v, %v", su, err)
	}
	if st, err := c.Status(ctx, "H:nohost:999999"); err != nil || st.Known {
		t.Fatalf("unknown handle: %+v, %v", st, err)
	}

	var mu sync.Mutex
	var order []string
	all := make(chan struct{})
	startWorker(t, newWorker(t, client.Config{Addr: addr}, map[string]client.JobHandler{
		f: func(ctx context.Context, j *client.WorkerJob) ([]byte, error) {
			mu.Lock()
			defer mu.Unlock()
			order = append(order, j.Unique)
			if len(order) == 3 {
				close(all)
			}
			return nil, nil
		},
	}))
	select {
	case <-all:
	case <-ctx.Done():
		t.Fatal("jobs not run")
	}
	if got := strings.Join(order, " "); got != "high normal low" {
		t.Fatalf("order %s", got)
	}
}

func TestFailAndException(t *testing.T) {
	addr := gearmand(t)
	failing, throwing, panicking := fn(t, "fail"), fn(t, "exception"), fn(t, "panic")
	startWorker(t, newWorker(t, client.Config{Addr: addr}, map[string]client.JobHandler{
		failing: func(context.Context, *client.WorkerJob) ([]byte, error) { return nil, errors.New("no") },
		throwing: func(context.Context, *client.WorkerJob) ([]byte, error) {
			return nil, &client.JobException{Data: []byte("boom")}
		},
		panicking: func(context.Context, *client.WorkerJob) ([]byte, error) { panic("bug") },
	}))
	c := newClient(t, client.Config{Addr: addr})
	ctx := timeout(t)
	if _, err := c.Do(ctx, client.Job{Function: failing}); !errors.Is(err, client.ErrJobFailed) {
		t.Fatalf("fail: %v", err)
	}
	var ex *client.JobException
	if _, err := c.Do(ctx, client.Job{Function: throwing}); !errors.As(err, &ex) || string(ex.Data) != "boom" {
		t.Fatalf("exception: %v", err)
	}
	// WORK_EXCEPTION ends the job in gearmand: nothing is left running.
	task, err := c.Submit(ctx, client.Job{Function: throwing}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Wait(ctx); !errors.As(err, &ex) {
		t.Fatalf("exception: %v", err)
	}
	if st, err := c.Status(ctx, task.Handle()); err != nil || st.Known {
		t.Fatalf("job after exception: %+v, %v", st, err)
	}
	if _, err := c.Do(ctx, client.Job{Function: panicking}); !errors.Is(err, client.ErrJobFailed) {
		t.Fatalf("panic: %v", err)
	}
	// The worker is still serving after the panic.
	if _, err := c.Do(ctx, client.Job{Function: failing}); !errors.Is(err, client.ErrJobFailed) {
		t.Fatalf("after panic: %v", err)
	}
}

// TestManyInFlight pipelines many foreground jobs on one connection,
// coalesced ones included, over several worker connections.
func TestManyInFlight(t *testing.T) {
	addr := gearmand(t)
	double := fn(t, "double")
	startWorker(t, newWorker(t, client.Config{Addr: addr, Concurrency: 4}, map[string]client.JobHandler{
		double: func(_ context.Context, j *client.WorkerJob) ([]byte, error) { return append(j.Data, j.Data...), nil },
	}))
	c := newClient(t, client.Config{Addr: addr})
	ctx := timeout(t)
	const n = 500
	tasks := make([]*client.Task, n)
	for i := range tasks {
		var err error
		tasks[i], err = c.Submit(ctx, client.Job{Function: double, Data: []byte(fmt.Sprint(i))}, nil)
		if err != nil {
			t.Fatal(err)
		}
	}
	for i, task := range tasks {
		got, err := task.Wait(ctx)
		if want := fmt.Sprint(i) + fmt.Sprint(i); err != nil || string(got) != want {
			t.Fatalf("task %d: %q, %v", i, got, err)
		}
	}
}

func TestTimeoutRegistration(t *testing.T) {
	addr := gearmand(t)
	f := fn(t, "deadline")
	w, err := client.NewWorker(client.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Register(f, 5*time.Second, func(ctx context.Context, j *client.WorkerJob) ([]byte, error) {
		d, ok := ctx.Deadline()
		if !ok || time.Until(d) > 5*time.Second {
			return nil, errors.New("no deadline")
		}
		return []byte("ok"), nil
	}); err != nil {
		t.Fatal(err)
	}
	startWorker(t, w)
	c := newClient(t, client.Config{Addr: addr})
	if got, err := c.Do(timeout(t), client.Job{Function: f}); err != nil || string(got) != "ok" {
		t.Fatalf("got %q, %v", got, err)
	}
	if err := w.Register("late", 0, nil); err == nil {
		t.Fatal("Register while running accepted")
	}
}

func TestContextCancellation(t *testing.T) {
	addr := gearmand(t)
	c := newClient(t, client.Config{Addr: addr})
	task, err := c.Submit(timeout(t), client.Job{Function: fn(t, "nobody")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := task.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait: %v", err)
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if _, err := c.Echo(cancelled, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("echo with a cancelled context: %v", err)
	}
	if _, err := c.Submit(cancelled, client.Job{Function: "x"}, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("submit with a cancelled context: %v", err)
	}
	// The connection stays usable, and in step, after abandoned calls.
	if got, err := c.Echo(timeout(t), []byte("y")); err != nil || string(got) != "y" {
		t.Fatalf("echo after: %q, %v", got, err)
	}
	// Stopping a worker mid-job ends its handler's context.
	f := fn(t, "long")
	started := make(chan struct{})
	w := newWorker(t, client.Config{Addr: addr}, map[string]client.JobHandler{
		f: func(ctx context.Context, j *client.WorkerJob) ([]byte, error) {
			close(started)
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	wctx, wcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(wctx) }()
	if _, err := c.Submit(timeout(t), client.Job{Function: f, Background: true}, nil); err != nil {
		t.Fatal(err)
	}
	<-started
	wcancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

// trackingDialer records the connections it makes so a test can cut them.
type trackingDialer struct {
	mu    sync.Mutex
	conns []net.Conn
	dials int
	fail  bool
}

func (d *trackingDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dials++
	if d.fail {
		return nil, errors.New("dial refused by test")
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *trackingDialer) cut() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

func (d *trackingDialer) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.dials
}

func TestReconnect(t *testing.T) {
	addr := gearmand(t)
	f := fn(t, "echo")
	wd := &trackingDialer{}
	startWorker(t, newWorker(t, client.Config{Addr: addr, Dial: wd.dial, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond},
		map[string]client.JobHandler{f: func(_ context.Context, j *client.WorkerJob) ([]byte, error) { return j.Data, nil }}))
	cd := &trackingDialer{}
	c := newClient(t, client.Config{Addr: addr, Dial: cd.dial, MinBackoff: time.Millisecond, MaxBackoff: 10 * time.Millisecond})
	ctx := timeout(t)
	if got, err := c.Do(ctx, client.Job{Function: f, Data: []byte("1")}); err != nil || string(got) != "1" {
		t.Fatalf("first: %q, %v", got, err)
	}
	// A task in flight when the connection breaks fails; the next call
	// reconnects.
	task, err := c.Submit(ctx, client.Job{Function: fn(t, "nobody")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-task.Created()
	cd.cut()
	if _, err := task.Wait(ctx); !errors.Is(err, client.ErrConnectionLost) {
		t.Fatalf("in-flight task: %v", err)
	}
	// The worker loses its connection too and comes back.
	wd.cut()
	var got []byte
	for ctx.Err() == nil {
		got, err = c.Do(ctx, client.Job{Function: f, Data: []byte("2")})
		if err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if string(got) != "2" || cd.count() < 2 || wd.count() < 2 {
		t.Fatalf("after reconnect: %q, %v; client dials %d, worker dials %d", got, err, cd.count(), wd.count())
	}
	// While the server is unreachable calls fail fast with the dial error.
	cd.mu.Lock()
	cd.fail = true
	cd.mu.Unlock()
	cd.cut()
	time.Sleep(10 * time.Millisecond)
	if _, err := c.Echo(ctx, []byte("x")); err == nil {
		t.Fatal("echo through a refused dial succeeded")
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Echo(ctx, []byte("x")); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestNoSASLOnGearmand: gearmand answers the SASL extension with ERROR,
// which the client reports as ErrNoSASL.
func TestNoSASLOnGearmand(t *testing.T) {
	_, err := client.Dial(timeout(t), client.Config{Addr: gearmand(t),
		Credentials: &client.Credentials{Username: "u", Password: "p", Mechanism: client.MechSCRAM}})
	if !errors.Is(err, client.ErrNoSASL) {
		t.Fatalf("got %v", err)
	}
}

// BenchmarkForeground runs foreground jobs through gearmand from parallel
// goroutines sharing one Client, against a worker with 8 connections.
func BenchmarkForeground(b *testing.B) {
	addr := gearmand(b)
	f := fn(b, "echo")
	startWorker(b, newWorker(b, client.Config{Addr: addr, Concurrency: 8}, map[string]client.JobHandler{
		f: func(_ context.Context, j *client.WorkerJob) ([]byte, error) { return j.Data, nil },
	}))
	c := newClient(b, client.Config{Addr: addr})
	payload := []byte("0123456789abcdef")
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := c.Do(context.Background(), client.Job{Function: f, Data: payload}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// TestTimeoutRequeue: a job that outlives its CAN_DO_TIMEOUT goes to
// another worker; the slow worker's late result is refused by gearmand,
// which the worker survives without reconnecting.
func TestTimeoutRequeue(t *testing.T) {
	addr := gearmand(t)
	f := fn(t, "slow")
	dials := &trackingDialer{}
	w, err := client.NewWorker(client.Config{Addr: addr, Dial: dials.dial})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	runs := 0
	w.Register(f, time.Second, func(ctx context.Context, j *client.WorkerJob) ([]byte, error) {
		mu.Lock()
		runs++
		first := runs == 1
		mu.Unlock()
		if first {
			<-ctx.Done() // the handler's context ends with the timeout
			time.Sleep(200 * time.Millisecond)
			return []byte("late"), nil
		}
		return []byte("second try"), nil
	})
	startWorker(t, w)
	c := newClient(t, client.Config{Addr: addr})
	got, err := c.Do(timeout(t), client.Job{Function: f})
	if err != nil || string(got) != "second try" {
		t.Fatalf("got %q, %v", got, err)
	}
	if n := dials.count(); n != 1 {
		t.Fatalf("worker dialed %d times, want 1", n)
	}
}

// TestCoalescedOnOneConnection: two foreground submissions with the same
// unique on one connection share a job handle, and both get the result.
func TestCoalescedOnOneConnection(t *testing.T) {
	addr := gearmand(t)
	f := fn(t, "once")
	c := newClient(t, client.Config{Addr: addr})
	ctx := timeout(t)
	a, err := c.Submit(ctx, client.Job{Function: f, Unique: "same", Data: []byte("first")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.Submit(ctx, client.Job{Function: f, Unique: "same", Data: []byte("second")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	<-a.Created()
	<-b.Created()
	if a.Handle() != b.Handle() {
		t.Fatalf("handles %q and %q", a.Handle(), b.Handle())
	}
	var mu sync.Mutex
	runs := 0
	startWorker(t, newWorker(t, client.Config{Addr: addr}, map[string]client.JobHandler{
		f: func(_ context.Context, j *client.WorkerJob) ([]byte, error) {
			mu.Lock()
			runs++
			mu.Unlock()
			return j.Data, nil
		},
	}))
	for _, task := range []*client.Task{a, b} {
		if got, err := task.Wait(ctx); err != nil || string(got) != "first" {
			t.Fatalf("got %q, %v", got, err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if runs != 1 {
		t.Fatalf("ran %d times", runs)
	}
}

// TestFailover: with several addresses the client and the worker skip a
// dead one and stay on the one that works.
func TestFailover(t *testing.T) {
	addr := gearmand(t)
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // nothing listens there now
	f := fn(t, "f")
	list := deadAddr + ", " + addr
	startWorker(t, newWorker(t, client.Config{Addr: list}, map[string]client.JobHandler{
		f: func(_ context.Context, j *client.WorkerJob) ([]byte, error) { return j.Data, nil },
	}))
	dials := &trackingDialer{}
	c := newClient(t, client.Config{Addr: list, Dial: dials.dial})
	if got, err := c.Do(timeout(t), client.Job{Function: f, Data: []byte("ok")}); err != nil || string(got) != "ok" {
		t.Fatalf("got %q, %v", got, err)
	}
	if n := dials.count(); n != 2 {
		t.Fatalf("%d dials, want 2 (dead, then alive)", n)
	}
	dials.cut()
	// The first call may still meet the cut connection before the reader
	// has noticed; the next one reconnects.
	ctx := timeout(t)
	for {
		if _, err := c.Echo(ctx, []byte("x")); err == nil {
			break
		} else if ctx.Err() != nil {
			t.Fatal(err)
		}
	}
	if n := dials.count(); n != 3 {
		t.Fatalf("%d dials, want 3: the reconnection starts at the address that worked", n)
	}
	if _, err := client.New(client.Config{Addr: "no-port"}); err == nil {
		t.Fatal("address without a port accepted")
	}
}
