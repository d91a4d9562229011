package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/gearproxy/gearproxy/protocol"
	"github.com/xdg-go/scram"
)

// Mechanism names (RFC 4616 PLAIN, RFC 7677 SCRAM-SHA-256 and its channel
// bound -PLUS variant, RFC 4422 appendix A EXTERNAL, RFC 4505 ANONYMOUS).
const (
	MechPlain       = "PLAIN"
	MechSCRAM       = "SCRAM-SHA-256"
	MechSCRAMPlus   = "SCRAM-SHA-256-PLUS"
	MechExternal    = "EXTERNAL"
	MechAnonymous   = "ANONYMOUS"
	failedText      = "authentication failed"
	sequenceText    = "no authentication exchange in progress"
	alreadyAuthText = "already authenticated"
)

// ERROR codes of the SASL extension (sasl-extension.md).
const (
	CodeAuthRequired     = "AUTH_REQUIRED"
	CodeAuthFailed       = "AUTH_FAILED"
	CodeMechUnsupported  = "AUTH_MECH_UNSUPPORTED"
	CodeAuthSequence     = "AUTH_SEQUENCE"
	CodePermissionDenied = "PERMISSION_DENIED"
)

// Defaults for Options and ListenerConfig.
const (
	DefaultFailureDelay    = 100 * time.Millisecond
	DefaultMaxAuthFailures = 3
	DefaultAuthTimeout     = 10 * time.Second
	DefaultSourceFailures  = 30
	DefaultSourceWindow    = 10 * time.Minute
	DefaultSourceTableSize = 1 << 16
	// MaxSASLData bounds one mechanism message. The largest legitimate one
	// is a SCRAM client-final-message, well under 1 KiB; anything much
	// bigger is garbage and is refused before a mechanism parses it.
	MaxSASLData = 8 << 10
)

// Options configure an Authenticator.
type Options struct {
	// Users is the user store; required.
	Users *UserStore
	// Secret keys the made-up SCRAM credentials of unknown users. Give
	// every proxy instance the same secret, or a client could tell an
	// unknown user by the salt changing between instances or restarts.
	// Empty means a random secret for this process.
	Secret []byte
	// FailureDelay is how long a failed authentication takes at least,
	// counted from the arrival of the packet that failed; default (and
	// minimum) 100 ms.
	FailureDelay time.Duration
	// SourceFailures is each source address's failure budget within
	// SourceWindow (default 30 per 10 minutes); SourceTableSize bounds how
	// many sources are remembered.
	SourceFailures  int
	SourceWindow    time.Duration
	SourceTableSize int
	// Audit receives an event per success and failure; nil discards.
	Audit *Auditor
	// Logger gets operational messages (a contained panic); nil discards.
	Logger *slog.Logger
	// Now and Sleep are the clock, replaceable in tests. Sleep must return
	// early with ctx's error when ctx is done.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
}

// Authenticator is the server side of the SASL extension for the whole
// process: the user store, the per-source failure budget and the secret
// behind fake credentials. Create one and share it between listeners; a
// reload swaps users in its UserStore, it does not make a new Authenticator.
type Authenticator struct {
	opts    Options
	secret  []byte
	sources *failureBudget
	log     *slog.Logger
}

// NewAuthenticator checks opts, fills in defaults and returns an
// Authenticator.
func NewAuthenticator(opts Options) (*Authenticator, error) {
	if opts.Users == nil {
		return nil, errors.New("auth: Options.Users is required")
	}
	if opts.FailureDelay < DefaultFailureDelay {
		opts.FailureDelay = DefaultFailureDelay
	}
	if opts.SourceFailures <= 0 {
		opts.SourceFailures = DefaultSourceFailures
	}
	if opts.SourceWindow <= 0 {
		opts.SourceWindow = DefaultSourceWindow
	}
	if opts.SourceTableSize <= 0 {
		opts.SourceTableSize = DefaultSourceTableSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = sleepContext
	}
	a := &Authenticator{opts: opts, log: opts.Logger}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	a.secret = opts.Secret
	if len(a.secret) == 0 {
		a.secret = make([]byte, 32)
		if _, err := rand.Read(a.secret); err != nil {
			return nil, err
		}
	}
	a.sources = newFailureBudget(opts.SourceFailures, opts.SourceTableSize, opts.SourceWindow)
	return a, nil
}

