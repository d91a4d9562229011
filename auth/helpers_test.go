package auth

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

func verifierFor(t testing.TB, password string) string {
	t.Helper()
	v, err := NewVerifier(password, 0)
	if err != nil {
		t.Fatal(err)
	}
	return v.String()
}

// sleeper records the delays an Authenticator asks for instead of sleeping.
type sleeper struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (s *sleeper) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.waits = append(s.waits, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeper) all() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.waits...)
}

// fixedClock never moves, so every failure asks for exactly FailureDelay.
func fixedClock() time.Time { return time.Unix(1700000000, 0) }

type fixture struct {
	users *UserStore
	auth  *Authenticator
	sleep *sleeper
	logs  *bytes.Buffer
}

func newFixture(t testing.TB, users []UserConfig, groups []GroupConfig) *fixture {
	t.Helper()
	us, err := NewUsers(users, groups)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{users: NewUserStore(us), sleep: &sleeper{}, logs: &bytes.Buffer{}}
	logger := slog.New(slog.NewJSONHandler(&syncWriter{w: f.logs}, nil))
	f.auth, err = NewAuthenticator(Options{
		Users:  f.users,
		Secret: []byte("test secret"),
		Audit:  NewAuditor(logger, AuditOptions{Rate: 1e6, Burst: 1e6}),
		Logger: logger,
		Now:    fixedClock,
		Sleep:  f.sleep.sleep,
	})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

func (f *fixture) listener(t testing.TB, cfg ListenerConfig) *Listener {
	t.Helper()
	l, err := f.auth.Listener(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// decode parses one encoded response packet.
func decode(t testing.TB, b []byte) protocol.Packet {
	t.Helper()
	r := protocol.NewReader(bytes.NewReader(b), protocol.ReaderOptions{Expect: protocol.Res})
	var p protocol.Packet
	if err := r.Read(&p); err != nil {
		t.Fatalf("decode %q: %v", b, err)
	}
	args := make([][]byte, len(p.Args))
	for i, a := range p.Args {
		args[i] = append([]byte(nil), a...)
	}
	p.Args = args
	return p
}

func start(mech string, ir string) *protocol.Packet {
	return &protocol.Packet{Magic: protocol.Req, Type: protocol.SASLStart, Args: [][]byte{[]byte(mech), []byte(ir)}}
}

func stepPkt(resp string) *protocol.Packet {
	return &protocol.Packet{Magic: protocol.Req, Type: protocol.SASLStep, Args: [][]byte{[]byte(resp)}}
}

// errorCode returns the code of an ERROR reply, or "" for another type.
func errorCode(t testing.TB, b []byte) string {
	p := decode(t, b)
	if p.Type != protocol.Error {
		return ""
	}
	return string(p.Arg(0))
}

var testAddr = &net.TCPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}

// connState returns a connection state as after a TLS handshake, with a
// verified client certificate when leaf is not nil.
func connState(leaf *x509.Certificate) *tls.ConnectionState {
	cs := &tls.ConnectionState{HandshakeComplete: true, Version: tls.VersionTLS13}
	if leaf != nil {
		cs.PeerCertificates = []*x509.Certificate{leaf}
		cs.VerifiedChains = [][]*x509.Certificate{{leaf}}
	}
	return cs
}

// pki makes certificates for tests.
type pki struct {
	t    testing.TB
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newCA(t testing.TB, name string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &pki{t: t, cert: cert, key: key}
}

type leafOpts struct {
	cn        string
	dns       []string
	uris      []string
	notBefore time.Time
	notAfter  time.Time
	server    bool
}

// issue signs a leaf certificate and returns it as a tls.Certificate.
func (ca *pki) issue(o leafOpts) tls.Certificate {
	t := ca.t
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if o.notBefore.IsZero() {
		o.notBefore = time.Now().Add(-time.Hour)
	}
	if o.notAfter.IsZero() {
		o.notAfter = time.Now().Add(time.Hour)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: o.cn},
		DNSNames:     o.dns,
		NotBefore:    o.notBefore,
		NotAfter:     o.notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	if o.server {
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	for _, u := range o.uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// writePair writes a certificate and key as PEM files and returns their
// paths.
func writePair(t testing.TB, dir, name string, c tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	certFile = filepath.Join(dir, name+".pem")
	keyFile = filepath.Join(dir, name+".key")
	kder, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}))
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}))
	return certFile, keyFile
}

func (ca *pki) pemFile(t testing.TB, dir, name string) string {
	p := filepath.Join(dir, name)
	writeFile(t, p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw}))
	return p
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
