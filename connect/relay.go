package connect

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"time"

	"github.com/gearproxy/gearproxy/client"
)

// maxEarly bounds the local bytes held back while the upstream is set up;
// past it the local peer is simply not read (TCP pushes back).
const maxEarly = 64 << 10

// relay is one local connection and, once authenticated, its upstream.
type relay struct {
	id    uint64
	local net.Conn

	mu       sync.Mutex
	upstream net.Conn
	closed   bool
}

func (r *relay) setUpstream(up net.Conn) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.upstream = up
	return true
}

// close ends the relay at once, from Shutdown after the drain timeout.
func (r *relay) close() {
	r.mu.Lock()
	r.closed = true
	up := r.upstream
	r.mu.Unlock()
	r.local.Close()
	if up != nil {
		up.Close()
	}
}

// serveRelay is one local connection's whole life: hold its first bytes,
// open and authenticate the upstream, then relay until either side ends.
func (s *Sidecar) serveRelay(r *relay) {
	start := time.Now()
	defer r.local.Close()
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.AuthTimeout)
	// A peer that closes before sending anything (a port probe, a health
	// check) cancels the login it would not use.
	early := startEarlyReader(r.local, cancel)
	var up net.Conn
	var user string
	err := s.refusals.closed()
	if err == nil {
		up, user, err = s.openUpstream(ctx)
	}
	cancel()
	pending, localErr := early.stop()
	if err == nil && !r.setUpstream(up) {
		up.Close()
		err = ErrSidecarClosed
	}
	if err != nil {
		if localErr != nil && len(pending) == 0 {
			s.log.Debug("local connection closed before the upstream was ready", "conn", r.id,
				"local", r.local.RemoteAddr().String(), "upstream_error", err)
			return
		}
		s.refuse(r, pending, localErr, err)
		return
	}
	defer up.Close()
	s.refusals.accepted()
	s.failures.recovered()
	s.log.Info("relay open", "conn", r.id, "local", r.local.RemoteAddr().String(), "upstream", s.cfg.Server,
		"user", user, "setup", time.Since(start).Round(time.Microsecond))

	// The bytes that arrived during authentication go first, in order.
	var sent int64
	if len(pending) > 0 {
		n, werr := up.Write(pending)
		sent = int64(n)
		if werr != nil {
			s.log.Info("relay closed", "conn", r.id, "reason", fmt.Sprintf("upstream write: %v", werr),
				"sent", sent, "received", 0, "duration", time.Since(start).Round(time.Millisecond))
			return
		}
	}
	var toUp, toLocal int64
	var reason string
	if localErr != nil {
		// The local peer finished sending before we were ready: pass the
		// half-close on and only relay replies.
		closeWrite(up)
		toLocal, reason = s.copyRest(r.local, up, "upstream")
		reason = "local closed before the upstream was ready; then " + reason
	} else {
		toUp, toLocal, reason = s.pipe(r.local, up)
	}
	s.log.Info("relay closed", "conn", r.id, "reason", reason, "sent", sent+toUp, "received", toLocal,
		"duration", time.Since(start).Round(time.Millisecond))
}

// openUpstream dials the server, verifies its certificate and
// authenticates; errors say which step failed.
func (s *Sidecar) openUpstream(ctx context.Context) (net.Conn, string, error) {
	raw, err := s.cfg.Dial(ctx, "tcp", s.cfg.Server)
	if err != nil {
		return nil, "", fmt.Errorf("dial %s: %w", s.cfg.Server, err)
	}
	if d, ok := ctx.Deadline(); ok {
		// client.Authenticate reads with blocking calls: the deadline
		// makes a silent server fail instead of hanging the relay.
		raw.SetDeadline(d)
	}
	tc := tls.Client(raw, s.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, "", fmt.Errorf("TLS handshake with %s: %w", s.cfg.Server, err)
	}
	user, err := client.Authenticate(ctx, tc, s.cfg.Credentials)
	if err != nil {
		tc.Close()
		who := s.cfg.Credentials.Username
		if who == "" {
			who = "(client certificate)"
		}
		err = fmt.Errorf("authenticate to %s as %s: %w", s.cfg.Server, who, err)
		if ae := (*client.AuthError)(nil); errors.As(err, &ae) {
			// The credentials are wrong, not the network: do not ask
			// again for every local connection.
			s.refusals.refused(err)
		}
		return nil, "", err
	}
	raw.SetDeadline(time.Time{})
	return tc, user, nil
}

