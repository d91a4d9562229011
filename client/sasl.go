package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/gearproxy/gearproxy/protocol"
	"github.com/xdg-go/scram"
)

// Mechanism names of the SASL extension.
const (
	MechPlain     = "PLAIN"
	MechSCRAM     = "SCRAM-SHA-256"
	MechSCRAMPlus = "SCRAM-SHA-256-PLUS"
	MechExternal  = "EXTERNAL"
)

// Credentials say how to authenticate to a server that speaks the SASL
// extension (gearproxy).
type Credentials struct {
	// Mechanism is PLAIN, SCRAM-SHA-256, SCRAM-SHA-256-PLUS or EXTERNAL.
	// Empty picks the best the server offers: with a password
	// SCRAM-SHA-256-PLUS, then SCRAM-SHA-256; then EXTERNAL (offered only
	// when the server verified our client certificate); then PLAIN over
	// TLS.
	Mechanism string
	Username  string
	Password  string
	// AuthzID may restate Username; gearproxy refuses any other value.
	AuthzID string
	// InsecurePlain allows PLAIN without TLS. RFC 4616 section 4: only on
	// a network you trust, since the password travels in clear.
	InsecurePlain bool
}

// AuthError is the server's refusal of an authentication: its ERROR code
// (AUTH_FAILED, AUTH_MECH_UNSUPPORTED, ...) and text. Retrying with the
// same credentials will not help.
type AuthError struct {
	Code string
	Text string
}

func (e *AuthError) Error() string { return "authentication refused: " + e.Code + ": " + e.Text }

// ErrNoSASL is returned when the server answers SASL_MECHS_REQ with an
// ERROR or by closing the connection (what gearmand 1.1.20 does): a plain
// Gearman server, which has no authentication.
var ErrNoSASL = errors.New("server does not support the SASL extension")

// Authenticate runs the SASL extension's exchange on a fresh connection
// (a *tls.Conn for TLS) and returns the user name the server
// authenticated. The connection must not have been used yet: the exchange
// is the first thing on it. It is exported for relays such as `gearproxy
// connect` that then pass the connection's bytes through unchanged.
func Authenticate(ctx context.Context, nc net.Conn, creds Credentials) (string, error) {
	if d, ok := ctx.Deadline(); ok {
		nc.SetDeadline(d)
		defer nc.SetDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(aLongTimeAgo()) })
	defer stop()
	w := protocol.NewWriter(nc)
	// A one-byte buffer would be safest, but the server says nothing
	// after SASL_OK until spoken to, so the Reader cannot read ahead.
	r := protocol.NewReader(nc, protocol.ReaderOptions{Expect: protocol.Res, MaxData: 1 << 16})
	user, err := authenticate(w, r, creds, connTLS(nc))
	if ctx.Err() != nil {
		return "", ctx.Err()
	}
	return user, err
}

func connTLS(nc net.Conn) *tls.ConnectionState {
	if tc, ok := nc.(*tls.Conn); ok {
		cs := tc.ConnectionState()
		return &cs
	}
	return nil
}

// saslClient is one mechanism's client side.
type saslClient interface {
	start() ([]byte, error)
	next(challenge []byte) ([]byte, error)
	// finish checks the server's final data in SASL_OK.
	finish(data []byte) error
}

// authenticate runs the exchange over w and r.
func authenticate(w *protocol.Writer, r *protocol.Reader, creds Credentials, cs *tls.ConnectionState) (string, error) {
	if err := send(w, protocol.SASLMechsReq); err != nil {
		return "", err
	}
	var p protocol.Packet
	if err := r.Read(&p); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			// gearmand 1.1.20 closes the connection on a packet type
			// above 42 instead of answering ERROR.
			return "", fmt.Errorf("%w (connection closed at SASL_MECHS_REQ)", ErrNoSASL)
		}
		return "", fmt.Errorf("read SASL_MECHS_RES: %w", err)
	}
	switch p.Type {
	case protocol.SASLMechsRes:
	case protocol.Error:
		if user, ok := certificateLogin(&p, creds, cs); ok {
			return user, nil
		}
		return "", fmt.Errorf("%w (%s: %s)", ErrNoSASL, p.Arg(0), p.Arg(1))
	default:
		return "", fmt.Errorf("unexpected %s in reply to SASL_MECHS_REQ", p.Type)
	}
	offered := strings.Fields(string(p.Arg(0)))
	mech, err := chooseMechanism(creds, offered, cs)
	if err != nil {
		return "", err
	}
	sc, err := newSASLClient(mech, creds, cs, slices.Contains(offered, MechSCRAMPlus))
	if err != nil {
		return "", err
	}
	ir, err := sc.start()
	if err != nil {
		return "", err
	}
	if err := send(w, protocol.SASLStart, []byte(mech), ir); err != nil {
		return "", err
	}
	for {
		if err := r.Read(&p); err != nil {
			return "", fmt.Errorf("read SASL reply: %w", err)
		}
		switch p.Type {
		case protocol.SASLChallenge:
			resp, err := sc.next(p.Arg(0))
			if err != nil {
				return "", fmt.Errorf("%s: %w", mech, err)
			}
			if err := send(w, protocol.SASLStep, resp); err != nil {
				return "", err
			}
		case protocol.SASLOK:
			user := string(p.Arg(0))
			if err := sc.finish(p.Arg(1)); err != nil {
				// The server could not prove it knows the verifier:
				// it is not the server we meant to talk to.
				return "", fmt.Errorf("%s: server not authenticated: %w", mech, err)
			}
			return user, nil
		case protocol.Error:
			return "", &AuthError{Code: string(p.Arg(0)), Text: string(p.Arg(1))}
		default:
			return "", fmt.Errorf("unexpected %s during SASL exchange", p.Type)
		}
	}
}