func sleepContext(ctx context.Context, d time.Duration) error {
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

// ListenerConfig is the authentication part of one [[listener]].
type ListenerConfig struct {
	// Name identifies the listener in audit lines (its address will do).
	Name string
	// Mechanisms offered, in order of preference.
	Mechanisms []string
	// InsecurePlain allows PLAIN without TLS, for a listener on a trusted
	// network only: RFC 4616 section 4 forbids clear-text passwords on an
	// unprotected channel.
	InsecurePlain bool
	// AnonymousUser is the user ANONYMOUS logs in as; empty disables it.
	AnonymousUser string
	// MaxAuthFailures closes a connection after that many failures;
	// default 3.
	MaxAuthFailures int
	// CertMapping says how a verified client certificate names a user,
	// for EXTERNAL and for authentication at the TLS handshake.
	CertMapping CertMapping
	// TLS, when set, makes AuthenticateConn run the TLS handshake first:
	// a *TLSServer for certificate files, an *ACME for automatic ones.
	TLS TLSSource
	// AuthTimeout bounds the TLS handshake and the authentication in
	// AuthenticateConn (auth_timeout); default 10 s. A peer that never
	// sends a ClientHello or never finishes SASL is cut off then.
	AuthTimeout time.Duration
	// CertLogin authenticates a connection whose verified client
	// certificate maps to a user at the end of the TLS handshake, so that
	// unmodified TLS clients need no SASL (sasl-extension.md allows it).
	CertLogin bool
}

// Listener is a checked ListenerConfig bound to an Authenticator.
type Listener struct {
	a   *Authenticator
	cfg ListenerConfig
	// mechs makes a mechanism's server side by name; tests add to it.
	mechs map[string]mechFactory
}

// Listener checks cfg and returns the Listener that starts conversations.
func (a *Authenticator) Listener(cfg ListenerConfig) (*Listener, error) {
	if cfg.MaxAuthFailures <= 0 {
		cfg.MaxAuthFailures = DefaultMaxAuthFailures
	}
	if cfg.AuthTimeout <= 0 {
		cfg.AuthTimeout = DefaultAuthTimeout
	}
	if err := cfg.CertMapping.validate(); err != nil {
		return nil, fmt.Errorf("listener %s: %w", cfg.Name, err)
	}
	l := &Listener{a: a, cfg: cfg, mechs: map[string]mechFactory{
		MechPlain:     newPlainMech,
		MechSCRAM:     newSCRAMMech,
		MechSCRAMPlus: newSCRAMMech,
		MechExternal:  newExternalMech,
		MechAnonymous: newAnonymousMech,
	}}
	// Our own copy: the names are upper-cased in place.
	cfg.Mechanisms = slices.Clone(cfg.Mechanisms)
	cfg.CertMapping.From = slices.Clone(cfg.CertMapping.From)
	seen := map[string]bool{}
	for i, m := range cfg.Mechanisms {
		m = strings.ToUpper(m)
		cfg.Mechanisms[i] = m
		if _, ok := l.mechs[m]; !ok {
			return nil, fmt.Errorf("listener %s: unknown SASL mechanism %q (have PLAIN, SCRAM-SHA-256, SCRAM-SHA-256-PLUS, EXTERNAL, ANONYMOUS)", cfg.Name, m)
		}
		if seen[m] {
			return nil, fmt.Errorf("listener %s: SASL mechanism %s listed twice", cfg.Name, m)
		}
		seen[m] = true
	}
	if cfg.CertLogin && cfg.TLS == nil {
		return nil, fmt.Errorf("listener %s: certificate login needs TLS", cfg.Name)
	}
	if seen[MechAnonymous] != (cfg.AnonymousUser != "") {
		return nil, fmt.Errorf("listener %s: ANONYMOUS must be listed exactly when anonymous_user is set", cfg.Name)
	}
	if cfg.AnonymousUser != "" {
		if _, ok := a.opts.Users.Users().Lookup(cfg.AnonymousUser); !ok {
			return nil, fmt.Errorf("listener %s: anonymous_user %q is not a user", cfg.Name, cfg.AnonymousUser)
		}
	}
	l.cfg = cfg
	return l, nil
}

// ConnInfo is what a conversation knows about its connection.
type ConnInfo struct {
	Remote net.Addr
	// TLS is the state after the handshake, nil on a plaintext listener.
	TLS *tls.ConnectionState
}

type convState uint8

const (
	stateIdle convState = iota
	stateExchange
	stateAuthenticated
	stateClosed
)

// Conversation is one connection's authentication: a state machine the
// session feeds SASL packets into. It is not safe for concurrent use; the
// session's reader goroutine owns it.
type Conversation struct {
	l        *Listener
	conn     ConnInfo
	source   string // for audit lines
	key      string // failure budget key
	mechs    []string
	state    convState
	mech     mechanism
	mechName string
	failures int
	user     *User
	// failed is what went wrong last (ErrAuthFailed, ErrMechUnsupported,
	// ErrSequence), nil while nothing has; see FailedEnd.
	failed error

	cbDone bool
	cb     scram.ChannelBinding
	cbErr  error
}

// NewConversation starts the authentication of one connection.
func (l *Listener) NewConversation(conn ConnInfo) *Conversation {
	c := &Conversation{l: l, conn: conn, key: sourceKey(conn.Remote)}
	if conn.Remote != nil {
		c.source = conn.Remote.String()
	}
	for _, m := range l.cfg.Mechanisms {
		if c.available(m) {
			c.mechs = append(c.mechs, m)
		}
	}
	return c
}

// available says whether mechanism m can run on this connection.
func (c *Conversation) available(m string) bool {
	switch m {
	case MechPlain:
		return c.conn.TLS != nil || c.l.cfg.InsecurePlain
	case MechSCRAMPlus:
		_, err := c.channelBinding()
		return err == nil
	case MechExternal:
		return c.conn.TLS != nil && len(c.conn.TLS.VerifiedChains) > 0
	}
	return true
}

// channelBinding is RFC 9266's tls-exporter binding of the connection,
// available on TLS 1.3 and on TLS 1.2 with extended master secret. It is
// computed once per conversation.
func (c *Conversation) channelBinding() (scram.ChannelBinding, error) {
	if !c.cbDone {
		c.cb, c.cbErr = exporterBinding(c.conn.TLS)
		c.cbDone = true
	}
	return c.cb, c.cbErr
}

func exporterBinding(cs *tls.ConnectionState) (cb scram.ChannelBinding, err error) {
	if cs == nil {
		return cb, errors.New("not TLS")
	}
	// A ConnectionState not made by crypto/tls (a test's, a wrapper's)
	// has no exporter and ExportKeyingMaterial dereferences nil.
	defer func() {
		if recover() != nil {
			cb, err = scram.ChannelBinding{}, errors.New("no keying material exporter")
		}
	}()
	return scram.NewTLSExporterBinding(cs)
}

// Mechanisms returns the mechanisms offered on this connection, in the
// listener's order.
func (c *Conversation) Mechanisms() []string { return slices.Clone(c.mechs) }

// User returns the authenticated user, nil before success.
func (c *Conversation) User() *User { return c.user }

// Reply is what the session does after one packet.
type Reply struct {
	// Packet is one encoded response packet to send, in order.
	Packet []byte
	// User is set on the reply that completes authentication.
	User *User
	// Close asks the session to close after sending Packet: the
	// connection has used up its failures.
	Close bool
}

// Handle processes one SASL_MECHS_REQ, SASL_START or SASL_STEP packet. A
// failure is delayed (Options.FailureDelay from now) before it returns, so
// call it from the connection's own reader; ctx cuts the delay short when
// the session ends. Handle never panics.
func (c *Conversation) Handle(ctx context.Context, p *protocol.Packet) Reply {
	start := c.l.a.opts.Now()
	switch p.Type {
	case protocol.SASLMechsReq:
		return Reply{Packet: protocol.AppendPacket(nil, protocol.Res, protocol.SASLMechsRes, []byte(strings.Join(c.mechs, " ")))}
	case protocol.SASLStart:
		return c.start(ctx, start, string(p.Arg(0)), p.Arg(1))
	case protocol.SASLStep:
		return c.step(ctx, start, p.Arg(0))
	}
	c.failed = ErrSequence
	return Reply{Packet: protocol.AppendError(nil, CodeAuthSequence, "not a SASL packet: "+p.Type.String())}
}

func (c *Conversation) start(ctx context.Context, t0 time.Time, name string, ir []byte) Reply {
	switch c.state {
	case stateAuthenticated:
		c.failed = ErrSequence
		return Reply{Packet: protocol.AppendError(nil, CodeAuthSequence, alreadyAuthText)}
	case stateClosed:
		return Reply{Packet: protocol.AppendError(nil, CodeAuthFailed, failedText), Close: true}
	}
	// A new SASL_START during an exchange abandons it (RFC 4422 section
	// 3.5 lets the client abort); it is not a failure, since no
	// credentials were judged.
	c.mech, c.mechName, c.state = nil, "", stateIdle
	if !slices.Contains(c.mechs, name) {
		c.failed = ErrMechUnsupported
		return Reply{Packet: protocol.AppendError(nil, CodeMechUnsupported, "mechanism not offered: "+clip(name))}
	}
	c.mechName = name
	if c.l.a.sources.exhausted(c.key) {
		return c.fail(ctx, t0, "", "source failure budget spent")
	}
	m, err := c.newMechanism(name)
	if err != nil {
		return c.fail(ctx, t0, "", err.Error())
	}
	c.mech, c.state = m, stateExchange
	if len(ir) == 0 {
		// No initial response: RFC 4422 section 5 has the server send an
		// empty challenge and the client answer with SASL_STEP. EXTERNAL
		// and ANONYMOUS take an empty message as meaning "no authzid" /
		// "no trace" and finish at once.
		if name != MechExternal && name != MechAnonymous {
			return Reply{Packet: protocol.AppendPacket(nil, protocol.Res, protocol.SASLChallenge, nil)}
		}
		ir = []byte{}
	}
	return c.advance(ctx, t0, ir)
}

func (c *Conversation) step(ctx context.Context, t0 time.Time, resp []byte) Reply {
	if c.state == stateClosed {
		return Reply{Packet: protocol.AppendError(nil, CodeAuthFailed, failedText), Close: true}
	}
	if c.state != stateExchange {
		c.failed = ErrSequence
		return Reply{Packet: protocol.AppendError(nil, CodeAuthSequence, sequenceText)}
	}
	if resp == nil {
		resp = []byte{}
	}
	return c.advance(ctx, t0, resp)
}

// advance runs one mechanism step and turns its outcome into a reply.
func (c *Conversation) advance(ctx context.Context, t0 time.Time, msg []byte) Reply {
	if len(msg) > MaxSASLData {
		return c.fail(ctx, t0, c.mech.claimed(), fmt.Sprintf("mechanism message of %d bytes, limit %d", len(msg), MaxSASLData))
	}
	challenge, done, err := c.safeNext(msg)
	if err != nil {
		return c.fail(ctx, t0, c.mech.claimed(), err.Error())
	}
	if !done {
		return Reply{Packet: protocol.AppendPacket(nil, protocol.Res, protocol.SASLChallenge, challenge)}
	}
	u := c.mech.user()
	if u == nil {
		return c.fail(ctx, t0, c.mech.claimed(), "mechanism finished without a user")
	}
	// The user set may have been swapped while the exchange ran: confirm
	// against the current one so a just-disabled user cannot slip in.
	cur, ok := c.l.a.opts.Users.Users().Lookup(u.Name)
	if !ok {
		return c.fail(ctx, t0, u.Name, "user removed")
	}
	u = cur
	if u.Disabled {
		return c.fail(ctx, t0, u.Name, "user disabled")
	}
	c.user, c.state, c.mech = u, stateAuthenticated, nil
	c.l.a.opts.Audit.AuthSuccess(u.Name, c.source, c.l.cfg.Name, c.mechName)
	return Reply{
		Packet: protocol.AppendPacket(nil, protocol.Res, protocol.SASLOK, []byte(u.Name), challenge),
		User:   u,
	}
}

// safeNext calls the mechanism and turns a panic in it (go-sasl's
// OAUTHBEARER server has had one) into an ordinary failure, so one bad
// message cannot take the process down.
func (c *Conversation) safeNext(msg []byte) (challenge []byte, done bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			c.l.a.log.Error("SASL mechanism panicked", "mechanism", c.mechName, "source", c.source,
				"panic", fmt.Sprint(r), "stack", string(debug.Stack()))
			challenge, done, err = nil, false, fmt.Errorf("internal error in %s", c.mechName)
		}
	}()
	return c.mech.next(msg)
}

