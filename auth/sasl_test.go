package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
	"github.com/xdg-go/scram"
)

func saslUsers(t testing.TB) []UserConfig {
	return []UserConfig{
		{Name: "alice", Password: verifierFor(t, "s3cret"), Certificates: []string{"CN=alice-worker", "URI=spiffe://example.org/alice"}},
		{Name: "bob", Password: verifierFor(t, "hunter2"), Disabled: true},
		{Name: "certonly", Certificates: []string{"DNS=worker.example.org"}},
		{Name: "guest"},
	}
}

func allMechs() []string {
	return []string{MechSCRAMPlus, MechSCRAM, MechPlain, MechExternal, MechAnonymous}
}

func TestMechanismsOffered(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Name: "l", Mechanisms: allMechs(), AnonymousUser: "guest"})
	ca := newCA(t, "ca")
	leaf := ca.issue(leafOpts{cn: "alice-worker"}).Leaf
	tests := []struct {
		name string
		conn ConnInfo
		want string
	}{
		{"plaintext", ConnInfo{Remote: testAddr}, "SCRAM-SHA-256 ANONYMOUS"},
		{"tls without client cert", ConnInfo{Remote: testAddr, TLS: connState(nil)}, "SCRAM-SHA-256 PLAIN ANONYMOUS"},
		{"tls with client cert", ConnInfo{Remote: testAddr, TLS: connState(leaf)}, "SCRAM-SHA-256 PLAIN EXTERNAL ANONYMOUS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := l.NewConversation(tt.conn)
			r := c.Handle(context.Background(), &protocol.Packet{Type: protocol.SASLMechsReq})
			p := decode(t, r.Packet)
			if p.Type != protocol.SASLMechsRes || string(p.Arg(0)) != tt.want {
				t.Fatalf("got %v, want SASL_MECHS_RES %q", &p, tt.want)
			}
		})
	}
}

func TestPlain(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	tests := []struct {
		name     string
		insecure bool
		tls      bool
		ir       string
		wantCode string // "" for success
		wantUser string
	}{
		{"success over TLS", false, true, "\x00alice\x00s3cret", "", "alice"},
		{"authzid equal to user", false, true, "alice\x00alice\x00s3cret", "", "alice"},
		{"authzid of another user", false, true, "bob\x00alice\x00s3cret", CodeAuthFailed, ""},
		{"wrong password", false, true, "\x00alice\x00wrong", CodeAuthFailed, ""},
		{"unknown user", false, true, "\x00mallory\x00s3cret", CodeAuthFailed, ""},
		{"disabled user, right password", false, true, "\x00bob\x00hunter2", CodeAuthFailed, ""},
		{"user without password", false, true, "\x00certonly\x00", CodeAuthFailed, ""},
		{"malformed message", false, true, "alice s3cret", CodeAuthFailed, ""},
		{"plaintext refused", false, false, "\x00alice\x00s3cret", CodeMechUnsupported, ""},
		{"plaintext allowed by insecure_plain", true, false, "\x00alice\x00s3cret", "", "alice"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := f.listener(t, ListenerConfig{Name: "l", Mechanisms: []string{MechPlain}, InsecurePlain: tt.insecure})
			conn := ConnInfo{Remote: testAddr}
			if tt.tls {
				conn.TLS = connState(nil)
			}
			c := l.NewConversation(conn)
			r := c.Handle(context.Background(), start(MechPlain, tt.ir))
			if tt.wantCode != "" {
				if got := errorCode(t, r.Packet); got != tt.wantCode {
					t.Fatalf("got %q, want ERROR %s", r.Packet, tt.wantCode)
				}
				if r.User != nil || c.User() != nil {
					t.Fatal("failed exchange produced a user")
				}
				return
			}
			p := decode(t, r.Packet)
			if p.Type != protocol.SASLOK || string(p.Arg(0)) != tt.wantUser || r.User == nil || r.User.Name != tt.wantUser {
				t.Fatalf("got %v user %v, want SASL_OK %s", &p, r.User, tt.wantUser)
			}
		})
	}
}

