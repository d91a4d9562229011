package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
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
	// Addr is the server's host:port.
	Addr string
	// TLS enables TLS with this configuration; nil speaks plaintext. When
	// ServerName is empty it is taken from Addr.
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
	if c.Addr == "" {
		return c, errors.New("client: Config.Addr is required")
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
	if c.TLS != nil && c.TLS.ServerName == "" {
		host, _, err := net.SplitHostPort(c.Addr)
		if err != nil {
			return c, fmt.Errorf("client: Addr %q: %w", c.Addr, err)
		}
		c.TLS = c.TLS.Clone()
		c.TLS.ServerName = host
	}
	return c, nil
}

// dial connects, does the TLS handshake and authenticates, all within
// DialTimeout.
func dial(ctx context.Context, cfg Config) (net.Conn, *protocol.Reader, *protocol.Writer, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	nc, err := cfg.Dial(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("dial %s: %w", cfg.Addr, err)
	}
	if cfg.TLS != nil {
		tc := tls.Client(nc, cfg.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, nil, nil, fmt.Errorf("TLS handshake with %s: %w", cfg.Addr, err)
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
			return nil, nil, nil, fmt.Errorf("authenticate to %s: %w", cfg.Addr, err)
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
