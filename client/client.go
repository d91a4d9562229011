package client

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// Priority is a job's queue within its function.
type Priority uint8

const (
	Normal Priority = iota
	High
	Low
)

// Job is a job to submit.
type Job struct {
	Function string
	// Unique coalesces submissions with the same function and unique into
	// one job; empty never coalesces.
	Unique     string
	Data       []byte
	Priority   Priority
	Background bool
}

func (j Job) packetType() protocol.Type {
	switch {
	case j.Background && j.Priority == High:
		return protocol.SubmitJobHighBg
	case j.Background && j.Priority == Low:
		return protocol.SubmitJobLowBg
	case j.Background:
		return protocol.SubmitJobBg
	case j.Priority == High:
		return protocol.SubmitJobHigh
	case j.Priority == Low:
		return protocol.SubmitJobLow
	}
	return protocol.SubmitJob
}

// EventKind is what happened to a task.
type EventKind uint8

const (
	EventCreated EventKind = iota
	EventData
	EventWarning
	EventStatus
	EventComplete
	EventException
	EventFail
)

func (k EventKind) String() string {
	return [...]string{"created", "data", "warning", "status", "complete", "exception", "fail"}[k]
}

// Event is one thing that happened to a task, for Handlers.Events.
type Event struct {
	Kind EventKind
	Task *Task
	// Data is the payload of data, warning, complete and exception
	// events; the receiver owns it.
	Data []byte
	// Numerator and Denominator are a status event's progress.
	Numerator, Denominator uint64
	// Err is a fail event's cause: ErrJobFailed, a *ServerError or
	// ErrConnectionLost.
	Err error
}

// Handlers receive a task's events. Callbacks run on the connection's
// reader goroutine, in the order the server sent the packets: they must
// return quickly and must not wait for another reply on the same Client.
// Data passed to them is owned by the callee. Any field may be nil.
type Handlers struct {
	Created   func(t *Task)
	Data      func(t *Task, data []byte)
	Warning   func(t *Task, data []byte)
	Status    func(t *Task, numerator, denominator uint64)
	Complete  func(t *Task, data []byte)
	Exception func(t *Task, data []byte)
	Fail      func(t *Task, err error)
	// Events, if set, also receives every event. The reader blocks while
	// the channel is full, so size it for the tasks in flight.
	Events chan<- Event
}

// ErrJobFailed is a task's error after WORK_FAIL.
var ErrJobFailed = errors.New("job failed")

// JobException is a task's error after WORK_EXCEPTION, with the data the
// worker sent.
type JobException struct{ Data []byte }

func (e *JobException) Error() string { return "job exception: " + string(e.Data) }

// ServerError is an ERROR packet sent in reply to a request, for example
// PERMISSION_DENIED from gearproxy or QUEUE_ERROR from gearmand.
type ServerError struct {
	Code string
	Text string
}

func (e *ServerError) Error() string { return "server error " + e.Code + ": " + e.Text }

// Task is a submitted job as its submitter sees it.
type Task struct {
	Job Job

	h           *Handlers
	created     chan struct{}
	createdOnce sync.Once
	done        chan struct{}

	mu       sync.Mutex
	finished bool
	handle   string
	result   []byte
	err      error
	num, den uint64
}

// Handle is the job handle, "" until the server has created the job.
func (t *Task) Handle() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.handle
}

// Created is closed when the server has answered the submission (with a
// handle, or with an error, which Done then reports).
func (t *Task) Created() <-chan struct{} { return t.created }

// Done is closed when the task has ended: completed, failed, or, for a
// background job, created.
func (t *Task) Done() <-chan struct{} { return t.done }

// Result returns the task's data and error once Done is closed.
func (t *Task) Result() ([]byte, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.result, t.err
}

// Progress returns the last status the worker reported.
func (t *Task) Progress() (numerator, denominator uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.num, t.den
}