// TestPlainWithoutInitialResponse follows RFC 4422 section 5: an empty
// initial response gets an empty challenge, the credentials come in a step.
func TestPlainWithoutInitialResponse(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	c := f.listener(t, ListenerConfig{Mechanisms: []string{MechPlain}}).NewConversation(ConnInfo{Remote: testAddr, TLS: connState(nil)})
	r := c.Handle(context.Background(), start(MechPlain, ""))
	if p := decode(t, r.Packet); p.Type != protocol.SASLChallenge || len(p.Arg(0)) != 0 {
		t.Fatalf("got %v, want an empty SASL_CHALLENGE", &p)
	}
	r = c.Handle(context.Background(), stepPkt("\x00alice\x00s3cret"))
	if r.User == nil || r.User.Name != "alice" {
		t.Fatalf("got %q, want success", r.Packet)
	}
}

// TestNoUserEnumeration: an unknown user and a wrong password get the same
// bytes back and ask for the same delay, with PLAIN and with SCRAM.
func TestNoUserEnumeration(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechSCRAM, MechPlain}, MaxAuthFailures: 100})
	run := func(name, user, pass string) ([]byte, []byte) {
		t.Helper()
		before := len(f.sleep.all())
		c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(nil)})
		var reply []byte
		switch name {
		case MechPlain:
			reply = c.Handle(context.Background(), start(MechPlain, "\x00"+user+"\x00"+pass)).Packet
		case MechSCRAM:
			reply = scramExchange(t, c, user, pass, nil)
		}
		waits := f.sleep.all()[before:]
		if len(waits) != 1 || waits[0] < DefaultFailureDelay {
			t.Fatalf("%s %s: delays %v, want one of at least %v", name, user, waits, DefaultFailureDelay)
		}
		return reply, []byte(waits[0].String())
	}
	for _, mech := range []string{MechPlain, MechSCRAM} {
		wrongReply, wrongWait := run(mech, "alice", "not the password")
		unknownReply, unknownWait := run(mech, "mallory", "s3cret")
		disabledReply, disabledWait := run(mech, "bob", "hunter2")
		if errorCode(t, wrongReply) != CodeAuthFailed {
			t.Fatalf("%s: wrong password got %q", mech, wrongReply)
		}
		if !bytes.Equal(wrongReply, unknownReply) || !bytes.Equal(wrongReply, disabledReply) {
			t.Errorf("%s: replies differ: wrong password %q, unknown user %q, disabled %q", mech, wrongReply, unknownReply, disabledReply)
		}
		if !bytes.Equal(wrongWait, unknownWait) || !bytes.Equal(wrongWait, disabledWait) {
			t.Errorf("%s: delays differ: %s, %s, %s", mech, wrongWait, unknownWait, disabledWait)
		}
	}
}

// scramExchange runs a SCRAM-SHA-256 client against c and returns the
// server's last reply. With cb set it binds to the channel (-PLUS).
func scramExchange(t testing.TB, c *Conversation, user, pass string, cb *scram.ChannelBinding) []byte {
	t.Helper()
	cl, err := scram.SHA256.NewClient(user, pass, "")
	if err != nil {
		t.Fatal(err)
	}
	mech := MechSCRAM
	conv := cl.NewConversation()
	if cb != nil {
		mech = MechSCRAMPlus
		conv = cl.NewConversationWithChannelBinding(*cb)
	}
	first, err := conv.Step("")
	if err != nil {
		t.Fatal(err)
	}
	r := c.Handle(context.Background(), start(mech, first))
	p := decode(t, r.Packet)
	if p.Type != protocol.SASLChallenge {
		return r.Packet
	}
	final, err := conv.Step(string(p.Arg(0)))
	if err != nil {
		t.Fatal(err)
	}
	r = c.Handle(context.Background(), stepPkt(final))
	p = decode(t, r.Packet)
	if p.Type == protocol.SASLOK {
		// The client checks the server's signature: mutual authentication.
		if _, err := conv.Step(string(p.Arg(1))); err != nil {
			t.Fatalf("server signature rejected: %v", err)
		}
		if r.User == nil {
			t.Fatal("SASL_OK without a user")
		}
	}
	return r.Packet
}

