package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultAddress is where the admin listener binds unless configured:
// loopback, because it shows every function and user.
const DefaultAddress = "127.0.0.1:4780"

// Options configure the admin listener. Zero values take the defaults.
type Options struct {
	// Address to listen on; default DefaultAddress.
	Address string
	// TLS, if set, serves HTTPS with this configuration (for example
	// auth.TLSServer.Config(), whose certificate reloads).
	TLS *tls.Config
	// Authenticate, if set, guards /metrics and the status page with
	// HTTP basic authentication: it gets the user name and password and
	// says whether they are good (gearproxy checks them against its user
	// store's SCRAM verifiers). /healthz and /readyz stay open, for load
	// balancers and service managers; they reveal nothing but a yes/no.
	Authenticate func(user, password string) bool
	// Source feeds the status page, /readyz and the gauges. Required.
	Source Source
	// Metrics are served on /metrics; nil builds a fresh set.
	Metrics *Metrics
	// Version is shown on the status page.
	Version string
	// Refresh is how often the status page reloads itself; default 5 s.
	Refresh time.Duration
	// SnapshotTimeout bounds each Source.Snapshot; default 5 s.
	SnapshotTimeout time.Duration
	Logger          *slog.Logger
}

// Server is the admin HTTP listener.
type Server struct {
	opts     Options
	log      *slog.Logger
	metrics  *Metrics
	handler  http.Handler
	http     *http.Server
	draining atomic.Bool
	checks   chan struct{} // slots for password checks

	mu      sync.Mutex
	serving bool
	done    chan struct{} // closed when the background Serve of Start returns
}

// New checks opts and builds the server; it registers the Source's gauges
// on the Metrics' registry, so one Metrics serves one Server.
func New(opts Options) (*Server, error) {
	if opts.Source == nil {
		return nil, errors.New("admin: no Source")
	}
	if opts.Address == "" {
		opts.Address = DefaultAddress
	}
	if opts.Refresh <= 0 {
		opts.Refresh = 5 * time.Second
	}
	if opts.SnapshotTimeout <= 0 {
		opts.SnapshotTimeout = 5 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(MetricsOptions{Version: opts.Version})
	}
	s := &Server{opts: opts, log: opts.Logger, metrics: opts.Metrics, checks: make(chan struct{}, maxPasswordChecks)}
	col := newSnapshotCollector(opts.Source, opts.Metrics, opts.SnapshotTimeout, func(err error) {
		s.log.Warn("admin: status snapshot for /metrics failed", "err", err)
	})
	if err := opts.Metrics.reg.Register(col); err != nil {
		return nil, fmt.Errorf("admin: metrics already served by another admin server: %w", err)
	}

	mux := http.NewServeMux()
	// "GET" patterns answer HEAD too; other methods get 405.
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", s.guard(promhttp.HandlerFor(opts.Metrics.reg, promhttp.HandlerOpts{
		ErrorLog:      slogPrintln{s.log},
		ErrorHandling: promhttp.ContinueOnError,
		// Scrapes ask the backends for their status: a few at a time
		// is plenty.
		MaxRequestsInFlight: 4,
	})))
	mux.Handle("GET /{$}", s.guard(http.HandlerFunc(s.statusPage)))
	s.handler = securityHeaders(mux)
	s.http = &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(opts.Logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Handler serves every endpoint, for tests and for callers that run their
// own http.Server.
func (s *Server) Handler() http.Handler { return s.handler }

// Metrics returns the metrics this server exports.
func (s *Server) Metrics() *Metrics { return s.metrics }

// Start binds Options.Address and serves in the background until
// Shutdown or Close. It returns the bound address (useful with port 0).
func (s *Server) Start() (net.Addr, error) {
	l, err := net.Listen("tcp", s.opts.Address)
	if err != nil {
		return nil, fmt.Errorf("admin: listen %s: %w", s.opts.Address, err)
	}
	done := make(chan struct{})
	s.mu.Lock()
	s.done = done
	s.mu.Unlock()
	go func() {
		defer close(done)
		if err := s.Serve(l); err != nil {
			s.log.Error("admin: listener stopped", "address", l.Addr().String(), "err", err)
		}
	}()
	return l.Addr(), nil
}

// Serve serves on l (wrapped in TLS if configured) until Shutdown or
// Close, which make it return nil.
func (s *Server) Serve(l net.Listener) error {
	if s.opts.TLS != nil {
		l = tls.NewListener(l, s.opts.TLS)
	} else if s.opts.Authenticate != nil && !isLoopback(l.Addr()) {
		s.log.Warn("admin: basic auth without TLS sends passwords in clear text", "address", l.Addr().String())
	}
	s.log.Info("admin: listening", "address", l.Addr().String(), "tls", s.opts.TLS != nil, "auth", s.opts.Authenticate != nil)
	err := s.http.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// SetDraining makes /readyz answer 503 while the proxy drains before a
// shutdown, so that balancers stop sending new connections.
func (s *Server) SetDraining(draining bool) { s.draining.Store(draining) }

// Shutdown stops accepting and waits for requests in progress, up to ctx.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	s.wait()
	return err
}

// Close closes the listener and every connection at once.
func (s *Server) Close() error {
	err := s.http.Close()
	s.wait()
	return err
}

func (s *Server) wait() {
	s.mu.Lock()
	done := s.done
	s.mu.Unlock()
	if done != nil {
		<-done
	}
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

// readyz is ready when at least one backend is healthy: with none, every
// job would fail, and a balancer should send clients to another proxy.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	if s.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready: draining")
		return
	}
	st, err := s.snapshot(r.Context())
	if err != nil {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintln(w, "not ready:", err)
		return
	}
	n := st.Healthy()
	if n == 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprintf(w, "not ready: 0 of %d backends healthy\n", len(st.Backends))
		return
	}
	fmt.Fprintf(w, "ready: %d of %d backends healthy\n", n, len(st.Backends))
}

