package connect

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gearproxy/gearproxy/client"
)

// Defaults for the zero fields of Config.
const (
	DefaultMaxConnections = 256
	DefaultAuthTimeout    = 10 * time.Second
	DefaultErrorGrace     = 2 * time.Second
	DefaultCloseTimeout   = 10 * time.Second
	DefaultFailureWindow  = time.Minute
	DefaultAuthBackoff    = time.Second
	DefaultMaxAuthBackoff = time.Minute
)

// copyBufferSize is the relay's buffer per direction: large enough for a
// full TLS record (16 KiB) and a batch of pipelined packets, small enough
// for hundreds of idle workers.
const copyBufferSize = 32 << 10

// ErrSidecarClosed is returned by Serve after Shutdown or Close.
var ErrSidecarClosed = errors.New("connect: sidecar closed")

// Config describes the upstream gearproxy and the limits of a Sidecar.
type Config struct {
	// Server is the upstream gearproxy's host:port; required.
	Server string
	// TLS configures the upstream connection. RootCAs nil means the
	// system roots; an empty ServerName is filled with Server's host,
	// so the certificate is always verified against the name dialled.
	// Certificates hold the client certificate for EXTERNAL. Nil is the
	// zero tls.Config: system roots, no client certificate.
	TLS *tls.Config
	// Credentials are sent to the upstream on every connection.
	Credentials client.Credentials
	// MaxConnections bounds concurrent local connections; beyond it new
	// ones wait in the listen backlog until a relay ends.
	MaxConnections int
	// AuthTimeout bounds dial, TLS handshake and SASL together.
	AuthTimeout time.Duration
	// ErrorGrace is how long a refused local connection is kept open to
	// receive the first request that expects a reply, so that it can be
	// answered with the cause instead of a bare close.
	ErrorGrace time.Duration
	// CloseTimeout bounds the second half of a relay: once one side has
	// finished sending, the other has this long to finish too.
	CloseTimeout time.Duration
	// FailureWindow is how long an upstream failure with the same cause
	// is logged only once; the next line counts what was suppressed.
	FailureWindow time.Duration
	// AuthBackoff and MaxAuthBackoff bound how long, after the upstream
	// refused the credentials, local connections are refused with that
	// cause without asking the upstream again; the wait doubles while
	// refusals continue. A retrying PHP pool would otherwise turn one
	// wrong password into a stream of failed logins that spends the
	// sidecar's per-address failure budget upstream and keeps locking it
	// out after the password is fixed.
	AuthBackoff    time.Duration
	MaxAuthBackoff time.Duration
	// Logger receives one line per relay opened and closed and the
	// upstream failures; nil discards.
	Logger *slog.Logger
	// Dial opens the TCP connection to Server; nil uses net.Dialer.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Sidecar accepts local plain-Gearman connections and relays each over its
// own authenticated TLS connection to the upstream gearproxy.
type Sidecar struct {
	cfg      Config
	tls      *tls.Config
	log      *slog.Logger
	failures *failureLog
	refusals refusalGate
	slots    chan struct{}
	buffers  sync.Pool
	nextID   atomic.Uint64

	// ctx is cancelled by a forced close: it aborts authentications in
	// progress.
	ctx    context.Context
	cancel context.CancelFunc

	mu        sync.Mutex
	closing   bool
	done      chan struct{} // closed when shutting down starts
	listeners map[net.Listener]struct{}
	relays    map[*relay]struct{}
	wg        sync.WaitGroup
}

// New checks cfg, fills its defaults and returns a Sidecar ready to Serve.
func New(cfg Config) (*Sidecar, error) {
	if cfg.Server == "" {
		return nil, errors.New("connect: no upstream server")
	}
	host, _, err := net.SplitHostPort(cfg.Server)
	if err != nil {
		return nil, fmt.Errorf("connect: upstream server %q: %w", cfg.Server, err)
	}
	tc := &tls.Config{}
	if cfg.TLS != nil {
		tc = cfg.TLS.Clone()
	}
	if tc.ServerName == "" {
		tc.ServerName = host
	}
	if tc.MinVersion == 0 {
		tc.MinVersion = tls.VersionTLS12
	}
	if cfg.MaxConnections <= 0 {
		cfg.MaxConnections = DefaultMaxConnections
	}
	if cfg.AuthTimeout <= 0 {
		cfg.AuthTimeout = DefaultAuthTimeout
	}
	if cfg.ErrorGrace <= 0 {
		cfg.ErrorGrace = DefaultErrorGrace
	}
	if cfg.CloseTimeout <= 0 {
		cfg.CloseTimeout = DefaultCloseTimeout
	}
	if cfg.AuthBackoff <= 0 {
		cfg.AuthBackoff = DefaultAuthBackoff
	}
	if cfg.MaxAuthBackoff < cfg.AuthBackoff {
		cfg.MaxAuthBackoff = max(DefaultMaxAuthBackoff, cfg.AuthBackoff)
	}
	if cfg.FailureWindow <= 0 {
		cfg.FailureWindow = DefaultFailureWindow
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Dial == nil {
		var d net.Dialer
		cfg.Dial = d.DialContext
	}
	s := &Sidecar{
		cfg:       cfg,
		tls:       tc,
		log:       log,
		failures:  newFailureLog(log, cfg.FailureWindow),
		refusals:  refusalGate{min: cfg.AuthBackoff, max: cfg.MaxAuthBackoff},
		slots:     make(chan struct{}, cfg.MaxConnections),
		done:      make(chan struct{}),
		listeners: make(map[net.Listener]struct{}),
		relays:    make(map[*relay]struct{}),
	}
	s.buffers.New = func() any { b := make([]byte, copyBufferSize); return &b }
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Serve accepts connections on ln until Shutdown or Close, and returns
// ErrSidecarClosed then, or the listener's error. It takes a slot before
// each Accept, so at MaxConnections new clients wait in the kernel's
// backlog instead of costing a goroutine each.
func (s *Sidecar) Serve(ln net.Listener) error {
	if !s.addListener(ln) {
		ln.Close()
		return ErrSidecarClosed
	}
	defer s.removeListener(ln)
	var backoff time.Duration
	for {
		select {
		case s.slots <- struct{}{}:
		default:
			s.failures.failed("local connections wait", "max connections reached: new ones wait for a relay to end",
				"max_connections", s.cfg.MaxConnections)
			select {
			case s.slots <- struct{}{}:
			case <-s.done:
				return ErrSidecarClosed
			}
		}
		nc, err := ln.Accept()
		if err != nil {
			<-s.slots
			select {
			case <-s.done:
				return ErrSidecarClosed
			default:
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of file descriptors: wait instead of spinning.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.log.Warn("accept failed, retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("connect: accept: %w", err)
		}
		backoff = 0
		if !s.startRelay(nc) {
			<-s.slots
			nc.Close()
			return ErrSidecarClosed
		}
	}
}

func (s *Sidecar) addListener(ln net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return false
	}
	s.listeners[ln] = struct{}{}
	return true
}

func (s *Sidecar) removeListener(ln net.Listener) {
	s.mu.Lock()
	delete(s.listeners, ln)
	s.mu.Unlock()
}

// startRelay registers the connection and starts its goroutine; it
// refuses once shutting down so that Shutdown's wait covers every relay.
func (s *Sidecar) startRelay(nc net.Conn) bool {
	r := &relay{id: s.nextID.Add(1), local: nc}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return false
	}
	s.relays[r] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer func() { <-s.slots }()
		defer func() {
			s.mu.Lock()
			delete(s.relays, r)
			s.mu.Unlock()
		}()
		s.serveRelay(r)
	}()
	return true
}

// Shutdown stops accepting, then waits for the relays to end by themselves
// until ctx is done; then it closes what is left and returns ctx's error.
// Relays of long-lived workers never end by themselves: ctx is the drain
// timeout.
func (s *Sidecar) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if !s.closing {
		s.closing = true
		close(s.done)
	}
	for ln := range s.listeners {
		ln.Close()
	}
	s.mu.Unlock()
	drained := make(chan struct{})
	go func() {
		s.wg.Wait()
		close(drained)
	}()
	select {
	case <-drained:
		s.cancel()
		return nil
	case <-ctx.Done():
	}
	s.cancel()
	s.mu.Lock()
	for r := range s.relays {
		r.close()
	}
	s.mu.Unlock()
	<-drained
	return ctx.Err()
}

// Close stops at once: listeners and every relay are closed.
func (s *Sidecar) Close() error {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Shutdown(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// Connections is the number of local connections being served.
func (s *Sidecar) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.relays)
}

func (s *Sidecar) getBuffer() *[]byte  { return s.buffers.Get().(*[]byte) }
func (s *Sidecar) putBuffer(b *[]byte) { s.buffers.Put(b) }

// onlyReader and onlyWriter hide ReadFrom/WriteTo so that io.CopyBuffer
// uses the relay's buffer instead of allocating its own per call.
type onlyReader struct{ io.Reader }
type onlyWriter struct{ io.Writer }