func TestSCRAM(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechSCRAM}})
	c := l.NewConversation(ConnInfo{Remote: testAddr})
	reply := scramExchange(t, c, "alice", "s3cret", nil)
	if p := decode(t, reply); p.Type != protocol.SASLOK || string(p.Arg(0)) != "alice" {
		t.Fatalf("got %v", &p)
	}
	if c.User() == nil || c.User().Name != "alice" {
		t.Fatalf("conversation user %v", c.User())
	}
	if !strings.Contains(f.logs.String(), `"event":"auth.success"`) {
		t.Errorf("no audit event for success: %s", f.logs)
	}
}

// TestSCRAMFakeCredentialsStable: the salt and iteration count offered for
// an unknown user are the same every time, like a real user's, and look
// like a real user's.
func TestSCRAMFakeCredentialsStable(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechSCRAM}})
	serverFirst := func(user string) string {
		c := l.NewConversation(ConnInfo{Remote: testAddr})
		r := c.Handle(context.Background(), start(MechSCRAM, "n,,n="+user+",r=abc"))
		p := decode(t, r.Packet)
		if p.Type != protocol.SASLChallenge {
			t.Fatalf("got %v", &p)
		}
		fields := strings.Split(string(p.Arg(0)), ",")
		return fields[1] + "," + fields[2] // s=salt,i=iterations
	}
	a, b := serverFirst("mallory"), serverFirst("mallory")
	if a != b {
		t.Fatalf("fake salt changes between attempts: %s vs %s", a, b)
	}
	if c := serverFirst("trudy"); c == a {
		t.Fatalf("two unknown users share a salt: %s", c)
	}
	real := serverFirst("alice")
	if !strings.HasSuffix(real, ",i=4096") || !strings.HasSuffix(a, ",i=4096") || len(real) != len(a) {
		t.Fatalf("fake %q does not look like real %q", a, real)
	}
}

func TestSequence(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechSCRAM, MechPlain}})
	ctx := context.Background()
	t.Run("step without start", func(t *testing.T) {
		c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(nil)})
		r := c.Handle(ctx, stepPkt("x"))
		if code := errorCode(t, r.Packet); code != CodeAuthSequence || r.Close {
			t.Fatalf("got %q close=%v", r.Packet, r.Close)
		}
	})
	t.Run("start after success", func(t *testing.T) {
		c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(nil)})
		if r := c.Handle(ctx, start(MechPlain, "\x00alice\x00s3cret")); r.User == nil {
			t.Fatalf("login failed: %q", r.Packet)
		}
		r := c.Handle(ctx, start(MechPlain, "\x00mallory\x00x"))
		if code := errorCode(t, r.Packet); code != CodeAuthSequence || r.User != nil {
			t.Fatalf("got %q", r.Packet)
		}
		r = c.Handle(ctx, stepPkt("x"))
		if code := errorCode(t, r.Packet); code != CodeAuthSequence {
			t.Fatalf("step after success got %q", r.Packet)
		}
		if c.User().Name != "alice" {
			t.Fatalf("identity changed to %v", c.User())
		}
	})
	t.Run("start twice restarts the exchange", func(t *testing.T) {
		c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(nil)})
		r := c.Handle(ctx, start(MechSCRAM, "n,,n=alice,r=abc"))
		if decode(t, r.Packet).Type != protocol.SASLChallenge {
			t.Fatalf("got %q", r.Packet)
		}
		reply := scramExchange(t, c, "alice", "s3cret", nil)
		if decode(t, reply).Type != protocol.SASLOK {
			t.Fatalf("second exchange got %q", reply)
		}
	})
	t.Run("step after failure", func(t *testing.T) {
		c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(nil)})
		c.Handle(ctx, start(MechPlain, "\x00alice\x00bad"))
		r := c.Handle(ctx, stepPkt("x"))
		if code := errorCode(t, r.Packet); code != CodeAuthSequence {
			t.Fatalf("got %q", r.Packet)
		}
	})
	t.Run("unsupported mechanism", func(t *testing.T) {
		c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(nil)})
		for _, m := range []string{"GSSAPI", "plain", "", "OAUTHBEARER"} {
			r := c.Handle(ctx, start(m, "x"))
			if code := errorCode(t, r.Packet); code != CodeMechUnsupported || r.Close {
				t.Fatalf("%q: got %q", m, r.Packet)
			}
		}
		if c.failures != 0 {
			t.Fatalf("unsupported mechanism counted as %d failures", c.failures)
		}
	})
}