// fail ends the exchange with AUTH_FAILED. The reply is the same for every
// cause, and it leaves no sooner than FailureDelay after the packet came
// in, so neither its text nor its timing tells an unknown user from a
// wrong password.
func (c *Conversation) fail(ctx context.Context, t0 time.Time, claimed, reason string) Reply {
	a := c.l.a
	c.mech, c.state = nil, stateIdle
	c.failures++
	c.failed = ErrAuthFailed
	a.sources.fail(c.key)
	a.opts.Audit.AuthFailure(claimed, c.source, c.l.cfg.Name, c.mechName, reason)
	wait := a.opts.FailureDelay - a.opts.Now().Sub(t0)
	closeConn := a.opts.Sleep(ctx, wait) != nil
	if c.failures >= c.l.cfg.MaxAuthFailures {
		c.state, closeConn = stateClosed, true
	}
	return Reply{Packet: protocol.AppendError(nil, CodeAuthFailed, failedText), Close: closeConn}
}

// AuthenticateCertificate authenticates the connection by its verified
// client certificate alone, for listeners that accept that at the end of
// the TLS handshake so that unmodified TLS clients need no SASL. It returns
// nil and an error when the certificate maps to no enabled user; the
// failure is audited but does not count against the connection, which may
// still authenticate with SASL.
func (c *Conversation) AuthenticateCertificate() (*User, error) {
	if c.state == stateAuthenticated {
		return c.user, nil
	}
	u, err := c.l.cfg.CertMapping.UserFor(c.l.a.opts.Users.Users(), c.conn.TLS)
	if err == nil && u.Disabled {
		err = errors.New("user disabled")
	}
	if err != nil {
		c.l.a.opts.Audit.AuthFailure("", c.source, c.l.cfg.Name, "certificate", err.Error())
		return nil, err
	}
	c.user, c.state = u, stateAuthenticated
	c.l.a.opts.Audit.AuthSuccess(u.Name, c.source, c.l.cfg.Name, "certificate")
	return u, nil
}

