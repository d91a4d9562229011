package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gearproxy/gearproxy/backend"
	"github.com/gearproxy/gearproxy/protocol"
	"github.com/gearproxy/gearproxy/router"
)

// Backend configures one job server behind the proxy.
type Backend struct {
	Name   string
	Weight float64
	// Dial opens a connection to it (backend.TCPDialer or
	// backend.PipeDialer for a bundled job server).
	Dial backend.Dialer
	// Links is the number of shared client connections; zero means 4.
	Links int
	// Address is shown on the status page ("bundled" for in-process).
	Address string
}

// Options configure a Server. Zero values take the documented defaults.
type Options struct {
	Backends []Backend
	// HandleKey keys the checksum in client handles (see router.Codec);
	// every proxy in front of the same backends must use the same key.
	HandleKey []byte
	// HandleCache bounds the map of backend handles too long to embed.
	HandleCache int
	// MaxConnections caps concurrent sessions (default 100000).
	MaxConnections int
	// MaxData caps the declared size of a packet (default 64 MiB).
	MaxData int
	// MaxOutput caps the unsent bytes queued to one session; a peer that
	// does not read its replies is disconnected past it (default 16 MiB).
	MaxOutput int
	// IdleTimeout closes a session that sent nothing for this long and
	// waits for nothing (no job, no reply owed, not a worker). Zero: never.
	IdleTimeout time.Duration
	// Backend health and reconnects; see backend.Options.
	HealthInterval time.Duration
	HealthTimeout  time.Duration
	DialTimeout    time.Duration
	MaxBackoff     time.Duration
	// Version is what the admin command `version` answers.
	Version string
	Logger  *slog.Logger
	// Metrics, if set, is told about jobs, connections and denials
	// (an *admin.Metrics; see ops.go).
	Metrics Observer
}

// shrinkAfter is how long a session may be quiet before its 64 KiB read
// buffer goes back to the server's pool; thousands of idle connections
// then cost a few KiB each. A busy session never waits this long between
// packets; an occasional one pays one extra 1-byte read per request.
const shrinkAfter = 250 * time.Millisecond

// Server is the proxy: its listeners, sessions and the backend pool.
type Server struct {
	opts Options
	log  *slog.Logger
	// trace logs every packet at debug level (checked once: the check
	// is not free on the hot path).
	trace bool
	// topo is the backends, their router and handle codec: one value,
	// replaced whole when a reload adds backends (topo.go).
	topo atomic.Pointer[topology]
	up   atomic.Uint64 // router.Set of healthy backends

	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	sessions  map[uint64]*session
	listeners map[net.Listener]bool
	closed    bool

	// readers pools sessions' packet readers (see shrinkAfter).
	readers sync.Pool

	nextID atomic.Uint64
	conns  atomic.Int64
	// submits numbers submits in arrival order, for the queue views.
	submits atomic.Uint64
	wg      sync.WaitGroup
	ops
}

// ErrClosed is returned by Serve after Close.
var ErrClosed = errors.New("proxy closed")