func TestGarbage(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechSCRAM, MechPlain, MechExternal}, MaxAuthFailures: 1000})
	ctx := context.Background()
	huge := strings.Repeat("A", MaxSASLData+1)
	tests := []struct {
		name  string
		mech  string
		first string
		step  string
	}{
		{"scram garbage first", MechSCRAM, "\xff\xfe garbage", ""},
		{"scram binary final", MechSCRAM, "n,,n=alice,r=abc", "\x00\x01\x02"},
		{"scram extension", MechSCRAM, "n,,m=ext,n=alice,r=abc", ""},
		{"scram bad gs2 flag", MechSCRAM, "q,,n=alice,r=abc", ""},
		{"scram garbage final", MechSCRAM, "n,,n=alice,r=abc", "c=biws,r=wrong,p=AAAA"},
		{"scram proof not base64", MechSCRAM, "n,,n=alice,r=abc", "c=biws,r=abc,p=!!!"},
		{"scram oversized first", MechSCRAM, huge, ""},
		{"plain oversized", MechPlain, "\x00alice\x00" + huge, ""},
		{"plain too many fields", MechPlain, "a\x00b\x00c\x00d", ""},
		{"external without certificate", MechExternal, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(nil)})
			if tt.mech == MechExternal {
				// Offered on the listener but not on this connection.
				r := c.Handle(ctx, start(tt.mech, tt.first))
				if code := errorCode(t, r.Packet); code != CodeMechUnsupported {
					t.Fatalf("got %q", r.Packet)
				}
				return
			}
			r := c.Handle(ctx, start(tt.mech, tt.first))
			if tt.step != "" {
				p := decode(t, r.Packet)
				if p.Type != protocol.SASLChallenge {
					t.Fatalf("first message refused: %v", &p)
				}
				final := tt.step
				if strings.Contains(final, "r=abc") {
					// Reuse the server's combined nonce so only the
					// proof is wrong.
					nonce := strings.Split(string(p.Arg(0)), ",")[0]
					final = strings.Replace(final, "r=abc", nonce, 1)
				}
				r = c.Handle(ctx, stepPkt(final))
			}
			if code := errorCode(t, r.Packet); code != CodeAuthFailed {
				t.Fatalf("got %q, want AUTH_FAILED", r.Packet)
			}
			if p := decode(t, r.Packet); string(p.Arg(1)) != failedText {
				text := p.Arg(1)
				t.Fatalf("failure text %q leaks detail", text)
			}
		})
	}
}

// panicMech stands for a mechanism with a bug.
type panicMech struct{ baseMech }

func (panicMech) next([]byte) ([]byte, bool, error) { panic("boom") }

