package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

const (
	// maxErrors is how many error messages a Result keeps; the rest are
	// counted.
	maxErrors = 10
	// settle is how long connections stay open after the last expected
	// result, to catch duplicates a faulty server sends late.
	settle = 100 * time.Millisecond
	// watchEvery is how often the watchdog looks for progress.
	watchEvery = 50 * time.Millisecond
)

// conn is one connection with its packet reader and batching writer. Only
// the goroutine that owns it reads and writes.
type conn struct {
	nc  net.Conn
	r   *protocol.Reader
	w   *protocol.Writer
	pkt protocol.Packet
}

// run is the state one Run shares between its clients and workers.
type run struct {
	cfg    Config
	nonce  uint32
	fn     []byte
	submit protocol.Type

	// stopping is set before the run closes connections on purpose, so
	// the read errors that follow are not reported.
	stopping atomic.Bool
	aborted  atomic.Bool

	mu       sync.Mutex
	conns    []net.Conn
	progress []*atomic.Int64
	errs     []string
	moreErrs int

	// Counters workers share.
	workerMismatched atomic.Int64
	foreign          atomic.Int64

	// bg: runs[lane][seq] counts how often each job ran, acked[lane][seq]
	// says its submit got JOB_CREATED. Both are sized before the drain and
	// acked is read-only during it.
	runs      [][]uint32
	acked     [][]bool
	expected  int64
	distinct  atomic.Int64
	drained   chan struct{}
	drainOnce sync.Once
}

// Run drives one workload and checks every result. The error is for a run
// that could not start (bad config, a server that does not answer); what
// went wrong during the run is in the Result, and Result.OK is false.
func Run(ctx context.Context, cfg Config) (*Result, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	r := &run{
		cfg:     cfg,
		nonce:   rand.Uint32(),
		fn:      []byte(cfg.Function),
		submit:  submitType(cfg.Mode, cfg.Priority),
		drained: make(chan struct{}),
	}
	defer r.closeAll()
	stopWatch := make(chan struct{})
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		r.watch(ctx, stopWatch)
	}()
	defer func() {
		close(stopWatch)
		<-watchDone
	}()

	res := &Result{
		Mode: cfg.Mode, Servers: cfg.Servers, Clients: cfg.Clients, Workers: cfg.Workers,
		Pipeline: cfg.Pipeline, Payload: cfg.Payload, Unique: cfg.Unique,
		Priority: cfg.Priority, Function: cfg.Function,
	}
	switch cfg.Mode {
	case Background:
		err = r.background(ctx, res)
	default:
		err = r.foreground(ctx, res)
	}
	if err != nil {
		return nil, err
	}
	res.Mismatched += r.workerMismatched.Load()
	res.Foreign = r.foreign.Load()
	r.mu.Lock()
	res.Errors = append(res.Errors, r.errs...)
	if r.moreErrs > 0 {
		res.Errors = append(res.Errors, fmt.Sprintf("and %d more errors", r.moreErrs))
	}
	r.mu.Unlock()
	return res, nil
}

// foreground runs fg and echo: workers first (registered, so no job waits
// for a CAN_DO), then all clients released at once.
func (r *run) foreground(ctx context.Context, res *Result) error {
	var workers []*worker
	if r.cfg.Mode == Foreground {
		var err error
		if workers, err = r.dialWorkers(ctx, true); err != nil {
			return err
		}
	}
	clients, err := r.dialClients(ctx)
	if err != nil {
		return err
	}
	stopWorkers := r.startWorkers(workers)
	elapsed := r.runClients(clients)
	r.stopClients(clients)
	stopWorkers()

	var h histogram
	for _, c := range clients {
		res.Jobs += c.done
		res.Lost += c.lost
		res.Duplicated += c.dup
		res.Mismatched += c.mismatched
		res.Failed += c.failed
		h.merge(&c.hist)
	}
	res.Elapsed = Seconds(elapsed)
	res.JobsPerSec = rate(res.Jobs, elapsed)
	res.Latency = Latency{P50: Micros(h.quantile(0.50)), P99: Micros(h.quantile(0.99)), Max: Micros(h.max)}
	if r.cfg.Mode == Echo {
		res.Workers = 0
	}
	return nil
}

