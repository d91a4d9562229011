package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
	"github.com/xdg-go/scram"
)

// handshake runs a TLS handshake over net.Pipe and returns both sides'
// states and errors.
func handshake(t *testing.T, server *tls.Config, client *tls.Config) (srv, cl tls.ConnectionState, srvErr, clErr error) {
	t.Helper()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ss := tls.Server(a, server)
	cs := tls.Client(b, client)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		err := ss.HandshakeContext(ctx)
		if err != nil {
			a.Close() // unblock the client
		}
		done <- err
	}()
	clErr = cs.HandshakeContext(ctx)
	if clErr == nil {
		// A TLS 1.3 client finishes before the server has checked its
		// certificate; keep reading so that the server's alert, written
		// into a synchronous pipe, does not block it.
		go io.Copy(io.Discard, cs)
	} else {
		b.Close()
	}
	srvErr = <-done
	return ss.ConnectionState(), cs.ConnectionState(), srvErr, clErr
}

type tlsEnv struct {
	dir      string
	ca       *pki
	caFile   string
	certFile string
	keyFile  string
	serverCA *x509.CertPool
}

func newTLSEnv(t *testing.T) *tlsEnv {
	e := &tlsEnv{dir: t.TempDir(), ca: newCA(t, "test CA")}
	e.caFile = e.ca.pemFile(t, e.dir, "ca.pem")
	e.certFile, e.keyFile = writePair(t, e.dir, "server", e.ca.issue(leafOpts{cn: "server", dns: []string{"gearproxy.test"}, server: true}))
	e.serverCA = x509.NewCertPool()
	e.serverCA.AddCert(e.ca.cert)
	return e
}