func TestPanicContained(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechPlain}})
	l.mechs[MechPlain] = func(c *Conversation, _ string) (mechanism, error) { return &panicMech{}, nil }
	c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(nil)})
	r := c.Handle(context.Background(), start(MechPlain, "\x00alice\x00s3cret"))
	if code := errorCode(t, r.Packet); code != CodeAuthFailed || r.User != nil {
		t.Fatalf("got %q", r.Packet)
	}
	if !strings.Contains(f.logs.String(), "SASL mechanism panicked") {
		t.Errorf("panic not logged: %s", f.logs)
	}
}

func TestMaxAuthFailures(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechPlain}})
	c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(nil)})
	for i := 1; i <= DefaultMaxAuthFailures; i++ {
		r := c.Handle(context.Background(), start(MechPlain, "\x00alice\x00wrong"))
		if errorCode(t, r.Packet) != CodeAuthFailed {
			t.Fatalf("attempt %d: %q", i, r.Packet)
		}
		if want := i == DefaultMaxAuthFailures; r.Close != want {
			t.Fatalf("attempt %d: close=%v, want %v", i, r.Close, want)
		}
	}
	// Even the right password is refused on a connection past its limit.
	r := c.Handle(context.Background(), start(MechPlain, "\x00alice\x00s3cret"))
	if r.User != nil || !r.Close {
		t.Fatalf("after the limit: %q user=%v close=%v", r.Packet, r.User, r.Close)
	}
	if n := strings.Count(f.logs.String(), `"event":"auth.failure"`); n != DefaultMaxAuthFailures {
		t.Errorf("%d failure events, want %d", n, DefaultMaxAuthFailures)
	}
}

func TestSourceFailureBudget(t *testing.T) {
	us, err := NewUsers(saslUsers(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	sl := &sleeper{}
	a, err := NewAuthenticator(Options{Users: NewUserStore(us), SourceFailures: 4, Now: fixedClock, Sleep: sl.sleep})
	if err != nil {
		t.Fatal(err)
	}
	l, err := a.Listener(ListenerConfig{Mechanisms: []string{MechPlain}, MaxAuthFailures: 2})
	if err != nil {
		t.Fatal(err)
	}
	login := func(remote string, pass string) Reply {
		addr := mustAddr(t, remote)
		c := l.NewConversation(ConnInfo{Remote: addr, TLS: connState(nil)})
		return c.Handle(context.Background(), start(MechPlain, "\x00alice\x00"+pass))
	}
	// Four failures from one address, spread over connections.
	for i := 0; i < 4; i++ {
		login("198.51.100.7:1000", "wrong")
	}
	if r := login("198.51.100.7:2000", "s3cret"); r.User != nil {
		t.Fatal("a source past its budget logged in")
	}
	if r := login("198.51.100.8:2000", "s3cret"); r.User == nil {
		t.Fatalf("another source was refused: %q", r.Packet)
	}
	// IPv6 sources share a budget per /64.
	for i := 0; i < 4; i++ {
		login("[2001:db8:1:2::1]:1000", "wrong")
	}
	if r := login("[2001:db8:1:2::ffff]:1000", "s3cret"); r.User != nil {
		t.Fatal("a neighbour in the same /64 escaped the budget")
	}
	if r := login("[2001:db8:1:3::1]:1000", "s3cret"); r.User == nil {
		t.Fatal("another /64 was refused")
	}
}

func TestExternal(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechExternal}})
	ca := newCA(t, "ca")
	tests := []struct {
		name     string
		leaf     leafOpts
		authzid  string
		wantUser string
	}{
		{"common name", leafOpts{cn: "alice-worker"}, "", "alice"},
		{"spiffe uri", leafOpts{cn: "x", uris: []string{"spiffe://example.org/alice"}}, "", "alice"},
		{"dns san", leafOpts{cn: "x", dns: []string{"worker.example.org"}}, "", "certonly"},
		{"authzid restates the user", leafOpts{cn: "alice-worker"}, "alice", "alice"},
		{"authzid of another user", leafOpts{cn: "alice-worker"}, "certonly", ""},
		{"unmapped certificate", leafOpts{cn: "nobody"}, "", ""},
		{"ambiguous certificate", leafOpts{cn: "alice-worker", dns: []string{"worker.example.org"}}, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leaf := ca.issue(tt.leaf).Leaf
			c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(leaf)})
			r := c.Handle(context.Background(), start(MechExternal, tt.authzid))
			if tt.wantUser == "" {
				if errorCode(t, r.Packet) != CodeAuthFailed {
					t.Fatalf("got %q", r.Packet)
				}
				return
			}
			if r.User == nil || r.User.Name != tt.wantUser {
				t.Fatalf("got %q user %v", r.Packet, r.User)
			}
		})
	}
}

