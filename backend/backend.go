package backend

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// Dialer opens one connection to a backend.
type Dialer func(ctx context.Context) (net.Conn, error)

// TCPDialer dials a gearmand (or a standalone `gearproxy server`) at addr.
func TCPDialer(addr string) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	}
}

// PipeDialer connects to an in-process job server: serve is its ServeConn,
// handed the server end of a buffered in-memory Pipe on every dial.
func PipeDialer(serve func(net.Conn)) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		client, server := Pipe()
		go serve(server)
		return client, nil
	}
}

// DirectDialer connects to an in-process job server that handles requests
// in the goroutine that sends them (jobserver's ServeDirect): open gets the
// server end of a buffered Pipe for everything the server sends, and
// returns where requests go. A link over it writes in its caller, so a
// request costs no goroutine hand-off on its way in, and its caller can
// take the replies at once (Link.Pump) instead of waiting for the link's
// reader to pass them on.
func DirectDialer(open func(replies net.Conn) (io.WriteCloser, error)) Dialer {
	return func(ctx context.Context) (net.Conn, error) {
		client, server := Pipe()
		mc := client.(*memConn)
		// The server writes whole packets: with whole writes, what the
		// client end holds is always whole packets too.
		mc.r.whole = true
		requests, err := open(server)
		if err != nil {
			client.Close()
			return nil, err
		}
		return &directConn{memConn: mc, requests: requests}, nil
	}
}

// directConn reads the replies of a DirectDialer connection from its pipe
// and hands writes to the job server.
type directConn struct {
	*memConn
	requests io.WriteCloser
}

func (c *directConn) Write(p []byte) (int, error) { return c.requests.Write(p) }

func (c *directConn) Close() error {
	c.memConn.Close()
	return c.requests.Close()
}

// Options configure a Backend. Zero durations take the defaults below.
type Options struct {
	// Name identifies the backend in logs, routing and handles.
	Name string
	// Dial opens a connection.
	Dial Dialer
	// Links is how many shared client connections all sessions multiplex
	// over; more links spread a busy backend's traffic over more of its
	// threads.
	Links int
	// HealthInterval is how often an ECHO_REQ checks the backend;
	// HealthTimeout is how long it may stay unanswered.
	HealthInterval time.Duration
	HealthTimeout  time.Duration
	// DialTimeout bounds one connection attempt.
	DialTimeout time.Duration
	// MaxBackoff caps the wait between reconnect attempts.
	MaxBackoff time.Duration
	// MaxData caps the size of a packet from the backend.
	MaxData int
	Logger  *slog.Logger

	// OnWork receives packets that arrive on a shared client link without
	// answering a request: WORK_* for the jobs submitted over it. It runs
	// on the link's reader goroutine; the packet is valid only during the
	// call.
	OnWork func(p *protocol.Packet)
	// OnState is called when the backend becomes usable (true) and when
	// it stops being usable (false), in that alternation, from the
	// backend's own goroutine. By the time it is called with false every
	// shared link is closed and every reply owed was answered with nil.
	OnState func(up bool)
}

