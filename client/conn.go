package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// Defaults of Config.
const (
	DefaultDialTimeout = 10 * time.Second
	DefaultMinBackoff  = 100 * time.Millisecond
	DefaultMaxBackoff  = 10 * time.Second
)

// aLongTimeAgo is a deadline in the past: setting it wakes a blocked
// read or write at once.
func aLongTimeAgo() time.Time { return time.Unix(1, 0) }

// ErrClosed is returned by calls on a closed Client or Worker.
var ErrClosed = errors.New("client closed")

// ErrConnectionLost fails tasks and requests in flight when their
// connection breaks: a foreground job's results cannot follow it to a new
// connection, so the caller decides whether to submit again.
var ErrConnectionLost = errors.New("connection to the job server lost")

// Config says where and how to connect. The zero value of every field but
// Addr is usable.
type Config struct {
	// Addr is the server's host:port. Several, separated by commas, are
	// tried in turn: a client stays on the one that last worked and moves
	// to the next when it fails (several gearproxy instances without a
	// balancer in front). Independent gearmand servers are not
	// interchangeable that way: a worker must serve each of them, so run
	// one Worker per server.
	Addr string
	// TLS enables TLS with this configuration; nil speaks plaintext. When
	// ServerName is empty it is the host of the address dialed.
	TLS *tls.Config
	// Credentials enable SASL authentication; nil skips it (a plain
	// gearmand, or a gearproxy listener that accepts the client
	// certificate alone).
	Credentials *Credentials
	// ClientID is sent with SET_CLIENT_ID, shown in the admin "workers"
	// list.
	ClientID string
	// DialTimeout bounds connecting, the TLS handshake and authentication
	// together; default 10 s.
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts, which doubles after each failure (with jitter); defaults
	// 100 ms and 10 s.
	MinBackoff time.Duration
	MaxBackoff time.Duration
	// Dial replaces net.Dialer.DialContext, for tests and proxies.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// MaxData caps the size of a packet accepted from the server; default
	// protocol.DefaultMaxData.
	MaxData int
	// Concurrency is, for a Worker, how many connections grab and run
	// jobs in parallel; default 1. A Client ignores it.
	Concurrency int
	// Logger receives reconnection messages; nil discards them.
	Logger *slog.Logger
}

func (c Config) withDefaults() (Config, error) {
	if strings.TrimSpace(c.Addr) == "" {
		return c, errors.New("client: Config.Addr is required")
	}
	for _, a := range splitAddrs(c.Addr) {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return c, fmt.Errorf("client: Addr %q: %w", a, err)
		}
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = DefaultMinBackoff
	}
	if c.MaxBackoff < c.MinBackoff {
		c.MaxBackoff = max(DefaultMaxBackoff, c.MinBackoff)
	}
	if c.Dial == nil {
		var d net.Dialer
		c.Dial = d.DialContext
	}
	if c.MaxData <= 0 {
		c.MaxData = protocol.DefaultMaxData
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 1
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c, nil
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

// servers is the rotation over Config.Addr: each dial starts at the
// address that last worked, so a client sticks to a healthy server and
// moves on only when it fails.
type servers struct {
	mu    sync.Mutex
	addrs []string
	good  int
}

func newServers(addr string) *servers { return &servers{addrs: splitAddrs(addr)} }

// order returns the addresses to try, the last good one first.
func (s *servers) order() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(slices.Clone(s.addrs[s.good:]), s.addrs[:s.good]...)
}

func (s *servers) worked(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if i := slices.Index(s.addrs, addr); i >= 0 {
		s.good = i
	}
}

// dial tries each server in turn and returns the first connection that is
// established, TLS-protected and authenticated. An authentication refusal
// ends the attempt at once: another instance with the same users would
// refuse too, and trying them all would only spend the failure budget.
func dial(ctx context.Context, cfg Config, srv *servers) (net.Conn, *protocol.Reader, *protocol.Writer, error) {
	var errs []error
	for _, addr := range srv.order() {
		nc, r, w, err := dialOne(ctx, cfg, addr)
		if err == nil {
			srv.worked(addr)
			return nc, r, w, nil
		}
		if isAuthError(err) || ctx.Err() != nil {
			return nil, nil, nil, err
		}
		errs = append(errs, err)
	}
	return nil, nil, nil, errors.Join(errs...)
}

// dialOne connects to one server, does the TLS handshake and
// authenticates, all within DialTimeout.
func dialOne(ctx context.Context, cfg Config, addr string) (net.Conn, *protocol.Reader, *protocol.Writer, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	nc, err := cfg.Dial(ctx, "tcp", addr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	if cfg.TLS != nil {
		tcfg := cfg.TLS
		if tcfg.ServerName == "" {
			host, _, _ := net.SplitHostPort(addr)
			tcfg = tcfg.Clone()
			tcfg.ServerName = host
		}
		tc := tls.Client(nc, tcfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, nil, nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		nc = tc
	}
	r := protocol.NewReader(nc, protocol.ReaderOptions{Expect: protocol.Res, MaxData: cfg.MaxData})
	w := protocol.NewWriter(nc)
	if cfg.Credentials != nil {
		deadline, _ := ctx.Deadline()
		nc.SetDeadline(deadline)
		stop := context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo()) })
		_, err := authenticate(w, r, *cfg.Credentials, connTLS(nc))
		stop()
		nc.SetDeadline(time.Time{})
		if err != nil {
			nc.Close()
			if ctx.Err() != nil && !isAuthError(err) {
				err = fmt.Errorf("%w (%v)", ctx.Err(), err)
			}
			return nil, nil, nil, fmt.Errorf("authenticate to %s: %w", addr, err)
		}
	}
	if cfg.ClientID != "" {
		if err := send(w, protocol.SetClientID, []byte(cfg.ClientID)); err != nil {
			nc.Close()
			return nil, nil, nil, err
		}
	}
	return nc, r, w, nil
}

func isAuthError(err error) bool {
	var ae *AuthError
	return errors.As(err, &ae)
}

// backoff is the exponential wait between reconnection attempts. Jitter
// spreads the reconnections of many clients after a server restart.
type backoff struct {
	min, max time.Duration
	n        int
}

func (b *backoff) next() time.Duration {
	d := b.min << min(b.n, 30)
	if d > b.max || d <= 0 {
		d = b.max
	} else {
		b.n++
	}
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