// New builds a proxy and starts connecting to its backends.
func New(opts Options) (*Server, error) {
	if len(opts.Backends) == 0 {
		return nil, errors.New("proxy: no backends")
	}
	if opts.MaxConnections <= 0 {
		opts.MaxConnections = 100000
	}
	if opts.MaxData <= 0 {
		opts.MaxData = protocol.DefaultMaxData
	}
	if opts.MaxOutput <= 0 {
		opts.MaxOutput = 16 << 20
	}
	if opts.HandleCache <= 0 {
		opts.HandleCache = 100000
	}
	if opts.Version == "" {
		opts.Version = "gearproxy"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	members := make([]router.Member, len(opts.Backends))
	names := make([]string, len(opts.Backends))
	for i, b := range opts.Backends {
		members[i] = router.Member{Name: b.Name, Weight: b.Weight}
		names[i] = b.Name
	}
	r, err := router.New(members)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	codec, err := router.NewCodec(names, opts.HandleKey, opts.HandleCache)
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	codec.OnFallback = func(backend int, handle []byte, n uint64) {
		// The first one says what is going on; then a reminder now and
		// then, so a backend with long handles cannot flood the log.
		if n == 1 || n%10000 == 0 {
			opts.Logger.Warn("backend handle too long to embed in a client handle: mapped in memory, valid only on this proxy until evicted",
				"backend", names[backend], "handle_bytes", len(handle), "mapped_total", n)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		opts: opts, log: opts.Logger,
		ctx: ctx, cancel: cancel,
		sessions: map[uint64]*session{}, listeners: map[net.Listener]bool{},
		ops: ops{obs: opts.Metrics},
	}
	s.trace = opts.Logger.Enabled(context.Background(), slog.LevelDebug-4)
	var pools []*pool
	for i, bc := range opts.Backends {
		p := &pool{srv: s, index: i, jobs: map[string]*job{}, pending: map[string]*job{}}
		b, err := backend.New(backend.Options{
			Name: bc.Name, Dial: bc.Dial, Links: bc.Links,
			HealthInterval: opts.HealthInterval, HealthTimeout: opts.HealthTimeout,
			DialTimeout: opts.DialTimeout, MaxBackoff: opts.MaxBackoff,
			MaxData: opts.MaxData, Logger: opts.Logger,
			OnWork: p.work, OnState: p.state,
		})
		if err != nil {
			cancel()
			return nil, fmt.Errorf("proxy: %w", err)
		}
		p.b = b
		pools = append(pools, p)
	}
	s.topo.Store(&topology{pools: pools, router: r, codec: codec, backends: opts.Backends})
	for _, p := range pools {
		p.b.Start()
	}
	return s, nil
}

// Up returns how many backends are healthy.
func (s *Server) Up() int { return router.Set(s.up.Load()).Len() }

// WaitUp waits until n backends are healthy or ctx ends.
func (s *Server) WaitUp(ctx context.Context, n int) error {
	for s.Up() < n {
		select {
		case <-ctx.Done():
			return fmt.Errorf("proxy: %d of %d backends up: %w", s.Up(), n, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
	return nil
}

// HandleFallbacks counts backend handles too long to embed in a client
// handle (they go through a bounded map and decode only on this proxy).
func (s *Server) HandleFallbacks() uint64 { return s.codec().Fallbacks() }

func (s *Server) upSet() router.Set { return router.Set(s.up.Load()) }

func (s *Server) setUp(i int, up bool) {
	for {
		old := s.up.Load()
		n := router.Set(old).Without(i)
		if up {
			n = n.With(i)
		}
		if s.up.CompareAndSwap(old, uint64(n)) {
			return
		}
	}
}

// Listener configures one listening socket.
type Listener struct {
	// Auth learns each connection's user; FixedUser for a listener that
	// does not authenticate.
	Auth Authenticator
	// AuthTimeout bounds authentication (default 10 s).
	AuthTimeout time.Duration
	// MaxConnections caps this listener's sessions; zero: only the
	// server's limit.
	MaxConnections int
	// Name labels the listener in metrics and logs; default its address.
	Name string
}

// Listen listens on a TCP address and serves it in the background; it
// returns the bound address (useful with port 0).
func (s *Server) Listen(addr string, l Listener) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("proxy: listen %s: %w", addr, err)
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.Serve(ln, l); err != nil && !errors.Is(err, ErrClosed) {
			s.log.Error("listener stopped", "addr", ln.Addr().String(), "err", err)
		}
	}()
	return ln.Addr(), nil
}

// Serve accepts connections on ln until Close.
func (s *Server) Serve(ln net.Listener, l Listener) error {
	if l.Auth == nil {
		ln.Close()
		return errors.New("proxy: listener without an authenticator")
	}
	if l.AuthTimeout <= 0 {
		l.AuthTimeout = 10 * time.Second
	}
	if l.Name == "" {
		l.Name = ln.Addr().String()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrClosed
	}
	s.listeners[ln] = true
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	var here atomic.Int64
	backoff := 5 * time.Millisecond
	for {
		conn, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil || s.draining.Load() {
				return ErrClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) {
				// Out of file descriptors: wait, do not spin.
				s.log.Warn("accept", "err", err)
				time.Sleep(backoff)
				backoff = min(backoff*2, time.Second)
				continue
			}
			return err
		}
		backoff = 5 * time.Millisecond
		n, h := s.conns.Add(1), here.Add(1)
		if n > int64(s.liveLimits().MaxConnections) || (l.MaxConnections > 0 && h > int64(l.MaxConnections)) {
			s.conns.Add(-1)
			here.Add(-1)
			s.refuse(conn)
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer here.Add(-1)
			defer s.conns.Add(-1)
			s.serveConn(conn, l)
		}()
	}
}

// refuse tells a connection over the limit why, then closes it.
func (s *Server) refuse(conn net.Conn) {
	s.log.Warn("connection refused: too many connections", "remote", conn.RemoteAddr().String())
	conn.SetWriteDeadline(time.Now().Add(time.Second))
	conn.Write(protocol.AppendError(nil, "SERVER_BUSY", "too many connections"))
	conn.Close()
}

func (s *Server) serveConn(conn net.Conn, l Listener) {
	s.opened(l.Name)
	defer s.closedConn(l.Name)
	ctx, cancel := context.WithTimeout(s.ctx, l.AuthTimeout)
	conn.SetDeadline(time.Now().Add(l.AuthTimeout))
	a, err := l.Auth.Authenticate(ctx, conn)
	cancel()
	if err != nil {
		s.log.Info("authentication failed", "remote", conn.RemoteAddr().String(), "listener", l.Name, "err", err)
		s.authFailed(l.Name, err)
		conn.Close()
		return
	}
	a.Conn.SetDeadline(time.Time{})
	s.observe(&a.Identity)
	sess := newSession(s, a)
	sess.listener = l.Name
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		a.Conn.Close()
		return
	}
	s.sessions[sess.id] = sess
	s.mu.Unlock()
	sess.serve()
	s.mu.Lock()
	delete(s.sessions, sess.id)
	s.mu.Unlock()
}

// Close stops the listeners, disconnects every session and backend, and
// waits for all of the proxy's goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel()
	for ln := range s.listeners {
		ln.Close()
	}
	sessions := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		sess.kill("proxy shutting down")
	}
	s.wg.Wait()
	for _, p := range s.pools() {
		p.b.Close()
	}
	return nil
}

// each calls fn for every live session.
func (s *Server) each(fn func(*session)) {
	s.mu.Lock()
	sessions := make([]*session, 0, len(s.sessions))
	for _, sess := range s.sessions {
		sessions = append(sessions, sess)
	}
	s.mu.Unlock()
	for _, sess := range sessions {
		fn(sess)
	}
}

func pid() int { return os.Getpid() }