func (o *Options) fill() error {
	if o.Name == "" {
		return errors.New("backend: no name")
	}
	if o.Dial == nil {
		return fmt.Errorf("backend %s: no dialer", o.Name)
	}
	if o.Links <= 0 {
		o.Links = 4
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = time.Second
	}
	if o.HealthTimeout <= 0 {
		o.HealthTimeout = time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 2 * time.Second
	}
	if o.MaxBackoff <= 0 {
		o.MaxBackoff = 5 * time.Second
	}
	if o.MaxData <= 0 {
		o.MaxData = protocol.DefaultMaxData
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.OnWork == nil {
		o.OnWork = func(*protocol.Packet) {}
	}
	if o.OnState == nil {
		o.OnState = func(bool) {}
	}
	return nil
}

// Backend is one configured job server: it keeps a few shared client links
// open while the server is reachable, checks its health, reconnects with
// backoff when it goes away, and opens per-worker links on demand.
type Backend struct {
	opts Options
	log  *slog.Logger
	// feeds lends links to an in-process server their packet readers.
	feeds *protocol.FeedReaders

	mu      sync.Mutex
	links   []*Link        // shared client links; nil while down
	workers map[*Link]bool // worker links of this generation
	lost    chan struct{}  // closed when a link of this generation dies
	lostErr error

	up     atomic.Bool
	next   atomic.Uint64
	rtt    atomic.Int64
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New validates opts and returns a stopped backend; Start connects it.
func New(opts Options) (*Backend, error) {
	if err := opts.fill(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Backend{opts: opts, log: opts.Logger.With("backend", opts.Name), ctx: ctx, cancel: cancel,
		feeds: protocol.NewFeedReaders(protocol.ReaderOptions{Expect: protocol.Res, MaxData: opts.MaxData})}, nil
}

// Name is the configured name.
func (b *Backend) Name() string { return b.opts.Name }

// Up reports whether the backend is connected and healthy.
func (b *Backend) Up() bool { return b.up.Load() }

// RTT is the round-trip time of the last health check.
func (b *Backend) RTT() time.Duration { return time.Duration(b.rtt.Load()) }

// Start begins connecting in the background.
func (b *Backend) Start() {
	b.wg.Add(1)
	go b.supervise()
}

// Close disconnects for good and waits for the backend's goroutines.
func (b *Backend) Close() {
	b.cancel()
	b.wg.Wait()
}

// Link returns one of the shared client links, in turn, or nil while down.
func (b *Backend) Link() *Link { return b.LinkFor(b.next.Add(1)) }

// LinkFor returns the shared client link for a session key, or nil while
// down. One session's requests to a backend all travel on one link, so
// the backend queues a client's pipelined submits in the order it sent
// them, as gearmand does for one connection; different sessions spread
// over the links.
func (b *Backend) LinkFor(key uint64) *Link {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.links) == 0 {
		return nil
	}
	return b.links[key%uint64(len(b.links))]
}

// OpenWorker opens a link for one worker session: every packet from the
// backend goes to handler; onClose runs once when the link ends (also when
// the backend goes down, which closes all worker links).
func (b *Backend) OpenWorker(handler func(*protocol.Packet), onClose func(error)) (*Link, error) {
	if !b.Up() {
		return nil, ErrDown
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.opts.DialTimeout)
	conn, err := b.opts.Dial(ctx)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("backend %s: worker link: %w", b.opts.Name, err)
	}
	var l *Link
	l = newLink(conn, b.opts.MaxData, b.feeds, handler, func(err error) {
		b.mu.Lock()
		delete(b.workers, l)
		b.mu.Unlock()
		onClose(err)
	})
	b.mu.Lock()
	if b.links == nil {
		b.mu.Unlock()
		l.Abort()
		return nil, ErrDown
	}
	b.workers[l] = true
	b.mu.Unlock()
	return l, nil
}

func (b *Backend) supervise() {
	defer b.wg.Done()
	const minBackoff = 50 * time.Millisecond
	backoff := minBackoff
	for b.ctx.Err() == nil {
		lost, err := b.connect()
		if err != nil {
			b.log.Warn("backend unreachable", "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-b.ctx.Done():
			}
			backoff = min(backoff*2, b.opts.MaxBackoff)
			continue
		}
		backoff = minBackoff
		b.up.Store(true)
		b.log.Info("backend up")
		b.opts.OnState(true)
		err = b.watch(lost)
		b.up.Store(false)
		b.disconnect()
		if b.ctx.Err() == nil {
			b.log.Warn("backend down", "err", err)
		}
		b.opts.OnState(false)
	}
}

// connect opens the shared links and asks each for exceptions, so that
// WORK_EXCEPTION reaches the proxy, which decides per session whether its
// client sees it.
func (b *Backend) connect() (chan struct{}, error) {
	lost := make(chan struct{})
	var once sync.Once
	onClose := func(err error) {
		once.Do(func() {
			b.mu.Lock()
			b.lostErr = err
			b.mu.Unlock()
			close(lost)
		})
	}
	links := make([]*Link, 0, b.opts.Links)
	fail := func(err error) (chan struct{}, error) {
		for _, l := range links {
			l.Abort()
		}
		return nil, err
	}
	for range b.opts.Links {
		ctx, cancel := context.WithTimeout(b.ctx, b.opts.DialTimeout)
		conn, err := b.opts.Dial(ctx)
		cancel()
		if err != nil {
			return fail(err)
		}
		links = append(links, newLink(conn, b.opts.MaxData, b.feeds, b.opts.OnWork, onClose))
	}
	for _, l := range links {
		reply := make(chan string, 1)
		err := l.Request(func(dst []byte) []byte {
			return protocol.AppendPacket(dst, protocol.Req, protocol.OptionReq, []byte("exceptions"))
		}, func(p *protocol.Packet) {
			switch {
			case p == nil:
				reply <- "link closed"
			case p.Type != protocol.OptionRes:
				reply <- fmt.Sprintf("%s %q", p.Type, p.Args)
			default:
				reply <- ""
			}
		})
		if err != nil {
			return fail(err)
		}
		select {
		case msg := <-reply:
			if msg != "" {
				return fail(fmt.Errorf("OPTION_REQ exceptions: %s", msg))
			}
		case <-time.After(b.opts.HealthTimeout + b.opts.DialTimeout):
			return fail(errors.New("OPTION_REQ exceptions: no reply"))
		case <-b.ctx.Done():
			return fail(b.ctx.Err())
		}
	}
	b.mu.Lock()
	b.links, b.workers, b.lost = links, map[*Link]bool{}, lost
	b.mu.Unlock()
	return lost, nil
}

// watch checks the backend until a link dies, a check goes unanswered or
// the backend is closed.
func (b *Backend) watch(lost chan struct{}) error {
	t := time.NewTicker(b.opts.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-b.ctx.Done():
			return b.ctx.Err()
		case <-lost:
			b.mu.Lock()
			err := b.lostErr
			b.mu.Unlock()
			return err
		case <-t.C:
		}
		l := b.Link()
		if l == nil {
			return ErrDown
		}
		reply := make(chan bool, 1)
		start := time.Now()
		err := l.Request(func(dst []byte) []byte {
			return protocol.AppendPacket(dst, protocol.Req, protocol.EchoReq, []byte("gearproxy health"))
		}, func(p *protocol.Packet) { reply <- p != nil && p.Type == protocol.EchoRes })
		if err != nil {
			return err
		}
		timer := time.NewTimer(b.opts.HealthTimeout)
		select {
		case ok := <-reply:
			timer.Stop()
			if !ok {
				return errors.New("health check: unexpected reply to ECHO_REQ")
			}
			b.rtt.Store(int64(time.Since(start)))
		case <-timer.C:
			return fmt.Errorf("health check: no ECHO_RES within %v", b.opts.HealthTimeout)
		case <-lost:
			timer.Stop()
		case <-b.ctx.Done():
			timer.Stop()
		}
	}
}