// mechanism is one exchange's server side.
type mechanism interface {
	// next takes the client's message and returns the server's, done
	// when the exchange has succeeded; any error is a failure.
	next(msg []byte) (challenge []byte, done bool, err error)
	// user is the authenticated user once done.
	user() *User
	// claimed is the name the client gave, for the audit line.
	claimed() string
}

type mechFactory func(c *Conversation, name string) (mechanism, error)

func (c *Conversation) newMechanism(name string) (mechanism, error) {
	f := c.l.mechs[name]
	if f == nil {
		return nil, fmt.Errorf("no mechanism %s", name)
	}
	return f(c, name)
}

// errBadCredentials is the one error every credential failure maps to
// before it reaches fail; the audit line gets the detail, the client not.
var errBadCredentials = errors.New("bad credentials")

// fakeVerifier derives stable made-up credentials for a name that is not a
// user, keyed by the server secret: the same name always gets the same
// salt, as a real user would, with the parameters most real users have.
func (a *Authenticator) fakeVerifier(us *Users, name string) Verifier {
	derive := func(label string) []byte {
		m := hmac.New(sha256.New, a.secret)
		m.Write([]byte(label))
		m.Write([]byte{0})
		m.Write([]byte(name))
		return m.Sum(nil)
	}
	iter, saltLen := DefaultIterations, saltSize
	if us != nil {
		iter, saltLen = us.fakeIterations, us.fakeSaltSize
	}
	salt := derive("salt")
	for len(salt) < saltLen {
		salt = append(salt, derive("salt more")...)
	}
	return Verifier{Iterations: iter, Salt: salt[:saltLen], StoredKey: derive("stored"), ServerKey: derive("server")}
}