func TestAuthenticateCertificate(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechSCRAM}, CertMapping: CertMapping{From: []string{"URI"}}})
	ca := newCA(t, "ca")
	c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(ca.issue(leafOpts{cn: "alice-worker"}).Leaf)})
	if u, err := c.AuthenticateCertificate(); err == nil {
		t.Fatalf("CN used although the mapping allows only URI: %v", u)
	}
	c = l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(ca.issue(leafOpts{cn: "x", uris: []string{"spiffe://example.org/alice"}}).Leaf)})
	u, err := c.AuthenticateCertificate()
	if err != nil || u.Name != "alice" || c.User() != u {
		t.Fatalf("got %v, %v", u, err)
	}
	if r := c.Handle(context.Background(), start(MechSCRAM, "n,,n=bob,r=x")); errorCode(t, r.Packet) != CodeAuthSequence {
		t.Fatalf("SASL after certificate login: %q", r.Packet)
	}
	// What client_auth = "request" without verification would give: a peer
	// certificate but no verified chain. It must name nobody.
	unverified := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{ca.issue(leafOpts{cn: "alice-worker"}).Leaf}}
	if _, err := (CertMapping{}).UserFor(f.users.Users(), unverified); err == nil {
		t.Fatal("an unverified peer certificate named a user")
	}
}

func mustAddr(t testing.TB, s string) net.Addr {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp", s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestAnonymous(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	if _, err := f.auth.Listener(ListenerConfig{Mechanisms: []string{MechAnonymous}}); err == nil {
		t.Fatal("ANONYMOUS without anonymous_user accepted")
	}
	if _, err := f.auth.Listener(ListenerConfig{Mechanisms: []string{MechAnonymous}, AnonymousUser: "nobody"}); err == nil {
		t.Fatal("anonymous_user naming no user accepted")
	}
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechAnonymous}, AnonymousUser: "guest"})
	for _, trace := range []string{"", "me@example.org"} {
		c := l.NewConversation(ConnInfo{Remote: testAddr})
		r := c.Handle(context.Background(), start(MechAnonymous, trace))
		if r.User == nil || r.User.Name != "guest" {
			t.Fatalf("trace %q: got %q", trace, r.Packet)
		}
	}
}

func TestListenerConfigErrors(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	for _, cfg := range []ListenerConfig{
		{Mechanisms: []string{"GSSAPI"}},
		{Mechanisms: []string{MechPlain, MechPlain}},
		{Mechanisms: []string{MechPlain}, CertMapping: CertMapping{From: []string{"EMAIL"}}},
	} {
		if _, err := f.auth.Listener(cfg); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// TestReloadDisablesMidExchange: a user disabled by a reload between the
// two SCRAM steps does not get in.
func TestReloadDisablesMidExchange(t *testing.T) {
	users := saslUsers(t)
	f := newFixture(t, users, nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechSCRAM}})
	c := l.NewConversation(ConnInfo{Remote: testAddr})
	cl, _ := scram.SHA256.NewClient("alice", "s3cret", "")
	conv := cl.NewConversation()
	first, _ := conv.Step("")
	p := decode(t, c.Handle(context.Background(), start(MechSCRAM, first)).Packet)
	users[0].Disabled = true
	us, err := NewUsers(users, nil)
	if err != nil {
		t.Fatal(err)
	}
	f.users.Swap(us)
	final, _ := conv.Step(string(p.Arg(0)))
	r := c.Handle(context.Background(), stepPkt(final))
	if r.User != nil || errorCode(t, r.Packet) != CodeAuthFailed {
		t.Fatalf("disabled user logged in: %q", r.Packet)
	}
}

