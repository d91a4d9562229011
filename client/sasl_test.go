package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/auth"
	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/protocol"
)

// fakeProxy is the authenticating front of gearproxy reduced to what the
// client's SASL side meets: auth's state machine behind an optional TLS
// handshake, then ECHO and OPTION answered, all over net.Pipe.
type fakeProxy struct {
	t   testing.TB
	l   *auth.Listener
	tls *tls.Config
	// stripPlus plays a man in the middle who removes SCRAM-SHA-256-PLUS
	// from the offered mechanisms to force a weaker exchange.
	stripPlus bool
}

func (f *fakeProxy) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	a, b := net.Pipe()
	go f.serve(b)
	return a, nil
}

func (f *fakeProxy) serve(nc net.Conn) {
	defer nc.Close()
	info := auth.ConnInfo{Remote: nc.RemoteAddr()}
	if f.tls != nil {
		tc := tls.Server(nc, f.tls)
		if err := tc.Handshake(); err != nil {
			return
		}
		cs := tc.ConnectionState()
		info.TLS = &cs
		nc = tc
	}
	conv := f.l.NewConversation(info)
	r := protocol.NewReader(nc, protocol.ReaderOptions{Expect: protocol.Req, MaxData: 16 << 10})
	w := protocol.NewWriter(nc)
	var p protocol.Packet
	for {
		if err := r.Read(&p); err != nil {
			return
		}
		closeAfter := false
		switch {
		case p.Type == protocol.SASLMechsReq || p.Type == protocol.SASLStart || p.Type == protocol.SASLStep:
			rep := conv.Handle(context.Background(), &p)
			if f.stripPlus && p.Type == protocol.SASLMechsReq {
				mechs := strings.ReplaceAll(strings.Join(conv.Mechanisms(), " "), auth.MechSCRAMPlus+" ", "")
				rep.Packet = protocol.AppendPacket(nil, protocol.Res, protocol.SASLMechsRes, []byte(mechs))
			}
			w.Write(rep.Packet)
			closeAfter = rep.Close
		case p.Type == protocol.EchoReq:
			w.WritePacket(protocol.Res, protocol.EchoRes, p.Data())
		case conv.User() == nil:
			w.Write(auth.AppendAuthRequired(nil))
			closeAfter = true
		case p.Type == protocol.OptionReq:
			w.WritePacket(protocol.Res, protocol.OptionRes, p.Arg(0))
		default:
			w.Write(protocol.AppendError(nil, "INVALID_COMMAND", p.Type.String()))
		}
		if w.Flush() != nil || closeAfter {
			return
		}
	}
}

type testPKI struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	server tls.Certificate
}

func newTestPKI(t testing.TB) *testPKI {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := &testPKI{caKey: key, pool: x509.NewCertPool()}
	p.ca, _ = x509.ParseCertificate(der)
	p.pool.AddCert(p.ca)
	p.server = p.issue(t, "gearproxy.test")
	return p
}