func (e *tlsEnv) clientConfig(cert *tls.Certificate) *tls.Config {
	c := &tls.Config{RootCAs: e.serverCA, ServerName: "gearproxy.test"}
	if cert != nil {
		// Present the certificate whatever CAs the server names, so that
		// the tests exercise the server's verification, not the client's
		// choice.
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	return c
}

func TestClientCertificates(t *testing.T) {
	e := newTLSEnv(t)
	other := newCA(t, "other CA")
	valid := e.ca.issue(leafOpts{cn: "alice-worker"})
	expired := e.ca.issue(leafOpts{cn: "alice-worker", notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-24 * time.Hour)})
	notYet := e.ca.issue(leafOpts{cn: "alice-worker", notBefore: time.Now().Add(24 * time.Hour), notAfter: time.Now().Add(48 * time.Hour)})
	wrongCA := other.issue(leafOpts{cn: "alice-worker"})
	selfSigned := newCA(t, "alice-worker")
	selfCert := tls.Certificate{Certificate: [][]byte{selfSigned.cert.Raw}, PrivateKey: selfSigned.key}
	us, err := NewUsers([]UserConfig{{Name: "alice", Certificates: []string{"CN=alice-worker"}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		mode     string
		cert     *tls.Certificate
		wantOK   bool
		wantUser string
	}{
		{ClientAuthRequire, &valid, true, "alice"},
		{ClientAuthRequire, nil, false, ""},
		{ClientAuthRequire, &expired, false, ""},
		{ClientAuthRequire, &notYet, false, ""},
		{ClientAuthRequire, &wrongCA, false, ""},
		{ClientAuthRequire, &selfCert, false, ""},
		{ClientAuthRequest, &valid, true, "alice"},
		{ClientAuthRequest, nil, true, ""},
		{ClientAuthRequest, &expired, false, ""},
		{ClientAuthRequest, &wrongCA, false, ""},
		{ClientAuthNone, &valid, true, ""},
	}
	for _, tt := range tests {
		name := tt.mode + "/"
		switch tt.cert {
		case nil:
			name += "no cert"
		case &valid:
			name += "valid"
		case &expired:
			name += "expired"
		case &notYet:
			name += "not yet valid"
		case &wrongCA:
			name += "wrong CA"
		case &selfCert:
			name += "self-signed"
		}
		t.Run(name, func(t *testing.T) {
			srv, err := NewTLSServer(TLSConfig{Cert: e.certFile, Key: e.keyFile, ClientCA: e.caFile, ClientAuth: tt.mode}, nil)
			if err != nil {
				t.Fatal(err)
			}
			st, _, srvErr, _ := handshake(t, srv.Config(), e.clientConfig(tt.cert))
			if (srvErr == nil) != tt.wantOK {
				t.Fatalf("server handshake error %v, want ok=%v", srvErr, tt.wantOK)
			}
			if !tt.wantOK {
				return
			}
			if st.Version < tls.VersionTLS12 {
				t.Fatalf("negotiated version %x", st.Version)
			}
			u, err := CertMapping{}.UserFor(us, &st)
			if tt.wantUser == "" {
				if err == nil {
					t.Fatalf("mapped to %v", u.Name)
				}
				return
			}
			if err != nil || u.Name != tt.wantUser {
				t.Fatalf("got %v, %v", u, err)
			}
		})
	}
}

func TestTLSMinimumVersion(t *testing.T) {
	e := newTLSEnv(t)
	srv, err := NewTLSServer(TLSConfig{Cert: e.certFile, Key: e.keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := e.clientConfig(nil)
	c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	if _, _, srvErr, _ := handshake(t, srv.Config(), c); srvErr == nil {
		t.Fatal("TLS 1.1 accepted")
	}
}

func TestTLSConfigErrors(t *testing.T) {
	e := newTLSEnv(t)
	for _, cfg := range []TLSConfig{
		{Cert: e.certFile},
		{Cert: e.certFile, Key: e.keyFile, ClientAuth: "require"},
		{Cert: e.certFile, Key: e.keyFile, ClientAuth: "maybe", ClientCA: e.caFile},
		{Cert: e.certFile, Key: e.certFile},
		{Cert: e.certFile, Key: e.keyFile, ClientCA: e.keyFile},
		{Cert: e.dir + "/missing.pem", Key: e.keyFile},
	} {
		if _, err := NewTLSServer(cfg, nil); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
}

// TestTLSReload: a broken pair keeps the old certificate, a good one
// replaces it, on Reload and on Poll.
func TestTLSReload(t *testing.T) {
	e := newTLSEnv(t)
	var logs bytes.Buffer
	srv, err := NewTLSServer(TLSConfig{Cert: e.certFile, Key: e.keyFile}, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	served := func() string {
		t.Helper()
		_, cl, _, clErr := handshake(t, srv.Config(), e.clientConfig(nil))
		if clErr != nil {
			t.Fatalf("handshake: %v", clErr)
		}
		return cl.PeerCertificates[0].SerialNumber.String()
	}
	first := served()
	touch := func(d time.Duration) {
		for _, f := range []string{e.certFile, e.keyFile} {
			if err := os.Chtimes(f, time.Now().Add(d), time.Now().Add(d)); err != nil {
				t.Fatal(err)
			}
		}
	}

	// A key that does not match the certificate.
	other := e.ca.issue(leafOpts{cn: "server", dns: []string{"gearproxy.test"}})
	keep, _ := os.ReadFile(e.certFile)
	writePair(t, e.dir, "server", other)
	writeFile(t, e.certFile, keep)
	if err := srv.Reload(); err == nil {
		t.Fatal("mismatched pair loaded")
	}
	if got := served(); got != first {
		t.Fatal("broken reload replaced the certificate")
	}
	if !strings.Contains(logs.String(), "keeping the current certificate") {
		t.Fatalf("no log line: %s", logs.String())
	}

	// Garbage noticed by polling: tried once, logged once.
	writeFile(t, e.keyFile, []byte("not a key"))
	touch(time.Minute)
	logs.Reset()
	if !srv.Poll() || srv.Poll() {
		t.Fatal("a broken change should be tried exactly once")
	}
	if n := strings.Count(logs.String(), "TLS reload failed"); n != 1 || served() != first {
		t.Fatalf("%d failure lines; serving the first certificate: %v", n, served() == first)
	}

	// An expired certificate is refused too.
	expired := e.ca.issue(leafOpts{cn: "server", dns: []string{"gearproxy.test"}, notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-time.Hour)})
	writePair(t, e.dir, "server", expired)
	if err := srv.Reload(); err == nil || served() != first {
		t.Fatalf("expired certificate loaded (%v)", err)
	}

	// A good new pair, noticed by polling.
	next := e.ca.issue(leafOpts{cn: "server", dns: []string{"gearproxy.test"}, server: true})
	writePair(t, e.dir, "server", next)
	touch(2 * time.Minute)
	if !srv.Poll() {
		t.Fatal("change not noticed")
	}
	if got := served(); got != next.Leaf.SerialNumber.String() {
		t.Fatalf("serving %s, want the new certificate %s", got, next.Leaf.SerialNumber)
	}
	if srv.Poll() {
		t.Fatal("reloaded without a change")
	}
	if srv.Certificate().SerialNumber.Cmp(next.Leaf.SerialNumber) != 0 {
		t.Fatal("Certificate() is stale")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	srv.Watch(ctx, time.Millisecond) // returns at once on a done context
}

// TestSCRAMPlus runs SCRAM-SHA-256-PLUS with tls-exporter binding over a
// real TLS 1.3 connection, and shows that a man in the middle (a different
// TLS session) cannot relay the exchange.
func TestSCRAMPlus(t *testing.T) {
	e := newTLSEnv(t)
	srv, err := NewTLSServer(TLSConfig{Cert: e.certFile, Key: e.keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	st, cl, srvErr, clErr := handshake(t, srv.Config(), e.clientConfig(nil))
	if srvErr != nil || clErr != nil {
		t.Fatal(srvErr, clErr)
	}
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechSCRAMPlus, MechSCRAM, MechPlain}})
	c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: &st})
	if got := c.Mechanisms(); len(got) != 3 || got[0] != MechSCRAMPlus {
		t.Fatalf("offered %v", got)
	}
	cb, err := scram.NewTLSExporterBinding(&cl)
	if err != nil {
		t.Fatal(err)
	}
	reply := scramExchange(t, c, "alice", "s3cret", &cb)
	if p := decode(t, reply); p.Type != protocol.SASLOK {
		t.Fatalf("got %v", &p)
	}

	// The binding of another TLS session does not match.
	st2, _, _, _ := handshake(t, srv.Config(), e.clientConfig(nil))
	c2 := l.NewConversation(ConnInfo{Remote: testAddr, TLS: &st2})
	if reply := scramExchange(t, c2, "alice", "s3cret", &cb); errorCode(t, reply) != CodeAuthFailed {
		t.Fatalf("relayed exchange got %q", reply)
	}

	// A client that supports binding but believes the server does not
	// ("y" flag) while the server offers -PLUS: a downgrade, refused.
	c3 := l.NewConversation(ConnInfo{Remote: testAddr, TLS: &st})
	r := c3.Handle(context.Background(), start(MechSCRAM, "y,,n=alice,r=abc"))
	if errorCode(t, r.Packet) != CodeAuthFailed {
		t.Fatalf("downgrade got %q", r.Packet)
	}
}