// pipe relays both ways until both directions have ended, passing a
// half-close on. It returns the bytes each way and why it ended: the first
// direction to finish.
func (s *Sidecar) pipe(local, up net.Conn) (toUp, toLocal int64, reason string) {
	type result struct {
		n    int64
		from string
		err  error
	}
	results := make(chan result, 2)
	run := func(dst, src net.Conn, from string) {
		buf := s.getBuffer()
		n, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *buf)
		s.putBuffer(buf)
		results <- result{n, from, err}
	}
	go run(up, local, "local")
	go run(local, up, "upstream")

	first := <-results
	reason = describeEnd(first.from, first.err)
	if first.err == nil {
		// A clean end of one direction: the other may still carry
		// replies, but only for CloseTimeout.
		// The remaining direction reads from the side we half-close.
		rest := up
		if first.from == "upstream" {
			rest = local
		}
		closeWrite(rest)
		rest.SetReadDeadline(time.Now().Add(s.cfg.CloseTimeout))
	} else {
		local.Close()
		up.Close()
	}
	second := <-results
	for _, r := range []result{first, second} {
		if r.from == "local" {
			toUp = r.n
		} else {
			toLocal = r.n
		}
	}
	return toUp, toLocal, reason
}

// copyRest relays one remaining direction, from src to dst.
func (s *Sidecar) copyRest(dst, src net.Conn, from string) (int64, string) {
	src.SetReadDeadline(time.Now().Add(s.cfg.CloseTimeout))
	buf := s.getBuffer()
	defer s.putBuffer(buf)
	n, err := io.CopyBuffer(onlyWriter{dst}, onlyReader{src}, *buf)
	return n, describeEnd(from, err)
}

func describeEnd(from string, err error) string {
	switch {
	case err == nil:
		return from + " closed"
	case errors.Is(err, os.ErrDeadlineExceeded):
		return from + " did not close in time after the other side"
	case errors.Is(err, net.ErrClosed):
		return "relay closed by shutdown"
	default:
		return fmt.Sprintf("%s: %v", from, err)
	}
}

// closeWrite passes a half-close on: FIN on TCP, close_notify on TLS.
// Gearman servers close on end of input, which ends the other direction.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
		return
	}
	c.Close()
}

// earlyReader holds back what the local peer sends while the upstream is
// being authenticated.
type earlyReader struct {
	conn   net.Conn
	cancel context.CancelFunc
	buf    []byte
	err    error
	done   chan struct{}
}

func startEarlyReader(c net.Conn, cancel context.CancelFunc) *earlyReader {
	e := &earlyReader{conn: c, cancel: cancel, buf: make([]byte, 0, 4096), done: make(chan struct{})}
	go e.run()
	return e
}

func (e *earlyReader) run() {
	defer close(e.done)
	for len(e.buf) < maxEarly {
		if len(e.buf) == cap(e.buf) {
			e.buf = append(e.buf, 0)[:len(e.buf)]
		}
		n, err := e.conn.Read(e.buf[len(e.buf):min(cap(e.buf), maxEarly)])
		e.buf = e.buf[:len(e.buf)+n]
		if err != nil {
			e.err = err
			if len(e.buf) == 0 && !errors.Is(err, os.ErrDeadlineExceeded) {
				e.cancel()
			}
			return
		}
	}
}

// stop interrupts the read with a deadline in the past (no byte is lost:
// a read either returns data or the timeout) and returns what arrived.
// err is nil while the local peer is still open.
func (e *earlyReader) stop() ([]byte, error) {
	e.conn.SetReadDeadline(time.Unix(1, 0))
	<-e.done
	e.conn.SetReadDeadline(time.Time{})
	if errors.Is(e.err, os.ErrDeadlineExceeded) {
		e.err = nil
	}
	return e.buf, e.err
}