func (b *Backend) disconnect() {
	b.mu.Lock()
	links, workers := b.links, b.workers
	b.links, b.workers = nil, nil
	b.mu.Unlock()
	for _, l := range links {
		l.Abort()
	}
	for l := range workers {
		l.Abort()
	}
	for _, l := range links {
		<-l.Done()
	}
}

// Admin sends one admin text command on a connection of its own (a text
// reply on a shared binary link could not be framed) and returns the whole
// reply: one OK/ERR line, or for a list command (list true) the lines up to
// and including "." (or a first ERR line). The caller says which, since a
// function named "OK..." would make a status line look like a reply.
func (b *Backend) Admin(ctx context.Context, line string, list bool) ([]byte, error) {
	if !b.Up() {
		return nil, ErrDown
	}
	ctx, cancel := context.WithTimeout(ctx, b.opts.DialTimeout+b.opts.HealthTimeout)
	defer cancel()
	conn, err := b.opts.Dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("backend %s: admin: %w", b.opts.Name, err)
	}
	defer conn.Close()
	if d, ok := ctx.Deadline(); ok {
		conn.SetDeadline(d)
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	// "\r\n": gearmand drops the last character of a line that ends
	// in a bare "\n".
	if _, err := io.WriteString(conn, line+"\r\n"); err != nil {
		return nil, fmt.Errorf("backend %s: admin: %w", b.opts.Name, err)
	}
	br := bufio.NewReader(conn)
	var out []byte
	for first := true; ; first = false {
		l, err := br.ReadSlice('\n')
		if err != nil {
			return nil, fmt.Errorf("backend %s: admin %q: %w", b.opts.Name, line, err)
		}
		out = append(out, l...)
		if first && (!list || bytes.HasPrefix(l, []byte("ERR "))) {
			return out, nil
		}
		if bytes.Equal(bytes.TrimRight(l, "\r\n"), []byte(".")) {
			return out, nil
		}
	}
}