// Wait waits for the task to end and returns its result. Cancelling ctx
// stops the wait, not the job.
func (t *Task) Wait(ctx context.Context) ([]byte, error) {
	select {
	case <-t.done:
		return t.Result()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (t *Task) emit(ev Event) {
	ev.Task = t
	h := t.h
	if h == nil {
		return
	}
	switch ev.Kind {
	case EventCreated:
		if h.Created != nil {
			h.Created(t)
		}
	case EventData:
		if h.Data != nil {
			h.Data(t, ev.Data)
		}
	case EventWarning:
		if h.Warning != nil {
			h.Warning(t, ev.Data)
		}
	case EventStatus:
		if h.Status != nil {
			h.Status(t, ev.Numerator, ev.Denominator)
		}
	case EventComplete:
		if h.Complete != nil {
			h.Complete(t, ev.Data)
		}
	case EventException:
		if h.Exception != nil {
			h.Exception(t, ev.Data)
		}
	case EventFail:
		if h.Fail != nil {
			h.Fail(t, ev.Err)
		}
	}
	if h.Events != nil {
		h.Events <- ev
	}
}

func (t *Task) setCreated(handle string) {
	t.mu.Lock()
	t.handle = handle
	t.mu.Unlock()
	t.createdOnce.Do(func() { close(t.created) })
	t.emit(Event{Kind: EventCreated})
	if t.Job.Background {
		t.finish(nil, nil, Event{})
	}
}

// finish ends the task once; ev (if it has a kind other than created) is
// emitted first. The connection's reader and a failing connection may
// race to finish a task; the first wins.
func (t *Task) finish(data []byte, err error, ev Event) {
	t.mu.Lock()
	if t.finished {
		t.mu.Unlock()
		return
	}
	t.finished = true
	t.result, t.err = data, err
	t.mu.Unlock()
	t.createdOnce.Do(func() { close(t.created) })
	if ev.Kind != EventCreated {
		t.emit(ev)
	}
	close(t.done)
}

// JobStatus is the answer to GET_STATUS or GET_STATUS_UNIQUE.
type JobStatus struct {
	Known       bool
	Running     bool
	Numerator   uint64
	Denominator uint64
	// Waiting is the number of clients waiting for the job (by unique
	// only).
	Waiting uint64
}

// Client submits jobs and asks about them over one connection, opened on
// first use and reopened (with backoff) after it breaks. It is safe for
// concurrent use; any number of tasks may be in flight.
type Client struct {
	cfg     Config
	servers *servers

	dialMu sync.Mutex // one dial at a time
	mu     sync.Mutex
	cur    *clientConn
	closed bool
	retry  time.Time // no dial before this, after a failure
	bo     backoff
}

// New returns a Client that connects on first use.
func New(cfg Config) (*Client, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	return &Client{cfg: cfg, servers: newServers(cfg.Addr), bo: backoff{min: cfg.MinBackoff, max: cfg.MaxBackoff}}, nil
}

// Dial returns a Client connected (and authenticated) now.
func Dial(ctx context.Context, cfg Config) (*Client, error) {
	c, err := New(cfg)
	if err != nil {
		return nil, err
	}
	if _, err := c.conn(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

// Close closes the connection; tasks in flight fail with ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	cc := c.cur
	c.cur = nil
	c.mu.Unlock()
	if cc != nil {
		cc.fail(ErrClosed)
	}
	return nil
}

// conn returns the live connection, dialing if there is none. After a
// failed dial the next one waits out the backoff (or ctx).
func (c *Client) conn(ctx context.Context) (*clientConn, error) {
	if cc, err := c.live(); cc != nil || err != nil {
		return cc, err
	}
	c.dialMu.Lock()
	defer c.dialMu.Unlock()
	if cc, err := c.live(); cc != nil || err != nil {
		return cc, err
	}
	c.mu.Lock()
	wait := time.Until(c.retry)
	c.mu.Unlock()
	if err := sleep(ctx, wait); err != nil {
		return nil, err
	}
	cc, err := c.connect(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		d := c.bo.next()
		c.retry = time.Now().Add(d)
		c.cfg.Logger.Warn("gearman connection failed", "addr", c.cfg.Addr, "err", err, "retry_in", d)
		return nil, err
	}
	if c.closed {
		cc.fail(ErrClosed)
		return nil, ErrClosed
	}
	c.bo.reset()
	c.cur = cc
	return cc, nil
}

func (c *Client) live() (*clientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if c.cur != nil && c.cur.alive() {
		return c.cur, nil
	}
	return nil, nil
}

func (c *Client) connect(ctx context.Context) (*clientConn, error) {
	nc, r, w, err := dial(ctx, c.cfg, c.servers)
	if err != nil {
		return nil, err
	}
	cc := &clientConn{nc: nc, r: r, w: w, tasks: make(map[string][]*Task), done: make(chan struct{})}
	go cc.readLoop()
	// Ask for WORK_EXCEPTION; without it gearmand turns exceptions into a
	// malformed WORK_FAIL.
	p, err := cc.request(ctx, protocol.OptionReq, []byte("exceptions"))
	if err != nil {
		cc.fail(err)
		return nil, fmt.Errorf("option exceptions: %w", err)
	}
	if p.Type != protocol.OptionRes {
		cc.fail(ErrConnectionLost)
		return nil, fmt.Errorf("option exceptions: %s %q", p.Type, p.Args)
	}
	return cc, nil
}

// Submit sends a job and returns at once; the task's channels, handlers
// and Wait tell what happens to it. h may be nil.
func (c *Client) Submit(ctx context.Context, job Job, h *Handlers) (*Task, error) {
	if job.Function == "" {
		return nil, errors.New("submit: empty function name")
	}
	// Function and unique travel NUL-terminated: a NUL inside would shift
	// every following argument.
	if bytes.IndexByte([]byte(job.Function), 0) >= 0 || bytes.IndexByte([]byte(job.Unique), 0) >= 0 {
		return nil, errors.New("submit: NUL in function name or unique")
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cc, err := c.conn(ctx)
	if err != nil {
		return nil, err
	}
	t := &Task{Job: job, h: h, created: make(chan struct{}), done: make(chan struct{})}
	err = cc.send(&request{typ: job.packetType(), task: t}, []byte(job.Function), []byte(job.Unique), job.Data)
	if err != nil {
		return nil, err
	}
	return t, nil
}

// Do submits a foreground job and waits for its result.
func (c *Client) Do(ctx context.Context, job Job) ([]byte, error) {
	job.Background = false
	t, err := c.Submit(ctx, job, nil)
	if err != nil {
		return nil, err
	}
	return t.Wait(ctx)
}

// Status asks about a job by handle.
func (c *Client) Status(ctx context.Context, handle string) (JobStatus, error) {
	p, err := c.ask(ctx, protocol.GetStatus, []byte(handle))
	if err != nil {
		return JobStatus{}, err
	}
	if p.Type != protocol.StatusRes || len(p.Args) < 5 {
		return JobStatus{}, fmt.Errorf("status: unexpected %s", p.Type)
	}
	return parseStatus(p.Args[1:5], nil)
}

// StatusUnique asks about a job by unique ID (GET_STATUS_UNIQUE); it also
// reports how many clients wait for the job.
func (c *Client) StatusUnique(ctx context.Context, unique string) (JobStatus, error) {
	p, err := c.ask(ctx, protocol.GetStatusUnique, []byte(unique))
	if err != nil {
		return JobStatus{}, err
	}
	if p.Type != protocol.StatusResUnique || len(p.Args) < 6 {
		return JobStatus{}, fmt.Errorf("status: unexpected %s", p.Type)
	}
	return parseStatus(p.Args[1:5], p.Args[5])
}

func parseStatus(f [][]byte, waiting []byte) (JobStatus, error) {
	var s JobStatus
	s.Known = string(f[0]) == "1"
	s.Running = string(f[1]) == "1"
	var err1, err2, err3 error
	s.Numerator, err1 = strconv.ParseUint(string(f[2]), 10, 64)
	s.Denominator, err2 = strconv.ParseUint(string(f[3]), 10, 64)
	if waiting != nil {
		s.Waiting, err3 = strconv.ParseUint(string(waiting), 10, 64)
	}
	if err := errors.Join(err1, err2, err3); err != nil {
		return s, fmt.Errorf("status: %w", err)
	}
	return s, nil
}

// Echo sends data to the server and returns what it echoes.
func (c *Client) Echo(ctx context.Context, data []byte) ([]byte, error) {
	p, err := c.ask(ctx, protocol.EchoReq, data)
	if err != nil {
		return nil, err
	}
	if p.Type != protocol.EchoRes {
		return nil, fmt.Errorf("echo: unexpected %s", p.Type)
	}
	return p.Data(), nil
}

// ask sends a request that gets one in-order reply and waits for it; an
// ERROR reply becomes a *ServerError.
func (c *Client) ask(ctx context.Context, t protocol.Type, args ...[]byte) (protocol.Packet, error) {
	if err := ctx.Err(); err != nil {
		return protocol.Packet{}, err
	}
	cc, err := c.conn(ctx)
	if err != nil {
		return protocol.Packet{}, err
	}
	return cc.request(ctx, t, args...)
}

// request is a sent packet waiting for its in-order reply: gearmand answers
// each connection's requests strictly in order, which is the only way to
// pair an ERROR with what caused it.
type request struct {
	typ   protocol.Type
	task  *Task       // for a submission
	reply chan answer // for anything else; buffered
}

type answer struct {
	p   protocol.Packet
	err error
}

// clientConn is one connection: a reader goroutine dispatches replies to
// the oldest request and WORK_* packets to tasks by handle; senders write
// under mu so that the request queue has the order of the wire.
type clientConn struct {
	nc     net.Conn
	r      *protocol.Reader
	done   chan struct{}
	queued atomic.Int32 // senders waiting for mu

	mu      sync.Mutex
	w       *protocol.Writer
	pending []*request
	tasks   map[string][]*Task
	err     error
}

func (cc *clientConn) alive() bool {
	select {
	case <-cc.done:
		return false
	default:
		return true
	}
}

func (cc *clientConn) send(req *request, args ...[]byte) error {
	// Group commit: a sender that sees others queued behind it leaves the
	// flush to the last of them, so concurrent submits share syscalls.
	cc.queued.Add(1)
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.queued.Add(-1)
	if cc.err != nil {
		return cc.err
	}
	err := cc.w.WritePacket(protocol.Req, req.typ, args...)
	if err == nil && cc.queued.Load() == 0 {
		err = cc.w.Flush()
	}
	if err != nil {
		go cc.fail(fmt.Errorf("%w: %v", ErrConnectionLost, err))
		return err
	}
	cc.pending = append(cc.pending, req)
	return nil
}

func (cc *clientConn) request(ctx context.Context, t protocol.Type, args ...[]byte) (protocol.Packet, error) {
	req := &request{typ: t, reply: make(chan answer, 1)}
	if err := cc.send(req, args...); err != nil {
		return protocol.Packet{}, err
	}
	select {
	case a := <-req.reply:
		if a.err == nil && a.p.Type == protocol.Error {
			return a.p, &ServerError{Code: string(a.p.Arg(0)), Text: string(a.p.Arg(1))}
		}
		return a.p, a.err
	case <-ctx.Done():
		return protocol.Packet{}, ctx.Err()
	}
}

// fail closes the connection once and fails everything waiting on it.
func (cc *clientConn) fail(err error) {
	cc.mu.Lock()
	if cc.err != nil {
		cc.mu.Unlock()
		return
	}
	cc.err = err
	pending, tasks := cc.pending, cc.tasks
	cc.pending, cc.tasks = nil, nil
	close(cc.done)
	cc.mu.Unlock()
	cc.nc.Close()
	for _, req := range pending {
		if req.task != nil {
			req.task.finish(nil, err, Event{Kind: EventFail, Err: err})
		} else {
			req.reply <- answer{err: err}
		}
	}
	for _, ts := range tasks {
		for _, t := range ts {
			t.finish(nil, err, Event{Kind: EventFail, Err: err})
		}
	}
}

func (cc *clientConn) readLoop() {
	var p protocol.Packet
	for {
		if err := cc.r.Read(&p); err != nil {
			cc.fail(fmt.Errorf("%w: %v", ErrConnectionLost, err))
			return
		}
		if err := cc.dispatch(&p); err != nil {
			cc.fail(err)
			return
		}
	}
}

// replyFits says whether a reply type can answer a request type.
func replyFits(req, reply protocol.Type) bool {
	if reply == protocol.Error {
		return true
	}
	switch {
	case req.IsSubmit():
		return reply == protocol.JobCreated
	case req == protocol.GetStatus:
		return reply == protocol.StatusRes
	case req == protocol.GetStatusUnique:
		return reply == protocol.StatusResUnique
	case req == protocol.EchoReq:
		return reply == protocol.EchoRes
	case req == protocol.OptionReq:
		return reply == protocol.OptionRes
	}
	return false
}

func copyPacket(p *protocol.Packet) protocol.Packet {
	q := protocol.Packet{Magic: p.Magic, Type: p.Type, Args: make([][]byte, len(p.Args))}
	for i, a := range p.Args {
		q.Args[i] = bytes.Clone(a)
	}
	return q
}

func (cc *clientConn) dispatch(p *protocol.Packet) error {
	switch p.Type {
	case protocol.JobCreated, protocol.Error, protocol.StatusRes, protocol.StatusResUnique,
		protocol.EchoRes, protocol.OptionRes:
		cc.mu.Lock()
		if len(cc.pending) == 0 {
			cc.mu.Unlock()
			return fmt.Errorf("%w: unsolicited %s %q", ErrConnectionLost, p.Type, p.Args)
		}
		req := cc.pending[0]
		if !replyFits(req.typ, p.Type) {
			cc.mu.Unlock()
			return fmt.Errorf("%w: %s in reply to %s: connection out of step", ErrConnectionLost, p.Type, req.typ)
		}
		cc.pending[0] = nil
		cc.pending = cc.pending[1:]
		if req.task == nil {
			cc.mu.Unlock()
			req.reply <- answer{p: copyPacket(p)}
			return nil
		}
		t := req.task
		if p.Type == protocol.Error {
			cc.mu.Unlock()
			err := &ServerError{Code: string(p.Arg(0)), Text: string(p.Arg(1))}
			t.finish(nil, err, Event{Kind: EventFail, Err: err})
			return nil
		}
		handle := string(p.Arg(0))
		if !t.Job.Background {
			cc.tasks[handle] = append(cc.tasks[handle], t)
		}
		cc.mu.Unlock()
		t.setCreated(handle)
		return nil
	case protocol.WorkData, protocol.WorkWarning, protocol.WorkStatus, protocol.WorkComplete,
		protocol.WorkFail, protocol.WorkException:
		terminal := p.Type == protocol.WorkComplete || p.Type == protocol.WorkFail || p.Type == protocol.WorkException
		cc.mu.Lock()
		ts := cc.tasks[string(p.Arg(0))]
		if len(ts) == 0 {
			cc.mu.Unlock()
			return nil // a job we stopped caring about
		}
		// Two foreground submissions coalesced on this connection share a
		// handle; the oldest takes each packet, and a terminal one
		// retires it.
		t := ts[0]
		if terminal {
			if len(ts) == 1 {
				delete(cc.tasks, string(p.Arg(0)))
			} else {
				cc.tasks[string(p.Arg(0))] = ts[1:]
			}
		}
		cc.mu.Unlock()
		deliver(t, p)
		return nil
	case protocol.Noop:
		return nil
	}
	return fmt.Errorf("%w: unexpected %s", ErrConnectionLost, p.Type)
}

// deliver hands a WORK_* packet to its task.
func deliver(t *Task, p *protocol.Packet) {
	switch p.Type {
	case protocol.WorkData:
		t.emit(Event{Kind: EventData, Data: bytes.Clone(p.Data())})
	case protocol.WorkWarning:
		t.emit(Event{Kind: EventWarning, Data: bytes.Clone(p.Data())})
	case protocol.WorkStatus:
		num, _ := strconv.ParseUint(string(p.Arg(1)), 10, 64)
		den, _ := strconv.ParseUint(string(p.Arg(2)), 10, 64)
		t.mu.Lock()
		t.num, t.den = num, den
		t.mu.Unlock()
		t.emit(Event{Kind: EventStatus, Numerator: num, Denominator: den})
	case protocol.WorkComplete:
		data := bytes.Clone(p.Data())
		t.finish(data, nil, Event{Kind: EventComplete, Data: data})
	case protocol.WorkException:
		data := bytes.Clone(p.Data())
		err := &JobException{Data: data}
		t.finish(nil, err, Event{Kind: EventException, Data: data, Err: err})
	case protocol.WorkFail:
		t.finish(nil, ErrJobFailed, Event{Kind: EventFail, Err: ErrJobFailed})
	}
}
