package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	"github.com/gearproxy/gearproxy/auth"
	"github.com/gearproxy/gearproxy/protocol"
)

// Gate is the Authenticator of a listener in front of the auth package:
// TLS, then a client certificate or SASL (auth.Listener.AuthenticateConn),
// or, for a listener with `user = "..."`, TLS if configured and that user.
// It enforces each user's max_connections and gives every session its
// own cached auth.Permissions, which a reload resets through Live.
type Gate struct {
	// Name identifies the listener in audit lines.
	Name string
	// Auth authenticates each connection; nil for a fixed-user listener.
	Auth *auth.Listener
	// FixedUser is the user of a listener that does not authenticate.
	FixedUser string
	// TLS wraps a fixed-user listener's connections (Auth does its own).
	TLS   auth.TLSSource
	Users *auth.UserStore
	Conns *auth.Connections
	Audit *auth.Auditor
	Live  *LiveUsers
}

// ErrTooManyConnections is returned when a user already holds its
// max_connections.
var ErrTooManyConnections = errors.New("user has max_connections open")

// Authenticate implements Authenticator.
func (g *Gate) Authenticate(ctx context.Context, nc net.Conn) (Authenticated, error) {
	source := nc.RemoteAddr().String()
	var res auth.Authenticated
	if g.Auth != nil {
		r, err := g.Auth.AuthenticateConn(ctx, nc)
		if err != nil {
			// A SASL failure was audited by the conversation itself;
			// the rest (TLS, packets before authentication, time) here,
			// except a peer that hung up first: port probes and load
			// balancer health checks do that all day.
			// A CA's ACME probe is expected traffic too.
			if !errors.Is(err, auth.ErrAuthFailed) && !errors.Is(err, io.EOF) && !errors.Is(err, auth.ErrACMEChallenge) {
				g.Audit.AuthFailure("", source, g.Name, "", err.Error())
			}
			return Authenticated{}, err
		}
		res = r
	} else {
		conn := nc
		if g.TLS != nil {
			tc, err := auth.ServerHandshake(ctx, nc, g.TLS)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, auth.ErrACMEChallenge) {
					g.Audit.AuthFailure("", source, g.Name, "", err.Error())
				}
				return Authenticated{}, err
			}
			conn = tc
		}
		u, ok := g.Users.Users().Lookup(g.FixedUser)
		if !ok || u.Disabled {
			conn.Write(protocol.AppendError(nil, auth.CodeAuthFailed, "listener user is disabled"))
			return Authenticated{}, fmt.Errorf("listener user %q is gone or disabled", g.FixedUser)
		}
		res = auth.Authenticated{Conn: conn, User: u, Mechanism: "listener"}
	}
	release, ok := g.Conns.Acquire(res.User)
	if !ok {
		g.Audit.AuthFailure(res.User.Name, source, g.Name, res.Mechanism, "max_connections")
		res.Conn.Write(protocol.AppendError(nil, "TOO_MANY_CONNECTIONS", fmt.Sprintf("user %s has its max_connections (%d) open", res.User.Name, res.User.MaxConnections)))
		return Authenticated{}, ErrTooManyConnections
	}
	perm := auth.NewPermissions(res.User).WithAudit(g.Audit, source)
	c := &liveConn{Conn: res.Conn, release: release, user: res.User, perm: perm, live: g.Live}
	g.Live.add(c)
	return Authenticated{Conn: c, Buffered: res.Buffered, Identity: Identity{
		User: res.User.Name,
		// A superuser with no rules skips the ACL and the filters; one
		// with deny rules (they bind superusers too) or a namespace
		// goes through them, and the ACL allows it the rest.
		Superuser:  res.User.Superuser && res.User.Namespace == "" && res.User.ACL.Rules() == 0,
		Access:     access{perm: perm, audit: g.Audit, source: source},
		Namespace:  res.User.Namespace,
		MaxPayload: res.User.MaxPayload,
	}}, nil
}

// access adapts auth.Permissions to the proxy's Access.
type access struct {
	perm   *auth.Permissions
	audit  *auth.Auditor
	source string
}

func authVerb(v Verb) auth.Verb {
	switch v {
	case Submit:
		return auth.Submit
	case Work:
		return auth.Work
	}
	return auth.Admin
}

func (a access) Allow(v Verb, name []byte) bool { return a.perm.Allow(authVerb(v), name) }

// Visible reports whether an admin listing may show the function.
func (a access) Visible(fn []byte) bool { return a.perm.Visible(fn) }

// DeniedPayload audits a submit refused for max_payload.
func (a access) DeniedPayload(user string, fn []byte) {
	a.audit.Denied(user, a.source, auth.Submit, string(fn), auth.Decision{Rule: "max_payload"})
}

// liveConn is an authenticated connection: it gives the user's connection
// slot back when the session closes it, and a reload can find it.
type liveConn struct {
	net.Conn
	release func()
	live    *LiveUsers
	once    sync.Once
	perm    *auth.Permissions

	mu   sync.Mutex
	user *auth.User
}

func (c *liveConn) Close() error {
	c.once.Do(func() {
		c.release()
		c.live.remove(c)
	})
	return c.Conn.Close()
}

// sameShape reports whether a reloaded user can keep its sessions: what
// the session copied at authentication (superuser, namespace, payload cap)
// did not change. Its ACL may change: Permissions.Reset applies it.
func sameShape(old, cur *auth.User) bool {
	return old.Superuser == cur.Superuser && old.Namespace == cur.Namespace &&
		old.MaxPayload == cur.MaxPayload && (old.ACL.Rules() == 0) == (cur.ACL.Rules() == 0)
}

// LiveUsers is every authenticated connection, for reloads.
type LiveUsers struct {
	mu    sync.Mutex
	conns map[*liveConn]struct{}
}

// NewLiveUsers returns an empty set.
func NewLiveUsers() *LiveUsers { return &LiveUsers{conns: map[*liveConn]struct{}{}} }

func (l *LiveUsers) add(c *liveConn) {
	l.mu.Lock()
	l.conns[c] = struct{}{}
	l.mu.Unlock()
}

func (l *LiveUsers) remove(c *liveConn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
}

// Recheck applies a reloaded set of users to every live connection: one
// whose user was removed or disabled is closed, the others see their new
// ACL from their next packet. It returns how many were closed.
func (l *LiveUsers) Recheck(us *auth.Users) (closed int) {
	l.mu.Lock()
	conns := make([]*liveConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.mu.Lock()
		u, ok := us.Recheck(c.user)
		if ok && !sameShape(c.user, u) {
			// The session's identity was fixed at authentication:
			// it must log in again to get the new one.
			ok = false
		}
		if ok {
			c.user = u
		}
		c.mu.Unlock()
		if !ok {
			c.Close()
			closed++
			continue
		}
		c.perm.Reset(u)
	}
	return closed
}