// baseMech holds what every mechanism remembers.
type baseMech struct {
	c    *Conversation
	name string
	u    *User
}

func (b *baseMech) user() *User     { return b.u }
func (b *baseMech) claimed() string { return b.name }

// checkAuthzID refuses an authorization identity different from the
// authenticated one: gearproxy has no proxy authorization, so a client may
// only restate its own name (RFC 4422 section 3.4.1).
func checkAuthzID(authzid, user string) error {
	if authzid != "" && authzid != user {
		return fmt.Errorf("authorization identity %q differs from %q", clip(authzid), clip(user))
	}
	return nil
}

// plainMech is RFC 4616 PLAIN, verified against the SCRAM verifier.
type plainMech struct {
	baseMech
	srv sasl.Server
}

func newPlainMech(c *Conversation, _ string) (mechanism, error) {
	m := &plainMech{baseMech: baseMech{c: c}}
	m.srv = sasl.NewPlainServer(func(identity, username, password string) error {
		m.name = username
		us := c.l.a.opts.Users.Users()
		u, ok := us.Lookup(username)
		var v Verifier
		if ok && u.verifier != nil {
			v = *u.verifier
		} else {
			// Spend the same key derivation on a name that is not a
			// user (or has no password) as on a real one.
			v = c.l.a.fakeVerifier(us, username)
		}
		good := v.CheckPassword(password)
		if !ok || u.verifier == nil || !good {
			return errBadCredentials
		}
		if err := checkAuthzID(identity, username); err != nil {
			return err
		}
		m.u = u
		return nil
	})
	return m, nil
}