// background runs bg: the submit phase with no worker connected, then the
// drain, each timed on its own.
func (r *run) background(ctx context.Context, res *Result) error {
	clients, err := r.dialClients(ctx)
	if err != nil {
		return err
	}
	submitted := r.runClients(clients)
	r.stopClients(clients)

	var h histogram
	var acked int64
	for _, c := range clients {
		acked += c.done
		res.Duplicated += c.dup
		res.Mismatched += c.mismatched
		res.Failed += c.failed
		res.Lost += c.lost // submits that never got an answer
		h.merge(&c.hist)
	}
	res.Latency = Latency{P50: Micros(h.quantile(0.50)), P99: Micros(h.quantile(0.99)), Max: Micros(h.max)}
	res.Submit = &Phase{Jobs: acked, Elapsed: Seconds(submitted), JobsPerSec: rate(acked, submitted)}
	if r.cfg.Workers < 0 || r.aborted.Load() {
		res.Jobs, res.Elapsed, res.JobsPerSec = acked, Seconds(submitted), rate(acked, submitted)
		return nil
	}

	r.tallyAcked(clients)
	workers, err := r.dialWorkers(ctx, false)
	if err != nil {
		return err
	}
	t0 := time.Now()
	if r.expected == 0 {
		r.drainOnce.Do(func() { close(r.drained) })
	}
	exited := make(chan struct{})
	stopWorkers := r.startWorkersNotify(workers, exited)
	select {
	case <-r.drained:
	case <-exited:
	}
	drained := time.Since(t0)
	time.Sleep(settle)
	stopWorkers()

	ran := r.distinct.Load()
	var dup int64
	for _, lane := range r.runs {
		for _, n := range lane {
			if n > 1 {
				dup += int64(n - 1)
			}
		}
	}
	res.Drain = &Phase{Jobs: ran, Elapsed: Seconds(drained), JobsPerSec: rate(ran, drained)}
	res.Jobs = ran
	res.Elapsed = Seconds(submitted + drained)
	res.JobsPerSec = rate(ran, submitted+drained)
	res.Lost += r.expected - ran
	res.Duplicated += dup
	return nil
}

// tallyAcked builds the table of jobs the drain must see, from what each
// client had acknowledged. In duplicated mode every client submitted the
// same keys, which the server coalesced into one job each: one lane.
func (r *run) tallyAcked(clients []*client) {
	if r.cfg.Unique == UniqueDuplicated {
		longest := 0
		for _, c := range clients {
			longest = max(longest, len(c.acked))
		}
		merged := make([]bool, longest)
		for _, c := range clients {
			for i, ok := range c.acked {
				merged[i] = merged[i] || ok
			}
		}
		r.acked = [][]bool{merged}
	} else {
		r.acked = make([][]bool, len(clients))
		for i, c := range clients {
			r.acked[i] = c.acked
		}
	}
	r.runs = make([][]uint32, len(r.acked))
	for i, lane := range r.acked {
		r.runs[i] = make([]uint32, len(lane))
		for _, ok := range lane {
			if ok {
				r.expected++
			}
		}
	}
}

// ran records that a worker executed job key of this run (bg).
func (r *run) ran(key uint64) {
	lane, seq := key>>laneShift, key&seqMask
	if lane >= uint64(len(r.runs)) || seq >= uint64(len(r.runs[lane])) {
		r.workerMismatched.Add(1)
		return
	}
	if atomic.AddUint32(&r.runs[lane][seq], 1) != 1 {
		return // a duplicate, counted from runs at the end
	}
	if !r.acked[lane][seq] {
		// The server ran a job it had refused or never answered.
		r.workerMismatched.Add(1)
		return
	}
	if r.distinct.Add(1) == r.expected {
		r.drainOnce.Do(func() { close(r.drained) })
	}
}

// dial opens one connection and registers it so that an abort closes it.
func (r *run) dial(ctx context.Context, addr string) (*conn, error) {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.Timeout)
	defer cancel()
	nc, err := r.cfg.Dial(ctx, addr)
	if err != nil {
		return nil, fmt.Errorf("bench: dial %s: %w", addr, err)
	}
	r.mu.Lock()
	r.conns = append(r.conns, nc)
	r.mu.Unlock()
	return &conn{
		nc: nc,
		r:  protocol.NewReader(nc, protocol.ReaderOptions{Expect: protocol.Res}),
		w:  protocol.NewWriter(nc),
	}, nil
}

// dialAll dials n connections in parallel; addr(i) names the server of the
// i-th.
func (r *run) dialAll(ctx context.Context, n int, addr func(int) string, setup func(int, *conn) error) ([]*conn, error) {
	conns := make([]*conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := r.dial(ctx, addr(i))
			if err == nil && setup != nil {
				err = setup(i, c)
			}
			conns[i], errs[i] = c, err
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			// One reason is enough: the others are almost always the
			// same refused or timed-out dial.
			return nil, err
		}
	}
	return conns, nil
}