func (s *Server) statusPage(w http.ResponseWriter, r *http.Request) {
	p := page{Version: s.opts.Version, Refresh: max(1, int(s.opts.Refresh/time.Second)), Now: time.Now()}
	st, err := s.snapshot(r.Context())
	code := http.StatusOK
	if err != nil {
		p.Err = err.Error()
		code = http.StatusServiceUnavailable
	} else {
		p.Status = sorted(st)
		p.HealthyBackends = st.Healthy()
	}
	// Render first: a template error must not leave half a page.
	var buf bytes.Buffer
	if err := statusTemplate.Execute(&buf, p); err != nil {
		s.log.Error("admin: status page", "err", err)
		http.Error(w, "status page failed", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(buf.Bytes())
}

func (s *Server) snapshot(ctx context.Context) (Status, error) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.SnapshotTimeout)
	defer cancel()
	return s.opts.Source.Snapshot(ctx)
}

// guard asks for basic-auth credentials when Options.Authenticate is set.
func (s *Server) guard(h http.Handler) http.Handler {
	if s.opts.Authenticate == nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		user, pass, ok := r.BasicAuth()
		if ok && s.checkPassword(r.Context(), user, pass) {
			h.ServeHTTP(w, r)
			return
		}
		if ok {
			// A request without credentials is a browser's first try,
			// not a failure.
			s.metrics.AuthFailure("admin", AuthAdminHTTP)
			s.log.Warn("admin: basic auth failed", "user", user, "remote", r.RemoteAddr)
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="gearproxy", charset="UTF-8"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
	})
}

// maxPasswordChecks bounds concurrent Authenticate calls. Each one is a
// key derivation (PBKDF2 for SCRAM verifiers): a flood of guesses then
// waits its turn instead of taking every core from the proxy.
const maxPasswordChecks = 2

func (s *Server) checkPassword(ctx context.Context, user, pass string) bool {
	select {
	case s.checks <- struct{}{}:
	case <-ctx.Done():
		return false
	}
	defer func() { <-s.checks }()
	return s.opts.Authenticate(user, pass)
}

// securityHeaders keeps the page from being framed, sniffed, cached or
// from loading anything at all beyond its own inline style.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

func isLoopback(a net.Addr) bool {
	t, ok := a.(*net.TCPAddr)
	return ok && t.IP.IsLoopback()
}

// slogPrintln adapts a slog.Logger to promhttp's error log.
type slogPrintln struct{ log *slog.Logger }

func (l slogPrintln) Println(v ...any) { l.log.Warn("admin: /metrics: " + fmt.Sprint(v...)) }

var _ prometheus.Collector = (*snapshotCollector)(nil)