func TestCancelledDelayCloses(t *testing.T) {
	us, _ := NewUsers(saslUsers(t), nil)
	a, _ := NewAuthenticator(Options{Users: NewUserStore(us)})
	l, _ := a.Listener(ListenerConfig{Mechanisms: []string{MechPlain}, MaxAuthFailures: 10})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(nil)}).Handle(ctx, start(MechPlain, "\x00alice\x00x"))
	if !r.Close || errorCode(t, r.Packet) != CodeAuthFailed {
		t.Fatalf("got %q close=%v", r.Packet, r.Close)
	}
}

func TestHelpers(t *testing.T) {
	p := decode(t, AppendAuthRequired(nil))
	if p.Type != protocol.Error || string(p.Arg(0)) != CodeAuthRequired {
		t.Fatalf("got %v", &p)
	}
	p = decode(t, AppendPermissionDenied(nil, Submit, []byte("img.secret")))
	if string(p.Arg(0)) != CodePermissionDenied || !strings.Contains(string(p.Arg(1)), "img.secret") {
		t.Fatalf("got %v", &p)
	}
	line := string(AppendTextAuthRequired(nil))
	if !strings.HasPrefix(line, "ERR AUTH_REQUIRED ") || !strings.HasSuffix(line, "\r\n") || len(strings.Fields(line)) != 3 {
		t.Fatalf("got %q", line)
	}
	if !slices.Equal(strings.Fields(string(AppendTextPermissionDenied(nil, "show jobs")))[:2], []string{"ERR", CodePermissionDenied}) {
		t.Fatal("text denial")
	}
}

// TestFailureTimingIndistinguishable is the loose statistical check: with
// the real clock and the real delay, the median time of a failed PLAIN
// login is the same for an unknown user as for a wrong password. Both are
// padded to FailureDelay from the packet's arrival, so the medians sit
// near 100 ms; the bound is wide enough that scheduling noise on a busy
// machine cannot fail it, and narrow enough that a skipped delay (or a
// skipped key derivation dwarfed by it) would.
func TestFailureTimingIndistinguishable(t *testing.T) {
	if testing.Short() {
		t.Skip("takes about 3 s")
	}
	us, err := NewUsers(saslUsers(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := NewAuthenticator(Options{Users: NewUserStore(us), SourceFailures: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	l, err := a.Listener(ListenerConfig{Mechanisms: []string{MechPlain}, MaxAuthFailures: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(nil)})
	var wrong, unknown []time.Duration
	for i := 0; i < 15; i++ {
		for _, user := range []string{"alice", "mallory"} {
			t0 := time.Now()
			r := c.Handle(context.Background(), start(MechPlain, "\x00"+user+"\x00not-it"))
			d := time.Since(t0)
			if errorCode(t, r.Packet) != CodeAuthFailed {
				t.Fatalf("got %q", r.Packet)
			}
			if user == "alice" {
				wrong = append(wrong, d)
			} else {
				unknown = append(unknown, d)
			}
		}
	}
	median := func(ds []time.Duration) time.Duration {
		slices.Sort(ds)
		return ds[len(ds)/2]
	}
	mw, mu := median(wrong), median(unknown)
	if mw < DefaultFailureDelay || mu < DefaultFailureDelay {
		t.Fatalf("failures not slowed: medians %v (wrong password), %v (unknown user)", mw, mu)
	}
	if ratio := float64(mw) / float64(mu); ratio < 0.6 || ratio > 1.67 {
		t.Fatalf("medians differ: %v (wrong password) vs %v (unknown user)", mw, mu)
	}
	t.Logf("median failure time: wrong password %v, unknown user %v", mw, mu)
}