func (r *run) dialClients(ctx context.Context) ([]*client, error) {
	n := r.cfg.Clients
	conns, err := r.dialAll(ctx, n, func(i int) string { return r.cfg.Servers[i%len(r.cfg.Servers)] }, nil)
	if err != nil {
		return nil, err
	}
	clients := make([]*client, n)
	for i, c := range conns {
		budget := int64(-1)
		if r.cfg.Jobs > 0 {
			budget = int64(r.cfg.Jobs / n)
			if i < r.cfg.Jobs%n {
				budget++
			}
		}
		clients[i] = newClient(r, c, i, budget)
	}
	return clients, nil
}

// dialWorkers opens each worker's connection to every server. With
// register, each sends CAN_DO and waits for an echo, so it is known to the
// server before the first job is submitted.
func (r *run) dialWorkers(ctx context.Context, register bool) ([]*worker, error) {
	servers := r.cfg.Servers
	var setup func(int, *conn) error
	if register {
		setup = func(_ int, c *conn) error { return registerWorker(c, r.fn) }
	}
	n := max(r.cfg.Workers, 0) * len(servers)
	conns, err := r.dialAll(ctx, n, func(i int) string { return servers[i%len(servers)] }, setup)
	if err != nil {
		return nil, err
	}
	workers := make([]*worker, n)
	for i, c := range conns {
		workers[i] = &worker{r: r, c: c, id: i, registered: register}
		r.track(&workers[i].progress)
	}
	return workers, nil
}

// startWorkers starts every worker's loop and returns the function that
// stops them all.
func (r *run) startWorkers(workers []*worker) (stop func()) {
	return r.startWorkersNotify(workers, nil)
}

// startWorkersNotify is startWorkers that also closes exited (if not nil)
// once every worker has stopped on its own: a drain that can make no more
// progress.
func (r *run) startWorkersNotify(workers []*worker, exited chan struct{}) (stop func()) {
	var wg sync.WaitGroup
	for _, w := range workers {
		wg.Go(w.loop)
	}
	if exited != nil {
		go func() {
			wg.Wait()
			close(exited)
		}()
	}
	return func() {
		r.stopping.Store(true)
		for _, w := range workers {
			w.c.nc.Close()
		}
		wg.Wait()
		r.stopping.Store(false)
	}
}

// runClients releases every client at once and returns the time until the
// last one finished its last job. The clients keep reading until
// stopClients, so a late duplicate is still seen.
func (r *run) runClients(clients []*client) time.Duration {
	start := make(chan struct{})
	for _, c := range clients {
		go c.loop(start)
	}
	t0 := time.Now()
	close(start)
	for _, c := range clients {
		<-c.finished
	}
	return time.Since(t0)
}

// stopClients waits settle for stray late replies, then closes the clients'
// connections and waits for their loops to end.
func (r *run) stopClients(clients []*client) {
	time.Sleep(settle)
	r.stopping.Store(true)
	for _, c := range clients {
		c.c.nc.Close()
	}
	for _, c := range clients {
		<-c.exited
	}
	r.stopping.Store(false)
}

// track registers a progress counter with the watchdog.
func (r *run) track(p *atomic.Int64) {
	r.mu.Lock()
	r.progress = append(r.progress, p)
	r.mu.Unlock()
}

// watch aborts the run when ctx ends or when no counter moved for
// cfg.Timeout.
func (r *run) watch(ctx context.Context, stop <-chan struct{}) {
	t := time.NewTicker(watchEvery)
	defer t.Stop()
	last, since := int64(-1), time.Now()
	for {
		select {
		case <-stop:
			return
		case <-ctx.Done():
			r.abort("interrupted: " + context.Cause(ctx).Error())
			return
		case now := <-t.C:
			var sum int64
			r.mu.Lock()
			for _, p := range r.progress {
				sum += p.Load()
			}
			r.mu.Unlock()
			if sum != last {
				last, since = sum, now
				continue
			}
			if now.Sub(since) >= r.cfg.Timeout {
				r.abort(fmt.Sprintf("stalled: no job progressed for %s", r.cfg.Timeout))
				return
			}
		}
	}
}

// abort ends the run early: every connection closes and what is in flight
// counts as lost.
func (r *run) abort(reason string) {
	if r.aborted.Swap(true) {
		return
	}
	r.errorf("%s", reason)
	r.closeAll()
}

func (r *run) closeAll() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, c := range r.conns {
		c.Close()
	}
}

// errorf records an error for the Result, unless the run is shutting the
// connections itself.
func (r *run) errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.errs) < maxErrors {
		r.errs = append(r.errs, fmt.Sprintf(format, args...))
	} else {
		r.moreErrs++
	}
}

// connError records a read or write error unless the run closed the
// connection on purpose.
func (r *run) connError(who string, addr net.Addr, err error) {
	if r.stopping.Load() || r.aborted.Load() {
		return
	}
	r.errorf("%s (%s): %v", who, addr, err)
}