func (p *testPKI) issue(t testing.TB, cn string) tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: cn}, DNSNames: []string{cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

func newAuthListener(t testing.TB, cfg auth.ListenerConfig) *auth.Listener {
	t.Helper()
	v, err := auth.NewVerifier("s3cret", 0)
	if err != nil {
		t.Fatal(err)
	}
	us, err := auth.NewUsers([]auth.UserConfig{
		{Name: "alice", Password: v.String()},
		{Name: "worker", Certificates: []string{"CN=worker.example"}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.NewAuthenticator(auth.Options{Users: auth.NewUserStore(us),
		Sleep: func(ctx context.Context, d time.Duration) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	l, err := a.Listener(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestSASLAgainstAuth(t *testing.T) {
	pki := newTestPKI(t)
	workerCert := pki.issue(t, "worker.example")
	all := []string{auth.MechSCRAMPlus, auth.MechSCRAM, auth.MechPlain, auth.MechExternal}
	tests := []struct {
		name     string
		useTLS   bool
		maxTLS   uint16
		cert     *tls.Certificate
		mechs    []string
		insecure bool
		creds    client.Credentials
		wantErr  string // substring; "" for success
	}{
		{"SCRAM", true, 0, nil, all, false, client.Credentials{Mechanism: client.MechSCRAM, Username: "alice", Password: "s3cret"}, ""},
		{"auto picks SCRAM-PLUS", true, 0, nil, all, false, client.Credentials{Username: "alice", Password: "s3cret"}, ""},
		{"SCRAM-PLUS explicit", true, 0, nil, all, false, client.Credentials{Mechanism: client.MechSCRAMPlus, Username: "alice", Password: "s3cret"}, ""},
		{"SCRAM over TLS 1.2", true, tls.VersionTLS12, nil, all, false, client.Credentials{Username: "alice", Password: "s3cret"}, ""},
		{"PLAIN over TLS", true, 0, nil, all, false, client.Credentials{Mechanism: client.MechPlain, Username: "alice", Password: "s3cret"}, ""},
		{"EXTERNAL", true, 0, &workerCert, all, false, client.Credentials{Mechanism: client.MechExternal}, ""},
		{"auto picks EXTERNAL without password", true, 0, &workerCert, all, false, client.Credentials{}, ""},
		{"SCRAM without TLS", false, 0, nil, []string{auth.MechSCRAM}, false, client.Credentials{Username: "alice", Password: "s3cret"}, ""},
		{"wrong password", true, 0, nil, all, false, client.Credentials{Mechanism: client.MechSCRAM, Username: "alice", Password: "nope"}, "AUTH_FAILED"},
		{"unknown user", true, 0, nil, all, false, client.Credentials{Mechanism: client.MechSCRAM, Username: "mallory", Password: "s3cret"}, "AUTH_FAILED"},
		{"PLAIN wrong password", true, 0, nil, all, false, client.Credentials{Mechanism: client.MechPlain, Username: "alice", Password: "nope"}, "AUTH_FAILED"},
		{"PLAIN refused by the client without TLS", false, 0, nil, []string{auth.MechPlain}, true, client.Credentials{Mechanism: client.MechPlain, Username: "alice", Password: "s3cret"}, "InsecurePlain"},
		{"PLAIN allowed on both sides", false, 0, nil, []string{auth.MechPlain}, true, client.Credentials{Mechanism: client.MechPlain, Username: "alice", Password: "s3cret", InsecurePlain: true}, ""},
		{"EXTERNAL without certificate", true, 0, nil, all, false, client.Credentials{Mechanism: client.MechExternal}, "does not offer"},
		{"nothing usable", false, 0, nil, []string{auth.MechPlain}, true, client.Credentials{Username: "alice", Password: "s3cret"}, "no usable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fp := &fakeProxy{t: t, l: newAuthListener(t, auth.ListenerConfig{Name: "test", Mechanisms: append([]string(nil), tt.mechs...), InsecurePlain: tt.insecure})}
			cfg := client.Config{Addr: "gearproxy.test:4730", Dial: fp.dial, Credentials: &tt.creds}
			if tt.useTLS {
				fp.tls = &tls.Config{Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.pool,
					ClientAuth: tls.VerifyClientCertIfGiven, MinVersion: tls.VersionTLS12, MaxVersion: tt.maxTLS}
				cfg.TLS = &tls.Config{RootCAs: pki.pool}
				if tt.cert != nil {
					cfg.TLS.Certificates = []tls.Certificate{*tt.cert}
				}
			}
			c, err := client.Dial(context.Background(), cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			// The stream is in step after the exchange.
			if got, err := c.Echo(context.Background(), []byte("after auth")); err != nil || string(got) != "after auth" {
				t.Fatalf("echo: %q, %v", got, err)
			}
		})
	}
}

// TestDowngradeDetected: when a man in the middle hides -PLUS, the client
// says it could have bound ("y") and the server, which offered -PLUS,
// refuses (RFC 5802 section 6).
func TestDowngradeDetected(t *testing.T) {
	pki := newTestPKI(t)
	fp := &fakeProxy{t: t, stripPlus: true,
		l:   newAuthListener(t, auth.ListenerConfig{Mechanisms: []string{auth.MechSCRAMPlus, auth.MechSCRAM}}),
		tls: &tls.Config{Certificates: []tls.Certificate{pki.server}}}
	_, err := client.Dial(context.Background(), client.Config{Addr: "gearproxy.test:1", Dial: fp.dial,
		TLS: &tls.Config{RootCAs: pki.pool}, Credentials: &client.Credentials{Username: "alice", Password: "s3cret"}})
	var ae *client.AuthError
	if !errors.As(err, &ae) {
		t.Fatalf("downgraded exchange: %v", err)
	}
}

func TestAuthErrorType(t *testing.T) {
	fp := &fakeProxy{t: t, l: newAuthListener(t, auth.ListenerConfig{Mechanisms: []string{auth.MechSCRAM}})}
	_, err := client.Dial(context.Background(), client.Config{Addr: "x:1", Dial: fp.dial,
		Credentials: &client.Credentials{Username: "alice", Password: "bad"}})
	var ae *client.AuthError
	if !errors.As(err, &ae) || ae.Code != auth.CodeAuthFailed {
		t.Fatalf("got %v", err)
	}
	// A worker gives up on an authentication failure instead of retrying
	// for ever.
	w, err := client.NewWorker(client.Config{Addr: "x:1", Dial: fp.dial, Credentials: &client.Credentials{Username: "alice", Password: "bad"}})
	if err != nil {
		t.Fatal(err)
	}
	w.Register("f", 0, func(context.Context, *client.WorkerJob) ([]byte, error) { return nil, nil })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := w.Run(ctx); !errors.As(err, &ae) {
		t.Fatalf("worker Run: %v", err)
	}
}

// TestAuthenticateRaw drives the exported Authenticate over a raw pipe, as
// a relay would.
func TestAuthenticateRaw(t *testing.T) {
	fp := &fakeProxy{t: t, l: newAuthListener(t, auth.ListenerConfig{Mechanisms: []string{auth.MechSCRAM}})}
	nc, _ := fp.dial(context.Background(), "tcp", "x")
	defer nc.Close()
	user, err := client.Authenticate(context.Background(), nc, client.Credentials{Username: "alice", Password: "s3cret"})
	if err != nil || user != "alice" {
		t.Fatalf("got %q, %v", user, err)
	}
	// The connection now carries ordinary packets.
	w := protocol.NewWriter(nc)
	w.WritePacket(protocol.Req, protocol.EchoReq, []byte("raw"))
	w.Flush()
	var p protocol.Packet
	if err := protocol.NewReader(nc, protocol.ReaderOptions{Expect: protocol.Res}).Read(&p); err != nil || string(p.Data()) != "raw" {
		t.Fatalf("echo after Authenticate: %v %v", &p, err)
	}
}

// BenchmarkConnect measures new connections per second, each with a TLS
// handshake and an authentication, both ends in this process over
// net.Pipe: the client's and the server's work together.
func BenchmarkConnect(b *testing.B) {
	pki := newTestPKI(b)
	for _, mech := range []string{client.MechPlain, client.MechSCRAM, client.MechSCRAMPlus} {
		b.Run(mech, func(b *testing.B) {
			fp := &fakeProxy{t: b, l: newAuthListener(b, auth.ListenerConfig{Mechanisms: []string{auth.MechSCRAMPlus, auth.MechSCRAM, auth.MechPlain}}),
				tls: &tls.Config{Certificates: []tls.Certificate{pki.server}}}
			cfg := client.Config{Addr: "gearproxy.test:1", Dial: fp.dial, TLS: &tls.Config{RootCAs: pki.pool},
				Credentials: &client.Credentials{Mechanism: mech, Username: "alice", Password: "s3cret"}}
			for b.Loop() {
				c, err := client.Dial(context.Background(), cfg)
				if err != nil {
					b.Fatal(err)
				}
				c.Close()
			}
		})
	}
}
