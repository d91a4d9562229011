package proxy

import (
	"context"
	"net"

	"github.com/gearproxy/gearproxy/auth"
)

// Verb is what a user asks to do, as ACLs name it.
type Verb uint8

const (
	// Submit covers SUBMIT_JOB* (the name is the function).
	Submit Verb = iota + 1
	// Work covers CAN_DO and CAN_DO_TIMEOUT (the name is the function).
	Work
	// Admin covers admin text commands (the name is the command).
	Admin
)

func (v Verb) String() string {
	switch v {
	case Submit:
		return "submit"
	case Work:
		return "work"
	case Admin:
		return "admin"
	}
	return "verb?"
}

// Access decides what a user who is not a superuser may do. The auth
// package provides it; it must be safe for concurrent use and should cache
// its decisions, since it is asked for every submit.
type Access interface {
	Allow(v Verb, name []byte) bool
}

// Identity is who a session acts as. It is fixed once authentication ends.
type Identity struct {
	// User names the user; it is bound into every job handle the session
	// is given, so a handle answers only the user it was issued to.
	User string
	// Superuser may do everything.
	Superuser bool
	// Access decides for everyone else. Nil denies everything: ACLs fail
	// closed.
	Access Access
	// Namespace prefixes the user's function names and unique IDs on
	// the way to a backend and is stripped on the way back, so tenants
	// neither see, coalesce with, nor query each other's jobs.
	Namespace auth.Namespace
	// MaxPayload caps the data of one submit (0: only the packet limit).
	MaxPayload int64
}

// Allow reports whether the identity may do v on name.
func (id *Identity) Allow(v Verb, name []byte) bool {
	if id.Superuser {
		return true
	}
	return id.Access != nil && id.Access.Allow(v, name)
}

// Authenticated is the outcome of authenticating a connection.
type Authenticated struct {
	// Conn is the connection to serve: the accepted one, or a wrapper
	// such as a *tls.Conn.
	Conn net.Conn
	// Buffered holds bytes the authenticator read past the end of the
	// exchange (a client that pipelines its first request behind
	// SASL_STEP); the session reads them first.
	Buffered []byte
	Identity Identity
}

// Authenticator learns who is on a new connection before the session
// serves a single packet. It runs on the session's goroutine with ctx
// bounded by the listener's authentication timeout; it may wrap the
// connection (TLS) and speak the SASL extension on it. On failure it
// writes its own error reply to the peer, and the session closes the
// connection with the returned error as the reason.
type Authenticator interface {
	Authenticate(ctx context.Context, conn net.Conn) (Authenticated, error)
}

// FixedUser is the Authenticator of a listener that does not authenticate:
// every connection acts as one configured user (`user = "local"`).
type FixedUser Identity

// Authenticate returns the fixed identity at once.
func (f FixedUser) Authenticate(_ context.Context, conn net.Conn) (Authenticated, error) {
	return Authenticated{Conn: conn, Identity: Identity(f)}, nil
}
