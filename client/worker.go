package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"runtime/debug"
	"strconv"
	"sync"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// JobHandler runs one job. Returning data completes the job (WORK_COMPLETE);
// returning a *JobException sends its data as WORK_EXCEPTION; any other
// error fails the job (WORK_FAIL). ctx ends when the worker stops or when
// the function's timeout passes.
type JobHandler func(ctx context.Context, job *WorkerJob) ([]byte, error)

// WorkerJob is a job assigned to this worker.
type WorkerJob struct {
	Handle   string
	Function string
	Unique   string
	Data     []byte

	c *workerConn

	mu   sync.Mutex
	done bool
}

// errJobDone is returned by a WorkerJob's Send methods after the handler
// has returned: the server no longer accepts packets for the job from us.
var errJobDone = errors.New("job already finished")

// SendData sends WORK_DATA: partial results for the client.
func (j *WorkerJob) SendData(data []byte) error {
	return j.send(protocol.WorkData, []byte(j.Handle), data)
}

// SendWarning sends WORK_WARNING.
func (j *WorkerJob) SendWarning(data []byte) error {
	return j.send(protocol.WorkWarning, []byte(j.Handle), data)
}

// SendStatus sends WORK_STATUS: progress as numerator/denominator, which
// GET_STATUS also reports.
func (j *WorkerJob) SendStatus(numerator, denominator uint64) error {
	return j.send(protocol.WorkStatus, []byte(j.Handle),
		strconv.AppendUint(nil, numerator, 10), strconv.AppendUint(nil, denominator, 10))
}

func (j *WorkerJob) send(t protocol.Type, args ...[]byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.done {
		return errJobDone
	}
	return j.c.send(t, args...)
}

// finish sends the job's last packet and stops further sends.
func (j *WorkerJob) finish(t protocol.Type, args ...[]byte) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.done = true
	return j.c.send(t, args...)
}

type registration struct {
	timeout time.Duration
	handler JobHandler
}

// Worker grabs jobs for its registered functions and runs them, over
// Config.Concurrency connections, reconnecting with backoff when one
// breaks.
type Worker struct {
	cfg     Config
	servers *servers

	mu      sync.Mutex
	funcs   map[string]registration
	running bool
}

// NewWorker returns a Worker; register functions, then Run it.
func NewWorker(cfg Config) (*Worker, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Worker{cfg: cfg, servers: newServers(cfg.Addr), funcs: make(map[string]registration)}, nil
}

// Register adds a function before Run. A positive timeout is sent with
// CAN_DO_TIMEOUT (in milliseconds; gearmand raises anything under a second
// to one), after which the server gives the job to another worker; the
// handler's context ends at the same time, and a result sent later is
// refused by the server (logged, not fatal).
func (w *Worker) Register(function string, timeout time.Duration, h JobHandler) error {
	if function == "" || bytes.IndexByte([]byte(function), 0) >= 0 {
		return fmt.Errorf("register %q: bad function name", function)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running {
		return errors.New("register: worker already running")
	}
	w.funcs[function] = registration{timeout: timeout, handler: h}
	return nil
}

// Run works until ctx ends (returning nil) or authentication is refused
// (returning the *AuthError: retrying would not help). Other connection
// failures are logged and retried with backoff.
func (w *Worker) Run(ctx context.Context) error {
	w.mu.Lock()
	if w.running {
		w.mu.Unlock()
		return errors.New("worker already running")
	}
	if len(w.funcs) == 0 {
		w.mu.Unlock()
		return errors.New("worker has no functions")
	}
	w.running = true
	funcs := make(map[string]registration, len(w.funcs))
	for k, v := range w.funcs {
		funcs[k] = v
	}
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.running = false
		w.mu.Unlock()
	}()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, w.cfg.Concurrency)
	for i := 0; i < w.cfg.Concurrency; i++ {
		go func() { errs <- w.serve(ctx, funcs) }()
	}
	var first error
	for i := 0; i < w.cfg.Concurrency; i++ {
		if err := <-errs; err != nil && first == nil {
			first = err
			cancel()
		}
	}
	return first
}

// serve keeps one connection working, reconnecting with backoff.
func (w *Worker) serve(ctx context.Context, funcs map[string]registration) error {
	bo := backoff{min: w.cfg.MinBackoff, max: w.cfg.MaxBackoff}
	for ctx.Err() == nil {
		nc, r, wr, err := dial(ctx, w.cfg, w.servers)
		if err == nil {
			bo.reset()
			c := &workerConn{nc: nc, r: r, w: wr}
			err = c.work(ctx, w.cfg, funcs)
		}
		if ctx.Err() != nil {
			return nil
		}
		if isAuthError(err) {
			return err
		}
		d := bo.next()
		w.cfg.Logger.Warn("gearman worker connection failed", "addr", w.cfg.Addr, "err", err, "retry_in", d)
		if sleep(ctx, d) != nil {
			return nil
		}
	}
	return nil
}

