// Package connecttest provides what tests of `gearproxy connect` need
// until the proxy itself speaks SASL: a test PKI written to files, and a
// Front, the smallest TLS + SASL Gearman server there can be. A Front runs
// auth.Listener.AuthenticateConn (the proxy's own seam) on each
// connection and then relays it unchanged to a plain Gearman server, so
// behind it real gearmand semantics are tested through real TLS and SASL.
//
// When the proxy speaks SASL, tests swap StartFront for a started proxy:
// both are an Upstream (an address, the server name, the CA).
package connecttest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/auth"
	"github.com/gearproxy/gearproxy/protocol"
)

// ServerName is the name in every server certificate a PKI issues; dial
// the front by address and verify this name (-server-name).
const ServerName = "gearproxy.test"

// PKI is a throwaway certificate authority whose files live in a test's
// temporary directory.
type PKI struct {
	Dir    string
	CAFile string // PEM of the CA certificate
	Pool   *x509.CertPool
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
}

// NewPKI creates a CA valid for an hour.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "connecttest CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := &PKI{Dir: t.TempDir(), Pool: x509.NewCertPool(), caKey: key}
	p.ca, _ = x509.ParseCertificate(der)
	p.Pool.AddCert(p.ca)
	p.CAFile = writePEM(t, p.Dir, "ca.pem", "CERTIFICATE", der)
	return p
}

// Cert is an issued certificate, in memory and as PEM files.
type Cert struct {
	TLS      tls.Certificate
	CertFile string
	KeyFile  string
}

// Issue makes a certificate for cn (also its DNS name), usable by a server
// and a client.
func (p *PKI) Issue(t testing.TB, cn string) Cert {
	t.Helper()
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
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return Cert{
		TLS:      tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf},
		CertFile: writePEM(t, p.Dir, cn+".pem", "CERTIFICATE", der),
		KeyFile:  writePEM(t, p.Dir, cn+".key", "PRIVATE KEY", keyDER),
	}
}

func writePEM(t testing.TB, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Upstream is what `gearproxy connect` and the Go client need to reach a
// TLS + SASL server: a Front today, the proxy later.
type Upstream struct {
	Addr       string // host:port to dial
	ServerName string // name the server certificate is verified against
	CAFile     string
	Pool       *x509.CertPool
}

// FrontOptions describe a Front's users and where it relays.
type FrontOptions struct {
	// Backend is the plain Gearman server (gearmand) each authenticated
	// connection is relayed to.
	Backend string
	// Passwords maps user names to clear-text passwords; the front keeps
	// only their SCRAM verifiers, as the proxy does.
	Passwords map[string]string
	// Certificates maps user names to a client certificate's common name
	// ("CN=..." is added), for EXTERNAL.
	Certificates map[string]string
	// Mechanisms offered; default SCRAM-SHA-256-PLUS, SCRAM-SHA-256,
	// PLAIN, EXTERNAL.
	Mechanisms []string
}

// Front is a running TLS + SASL front; it stops when the test ends.
type Front struct {
	Upstream
	accepted atomic.Int64
	ln       net.Listener
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    map[net.Conn]struct{}
}

// StartFront starts a Front on a free 127.0.0.1 port.
func StartFront(t testing.TB, pki *PKI, o FrontOptions) *Front {
	t.Helper()
	server := pki.Issue(t, ServerName)
	tlsSrv, err := auth.NewTLSServer(auth.TLSConfig{Cert: server.CertFile, Key: server.KeyFile,
		ClientCA: pki.CAFile, ClientAuth: auth.ClientAuthRequest}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var users []auth.UserConfig
	for name, password := range o.Passwords {
		v, err := auth.NewVerifier(password, 0)
		if err != nil {
			t.Fatal(err)
		}
		users = append(users, auth.UserConfig{Name: name, Password: v.String(), Superuser: true})
	}
	for name, cn := range o.Certificates {
		users = append(users, auth.UserConfig{Name: name, Certificates: []string{"CN=" + cn}, Superuser: true})
	}
	us, err := auth.NewUsers(users, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, err := auth.NewAuthenticator(auth.Options{Users: auth.NewUserStore(us)})
	if err != nil {
		t.Fatal(err)
	}
	mechs := o.Mechanisms
	if mechs == nil {
		mechs = []string{auth.MechSCRAMPlus, auth.MechSCRAM, auth.MechPlain, auth.MechExternal}
	}
	l, err := a.Listener(auth.ListenerConfig{Name: "front", Mechanisms: mechs, TLS: tlsSrv,
		// Many failures on one source are what a flood test makes.
		MaxAuthFailures: 3})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &Front{Upstream: Upstream{Addr: ln.Addr().String(), ServerName: ServerName, CAFile: pki.CAFile, Pool: pki.Pool},
		ln: ln, conns: make(map[net.Conn]struct{})}
	f.wg.Add(1)
	go f.serve(l, o.Backend)
	t.Cleanup(f.close)
	return f
}

func (f *Front) serve(l *auth.Listener, backend string) {
	defer f.wg.Done()
	for {
		nc, err := f.ln.Accept()
		if err != nil {
			return
		}
		if !f.track(nc) {
			nc.Close()
			return
		}
		f.accepted.Add(1)
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer f.untrack(nc)
			f.relay(l, nc, backend)
		}()
	}
}

// relay authenticates one connection and relays it to the backend.
func (f *Front) relay(l *auth.Listener, nc net.Conn, backend string) {
	defer nc.Close()
	res, err := l.AuthenticateConn(context.Background(), nc)
	if err != nil {
		return
	}
	defer res.Conn.Close()
	bc, err := net.DialTimeout("tcp", backend, 5*time.Second)
	if err != nil {
		res.Conn.Write(protocol.AppendError(nil, "BACKEND_UNAVAILABLE", err.Error()))
		return
	}
	if !f.track(bc) {
		bc.Close()
		return
	}
	defer f.untrack(bc)
	defer bc.Close()
	if len(res.Buffered) > 0 {
		if _, err := bc.Write(res.Buffered); err != nil {
			return
		}
	}
	done := make(chan struct{})
	go func() {
		io.Copy(bc, res.Conn)
		// gearmand closes on end of input, which ends the copy below.
		bc.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	io.Copy(res.Conn, bc)
	res.Conn.Close()
	<-done
}

// Accepted is the number of connections the front has accepted: how often
// a sidecar tried to log in.
func (f *Front) Accepted() int64 { return f.accepted.Load() }

func (f *Front) track(c net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.conns == nil {
		return false
	}
	f.conns[c] = struct{}{}
	return true
}

func (f *Front) untrack(c net.Conn) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.conns, c)
}

func (f *Front) close() {
	f.ln.Close()
	f.mu.Lock()
	for c := range f.conns {
		c.Close()
	}
	f.conns = nil
	f.mu.Unlock()
	f.wg.Wait()
}
