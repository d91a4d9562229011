package auth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// maxPreAuthData caps a packet before authentication: the largest SASL
// message is far smaller, and an unauthenticated peer must not make the
// proxy buffer megabytes.
const maxPreAuthData = 16 << 10

// Authenticated is a connection whose user is known.
type Authenticated struct {
	// Conn is the connection to serve from now on: the accepted one, or
	// the *tls.Conn around it.
	Conn net.Conn
	// Buffered holds bytes read past the end of the exchange (a client
	// that pipelined its first request behind SASL_STEP); the session
	// must consume them before reading Conn.
	Buffered []byte
	User     *User
	// Mechanism is the SASL mechanism, or "certificate" for a login by
	// client certificate at the TLS handshake.
	Mechanism string
}

// ErrAuthRequired is returned by AuthenticateConn when the peer sent a
// packet other than SASL and ECHO before authenticating.
var ErrAuthRequired = errors.New("packet before authentication")

// ErrAuthFailed is returned by AuthenticateConn when the peer used up its
// failures.
var ErrAuthFailed = errors.New("authentication failed")

// ErrTLSHandshake wraps the error of a TLS handshake that failed.
var ErrTLSHandshake = errors.New("TLS handshake")

// ErrMechUnsupported and ErrSequence name what went wrong last in a SASL
// conversation whose connection then ended (see FailedEnd): a mechanism
// the listener does not offer, or SASL packets out of order.
var (
	ErrMechUnsupported = errors.New("SASL mechanism not offered")
	ErrSequence        = errors.New("SASL packets out of order")
)

// FailedEnd is the error of a connection that ended, before it
// authenticated, after its SASL conversation had failed a step: a client
// that gives up after a wrong password or an unoffered mechanism. It
// unwraps to the failure (ErrAuthFailed, ErrMechUnsupported or
// ErrSequence), not to how the connection ended, so that a hang-up after a
// failure is not mistaken for a port probe.
type FailedEnd struct {
	Last error // what failed last in the conversation
	End  error // what ended the connection: io.EOF when the peer hung up
}

func (e *FailedEnd) Error() string { return fmt.Sprintf("%v, after: %v", e.End, e.Last) }
func (e *FailedEnd) Unwrap() error { return e.Last }

// AuthenticateConn does everything between Accept and the first served
// packet: the TLS handshake when the listener has TLS, a login by verified
// client certificate when CertLogin is set, otherwise the SASL exchange,
// answering ECHO_REQ meanwhile as the extension allows. Any other packet,
// or an admin text line, gets AUTH_REQUIRED and an ErrAuthRequired error;
// too many failures give ErrAuthFailed. The listener's AuthTimeout (and
// ctx) bound the whole step; on error the caller closes the connection,
// whose error reply has already been written.
func (l *Listener) AuthenticateConn(ctx context.Context, nc net.Conn) (Authenticated, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.AuthTimeout)
	defer cancel()
	if d, ok := ctx.Deadline(); ok {
		nc.SetDeadline(d)
	}
	// Cancellation wakes a blocked read or write.
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	res, err := l.authenticateConn(ctx, nc)
	if err != nil && (ctx.Err() != nil || errors.Is(err, os.ErrDeadlineExceeded)) {
		// The connection's deadline may fire a moment before ctx
		// notices its own.
		cause := ctx.Err()
		if cause == nil {
			cause = context.DeadlineExceeded
		}
		err = fmt.Errorf("authentication not finished in time: %w", cause)
	}
	if err == nil {
		nc.SetDeadline(time.Time{})
	}
	return res, err
}

func (l *Listener) authenticateConn(ctx context.Context, nc net.Conn) (Authenticated, error) {
	info := ConnInfo{Remote: nc.RemoteAddr()}
	if l.cfg.TLS != nil {
		tc, err := ServerHandshake(ctx, nc, l.cfg.TLS)
		if err != nil {
			return Authenticated{}, err
		}
		cs := tc.ConnectionState()
		info.TLS = &cs
		nc = tc
	}
	conv := l.NewConversation(info)
	if l.cfg.CertLogin && info.TLS != nil && len(info.TLS.VerifiedChains) > 0 {
		if u, err := conv.AuthenticateCertificate(); err == nil {
			return Authenticated{Conn: nc, User: u, Mechanism: "certificate"}, nil
		}
		// An unmapped certificate may still log in with SASL.
	}
	tee := &tailReader{r: nc}
	r := protocol.NewReader(tee, protocol.ReaderOptions{Expect: protocol.Req, MaxData: maxPreAuthData, Text: true})
	var p protocol.Packet
	for {
		if err := r.Read(&p); err != nil {
			var fe *protocol.FrameError
			if errors.As(err, &fe) {
				nc.Write(protocol.AppendError(nil, fe.Code, fe.Error()))
			}
			if last := conv.failed; last != nil && fe == nil {
				return Authenticated{}, &FailedEnd{Last: last, End: err}
			}
			return Authenticated{}, err
		}
		tee.keep(r.Buffered())
		switch p.Type {
		case protocol.SASLMechsReq, protocol.SASLStart, protocol.SASLStep:
			rep := conv.Handle(ctx, &p)
			if _, err := nc.Write(rep.Packet); err != nil {
				return Authenticated{}, err
			}
			if rep.User != nil {
				return Authenticated{Conn: nc, Buffered: tee.tail(), User: rep.User, Mechanism: conv.mechName}, nil
			}
			if rep.Close {
				return Authenticated{}, ErrAuthFailed
			}
		case protocol.EchoReq:
			if _, err := nc.Write(protocol.AppendPacket(nil, protocol.Res, protocol.EchoRes, p.Data())); err != nil {
				return Authenticated{}, err
			}
		case protocol.Text:
			nc.Write(AppendTextAuthRequired(nil))
			return Authenticated{}, ErrAuthRequired
		default:
			nc.Write(AppendAuthRequired(nil))
			return Authenticated{}, fmt.Errorf("%w: %s", ErrAuthRequired, p.Type)
		}
	}
}

// tailReader passes reads through and remembers the bytes the packet
// reader has buffered but not yet consumed, so that what follows the
// exchange can be handed to the session.
type tailReader struct {
	r   io.Reader
	buf []byte
}

func (t *tailReader) Read(b []byte) (int, error) {
	n, err := t.r.Read(b)
	t.buf = append(t.buf, b[:n]...)
	return n, err
}

// keep drops all but the last n bytes: everything before them has been
// consumed as packets.
func (t *tailReader) keep(n int) {
	if drop := len(t.buf) - n; drop > 0 {
		t.buf = append(t.buf[:0], t.buf[drop:]...)
	}
}

func (t *tailReader) tail() []byte {
	if len(t.buf) == 0 {
		return nil
	}
	return append([]byte(nil), t.buf...)
}