// alreadyAuthenticated is how gearproxy words AUTH_SEQUENCE on a
// connection that is logged in already; the user name follows it.
const alreadyAuthenticated = "already authenticated as "

// certificateLogin recognises a server that logged the connection in by its
// client certificate at the end of the TLS handshake (sasl-extension.md
// allows it, so that unmodified TLS clients need no SASL): it answers
// SASL_MECHS_REQ with AUTH_SEQUENCE, since the identity can never change
// again. That is the outcome EXTERNAL asks for, so it counts as success
// when the caller asked for EXTERNAL or for no particular mechanism, and
// only over TLS; a caller who asked for a password login gets the error.
func certificateLogin(p *protocol.Packet, creds Credentials, cs *tls.ConnectionState) (string, bool) {
	if cs == nil || string(p.Arg(0)) != "AUTH_SEQUENCE" {
		return "", false
	}
	if m := strings.ToUpper(creds.Mechanism); m != "" && m != MechExternal {
		return "", false
	}
	user, found := strings.CutPrefix(string(p.Arg(1)), alreadyAuthenticated)
	if !found {
		user = ""
	}
	return user, true
}

func send(w *protocol.Writer, t protocol.Type, args ...[]byte) error {
	if err := w.WritePacket(protocol.Req, t, args...); err != nil {
		return err
	}
	return w.Flush()
}

func chooseMechanism(creds Credentials, offered []string, cs *tls.ConnectionState) (string, error) {
	if creds.Mechanism != "" {
		m := strings.ToUpper(creds.Mechanism)
		if !slices.Contains(offered, m) {
			return "", fmt.Errorf("server does not offer %s (offers %v)", m, offered)
		}
		if m == MechPlain && cs == nil && !creds.InsecurePlain {
			return "", errors.New("PLAIN without TLS sends the password in clear; set InsecurePlain to allow it")
		}
		return m, nil
	}
	for _, m := range []string{MechSCRAMPlus, MechSCRAM, MechExternal, MechPlain} {
		if !slices.Contains(offered, m) {
			continue
		}
		switch m {
		case MechSCRAMPlus, MechSCRAM, MechPlain:
			if creds.Password == "" {
				continue
			}
			if m == MechPlain && cs == nil && !creds.InsecurePlain {
				continue
			}
			if m == MechSCRAMPlus {
				if _, err := exporterBinding(cs); err != nil {
					continue
				}
			}
		case MechExternal:
			// gearproxy offers EXTERNAL only to a connection whose
			// client certificate it verified, so its presence in the
			// list is the signal.
		}
		return m, nil
	}
	return "", fmt.Errorf("no usable SASL mechanism among %v", offered)
}

func exporterBinding(cs *tls.ConnectionState) (scram.ChannelBinding, error) {
	if cs == nil {
		return scram.ChannelBinding{}, errors.New("not TLS")
	}
	return scram.NewTLSExporterBinding(cs)
}

func newSASLClient(mech string, creds Credentials, cs *tls.ConnectionState, plusOffered bool) (saslClient, error) {
	switch mech {
	case MechPlain:
		return &goSASL{c: sasl.NewPlainClient(creds.AuthzID, creds.Username, creds.Password)}, nil
	case MechExternal:
		return &goSASL{c: sasl.NewExternalClient(creds.AuthzID)}, nil
	case MechSCRAM, MechSCRAMPlus:
		cl, err := scram.SHA256.NewClient(creds.Username, creds.Password, creds.AuthzID)
		if err != nil {
			return nil, err
		}
		var conv *scram.ClientConversation
		if mech == MechSCRAMPlus {
			cb, err := exporterBinding(cs)
			if err != nil {
				return nil, err
			}
			conv = cl.NewConversationWithChannelBinding(cb)
		} else if _, err := exporterBinding(cs); err == nil && !plusOffered {
			// We could bind but saw no -PLUS offered: say so ("y"), so
			// that a server which did offer it (the list was altered
			// on the way) spots the downgrade (RFC 5802 section 6).
			// Having seen -PLUS and chosen plain SCRAM, we say "n".
			conv = cl.NewConversationAdvertisingChannelBinding()
		} else {
			conv = cl.NewConversation()
		}
		return &scramClient{conv: conv}, nil
	}
	return nil, fmt.Errorf("unsupported mechanism %s", mech)
}

// goSASL adapts a go-sasl client (PLAIN, EXTERNAL): both send everything
// in the initial response.
type goSASL struct{ c sasl.Client }

func (g *goSASL) start() ([]byte, error) {
	_, ir, err := g.c.Start()
	return ir, err
}

func (g *goSASL) next(challenge []byte) ([]byte, error) {
	if len(challenge) == 0 {
		// The server asked for the initial response we sent empty.
		_, ir, err := g.c.Start()
		return ir, err
	}
	return g.c.Next(challenge)
}

func (g *goSASL) finish([]byte) error { return nil }

type scramClient struct{ conv *scram.ClientConversation }

func (s *scramClient) start() ([]byte, error) {
	first, err := s.conv.Step("")
	return []byte(first), err
}

func (s *scramClient) next(challenge []byte) ([]byte, error) {
	out, err := s.conv.Step(string(challenge))
	return []byte(out), err
}

// finish verifies the server-final-message: RFC 5802's mutual
// authentication, which SASL_OK carries as its final data.
func (s *scramClient) finish(data []byte) error {
	if _, err := s.conv.Step(string(data)); err != nil {
		return err
	}
	if !s.conv.Valid() {
		return errors.New("invalid server signature")
	}
	return nil
}