// workerConn is one worker connection. Only the job handler's sends run
// concurrently with the grab loop, hence the lock around the writer.
type workerConn struct {
	nc net.Conn
	r  *protocol.Reader

	mu sync.Mutex
	w  *protocol.Writer
}

func (c *workerConn) send(t protocol.Type, args ...[]byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.w.WritePacket(protocol.Req, t, args...); err != nil {
		return err
	}
	return c.w.Flush()
}

// work registers the functions and runs the grab loop: GRAB_JOB_UNIQ; on
// NO_JOB, PRE_SLEEP and wait for the NOOP that says a job arrived.
func (c *workerConn) work(ctx context.Context, cfg Config, funcs map[string]registration) error {
	defer c.nc.Close()
	stop := context.AfterFunc(ctx, func() { c.nc.SetDeadline(aLongTimeAgo()) })
	defer stop()
	for fn, reg := range funcs {
		var err error
		if reg.timeout > 0 {
			ms := reg.timeout.Milliseconds()
			err = c.send(protocol.CanDoTimeout, []byte(fn), strconv.AppendInt(nil, max(ms, 1), 10))
		} else {
			err = c.send(protocol.CanDo, []byte(fn))
		}
		if err != nil {
			return err
		}
	}
	var p protocol.Packet
	for {
		if err := c.send(protocol.GrabJobUniq); err != nil {
			return err
		}
	reply:
		for {
			if err := c.r.Read(&p); err != nil {
				return err
			}
			switch p.Type {
			case protocol.Noop:
				// A wake-up that crossed our grab: the grab's own
				// reply follows.
			case protocol.NoJob:
				if err := c.send(protocol.PreSleep); err != nil {
					return err
				}
				if err := c.sleep(&p); err != nil {
					return err
				}
				break reply
			case protocol.JobAssignUniq:
				job := &WorkerJob{
					Handle:   string(p.Arg(0)),
					Function: string(p.Arg(1)),
					Unique:   string(p.Arg(2)),
					Data:     bytes.Clone(p.Data()),
					c:        c,
				}
				if err := c.run(ctx, cfg, funcs[job.Function], job); err != nil {
					return err
				}
				break reply
			case protocol.Error:
				if string(p.Arg(0)) == "JOB_NOT_FOUND" {
					// The answer to our last job's result: its
					// CAN_DO_TIMEOUT ran out first and the server gave
					// the job to another worker. The grab's reply
					// follows.
					cfg.Logger.Warn("job result refused: the job timed out on the server", "addr", cfg.Addr, "text", string(p.Arg(1)))
					continue
				}
				return &ServerError{Code: string(p.Arg(0)), Text: string(p.Arg(1))}
			default:
				return fmt.Errorf("unexpected %s while grabbing a job", p.Type)
			}
		}
	}
}

// sleep reads until the server's NOOP.
func (c *workerConn) sleep(p *protocol.Packet) error {
	for {
		if err := c.r.Read(p); err != nil {
			return err
		}
		switch p.Type {
		case protocol.Noop:
			return nil
		case protocol.Error:
			return &ServerError{Code: string(p.Arg(0)), Text: string(p.Arg(1))}
		}
	}
}

// run calls the handler and reports its outcome. A panicking handler fails
// the job instead of the process.
func (c *workerConn) run(ctx context.Context, cfg Config, reg registration, job *WorkerJob) error {
	if reg.handler == nil {
		return job.finish(protocol.WorkFail, []byte(job.Handle))
	}
	jctx := ctx
	if reg.timeout > 0 {
		var cancel context.CancelFunc
		jctx, cancel = context.WithTimeout(ctx, reg.timeout)
		defer cancel()
	}
	data, err := func() (data []byte, err error) {
		defer func() {
			if r := recover(); r != nil {
				cfg.Logger.Error("job handler panicked", "function", job.Function, "handle", job.Handle,
					"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				data, err = nil, fmt.Errorf("handler panic: %v", r)
			}
		}()
		return reg.handler(jctx, job)
	}()
	var ex *JobException
	switch {
	case err == nil:
		return job.finish(protocol.WorkComplete, []byte(job.Handle), data)
	case errors.As(err, &ex):
		return job.finish(protocol.WorkException, []byte(job.Handle), ex.Data)
	default:
		return job.finish(protocol.WorkFail, []byte(job.Handle))
	}
}