func (m *plainMech) next(msg []byte) ([]byte, bool, error) { return m.srv.Next(msg) }

// scramMech is RFC 5802/7677 SCRAM-SHA-256 (and -PLUS with RFC 9266's
// tls-exporter channel binding), run by xdg-go/scram.
type scramMech struct {
	baseMech
	conv *scram.ServerConversation
	// known is false while the name is not a user with a password: the
	// exchange runs to the end on fake credentials and then fails.
	known bool
}

func newSCRAMMech(c *Conversation, name string) (mechanism, error) {
	m := &scramMech{baseMech: baseMech{c: c}}
	us := c.l.a.opts.Users.Users()
	srv, err := scram.SHA256.NewServer(func(username string) (scram.StoredCredentials, error) {
		m.name = username
		u, ok := us.Lookup(username)
		if !ok || u.verifier == nil {
			return c.l.a.fakeVerifier(us, username).credentials(), nil
		}
		m.u, m.known = u, true
		return u.verifier.credentials(), nil
	})
	if err != nil {
		return nil, err
	}
	cb, cbErr := c.channelBinding()
	switch {
	case name == MechSCRAMPlus:
		if cbErr != nil {
			return nil, cbErr
		}
		m.conv = srv.NewConversationWithChannelBindingRequired(cb)
	case cbErr == nil && slices.Contains(c.mechs, MechSCRAMPlus):
		// We advertise -PLUS: telling the library lets it catch a client
		// that says "y" (it supports binding but thinks we do not), the
		// sign of a downgrade by a man in the middle (RFC 5802 section 6).
		m.conv = srv.NewConversationWithChannelBinding(cb)
	default:
		m.conv = srv.NewConversation()
	}
	return m, nil
}

func (m *scramMech) next(msg []byte) ([]byte, bool, error) {
	out, err := m.conv.Step(string(msg))
	if err != nil {
		m.u = nil
		return nil, false, err
	}
	if !m.conv.Done() {
		return []byte(out), false, nil
	}
	if !m.conv.Valid() || !m.known {
		m.u = nil
		return nil, false, errBadCredentials
	}
	if err := checkAuthzID(m.conv.AuthzID(), m.conv.Username()); err != nil {
		m.u = nil
		return nil, false, err
	}
	// The server-final-message ("v=...") travels in SASL_OK, so the
	// client can verify the server too.
	return []byte(out), true, nil
}

// externalMech is RFC 4422 appendix A EXTERNAL: the TLS layer has already
// authenticated the client certificate; the message is only an optional
// authorization identity, which must name the certificate's own user.
type externalMech struct {
	baseMech
	srv sasl.Server
}

func newExternalMech(c *Conversation, _ string) (mechanism, error) {
	m := &externalMech{baseMech: baseMech{c: c}}
	m.srv = sasl.NewExternalServer(func(identity string) error {
		m.name = identity
		u, err := c.l.cfg.CertMapping.UserFor(c.l.a.opts.Users.Users(), c.conn.TLS)
		if err != nil {
			return err
		}
		if err := checkAuthzID(identity, u.Name); err != nil {
			return err
		}
		m.u, m.name = u, u.Name
		return nil
	})
	return m, nil
}

func (m *externalMech) next(msg []byte) ([]byte, bool, error) { return m.srv.Next(msg) }

// anonymousMech is RFC 4505 ANONYMOUS, logging in as the listener's
// anonymous user; the trace message is only logged.
type anonymousMech struct {
	baseMech
	srv sasl.Server
}

func newAnonymousMech(c *Conversation, _ string) (mechanism, error) {
	m := &anonymousMech{baseMech: baseMech{c: c}}
	m.srv = sasl.NewAnonymousServer(func(trace string) error {
		m.name = "anonymous"
		u, ok := c.l.a.opts.Users.Users().Lookup(c.l.cfg.AnonymousUser)
		if !ok {
			return errors.New("anonymous user no longer exists")
		}
		m.u = u
		return nil
	})
	return m, nil
}

func (m *anonymousMech) next(msg []byte) ([]byte, bool, error) { return m.srv.Next(msg) }

// AppendAuthRequired appends the ERROR AUTH_REQUIRED packet a session
// sends, before closing, for a packet that needs authentication first.
func AppendAuthRequired(dst []byte) []byte {
	return protocol.AppendError(dst, CodeAuthRequired, "authenticate first (SASL_MECHS_REQ, SASL_START)")
}

// AppendTextAuthRequired is AppendAuthRequired for an admin text line.
func AppendTextAuthRequired(dst []byte) []byte {
	return protocol.AppendTextError(dst, CodeAuthRequired, "authenticate first")
}

// AppendPermissionDenied appends ERROR PERMISSION_DENIED for a denied verb
// on name. It names only what the client itself sent, so it leaks nothing
// about other users' functions.
func AppendPermissionDenied(dst []byte, v Verb, name []byte) []byte {
	return protocol.AppendError(dst, CodePermissionDenied, v.String()+" "+clip(string(name))+" not permitted")
}

// AppendTextPermissionDenied is AppendPermissionDenied for an admin line.
func AppendTextPermissionDenied(dst []byte, command string) []byte {
	return protocol.AppendTextError(dst, CodePermissionDenied, clip(command)+" not permitted")
}
