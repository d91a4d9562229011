package test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/auth"
	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/protocol"
)

// testPKI is a CA made for one test, with its files on disk for the proxy
// and stunnel.
type testPKI struct {
	dir    string
	cert   *x509.Certificate
	key    *ecdsa.PrivateKey
	CAFile string
	Pool   *x509.CertPool
	serial int64
	mu     sync.Mutex
}

func newTestPKI(t testing.TB, name string) *testPKI {
	t.Helper()
	dir, err := os.MkdirTemp(workDir, "pki-")
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
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
	p := &testPKI{dir: dir, cert: cert, key: key, CAFile: filepath.Join(dir, "ca.pem"), Pool: x509.NewCertPool(), serial: 1}
	p.Pool.AddCert(cert)
	writePEM(t, p.CAFile, "CERTIFICATE", der)
	return p
}

func writePEM(t testing.TB, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue signs a leaf certificate: a server one for 127.0.0.1, or a client
// one with the given CN, valid until notAfter. It returns the paths of
// its PEM certificate and key, and the pair.
func (p *testPKI) issue(t testing.TB, cn string, server bool, notAfter time.Time) (certFile, keyFile string, pair tls.Certificate) {
	t.Helper()
	p.mu.Lock()
	p.serial++
	serial := p.serial
	p.mu.Unlock()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile = filepath.Join(p.dir, fmt.Sprintf("%s-%d.pem", cn, serial))
	keyFile = filepath.Join(p.dir, fmt.Sprintf("%s-%d.key", cn, serial))
	writePEM(t, certFile, "CERTIFICATE", der)
	writePEM(t, keyFile, "PRIVATE KEY", kder)
	pair, err = tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, pair
}

// verifier is the users-file form of a password. 4096 iterations is
// SCRAM-SHA-256's minimum and keeps tests quick.
func verifier(t testing.TB, password string) string {
	t.Helper()
	v, err := auth.NewVerifier(password, 4096)
	if err != nil {
		t.Fatal(err)
	}
	return v.String()
}

// secureProxy is `gearproxy run` with a TLS listener (SASL and client
// certificates), a plaintext SASL listener, and a users file.
type secureProxy struct {
	*Server
	TLSAddr   string
	PlainAddr string
	// RequireAddr demands a client certificate; FixedTLSAddr is TLS
	// without authentication, every connection acting as carol.
	RequireAddr  string
	FixedTLSAddr string
	// TrustedAddr is plaintext with insecure_plain and ANONYMOUS (as
	// carol), as on a trusted network.
	TrustedAddr string
	Config      string
	CertFile    string
	KeyFile     string
	pki         *testPKI
	head        string // everything but the users
}

// Users of the security tests, with their passwords (the same as their
// names, for readability) and what they may do.
const secureUsers = `
[[user]]
name = "alice"
password = "%[1]s"
namespace = "{user}."
[user.allow]
submit = ["img.*"]
work = ["img.*"]
admin = ["status", "prioritystatus", "workers", "show jobs", "show unique jobs", "maxqueue"]
[user.deny]
submit = ["img.internal.*"]

[[user]]
name = "bob"
password = "%[2]s"
namespace = "{user}."
[user.allow]
submit = ["img.*"]
work = ["img.*"]
admin = ["status"]

[[user]]
name = "carol"
password = "%[3]s"
groups = ["shared"]

[[user]]
name = "dave"
password = "%[4]s"
groups = ["shared"]
max_payload = 1000
max_connections = 3

[[user]]
name = "cert-worker"
certificates = ["CN=cert-worker"]
[user.allow]
submit = ["cli.allowed"]
work = ["cli.allowed"]

[[user]]
name = "root"
password = "%[5]s"
superuser = true

[[group]]
name = "shared"
[group.allow]
submit = ["shared.*"]
work = ["shared.*"]
`

func (sp *secureProxy) usersText(t testing.TB) string {
	return fmt.Sprintf(secureUsers, verifier(t, "alice"), verifier(t, "bob"), verifier(t, "carol"), verifier(t, "dave"), verifier(t, "root"))
}

// startSecureProxy runs gearproxy with one bundled backend; extraListener
// is TOML appended to the TLS listener table (e.g. max_auth_failures).
func startSecureProxy(t testing.TB, pki *testPKI, extraListener string) *secureProxy {
	t.Helper()
	bin := gearproxyBinary(t)
	certFile, keyFile, _ := pki.issue(t, "gearproxy-test", true, time.Now().Add(24*time.Hour))
	for attempt := 0; attempt < 3; attempt++ {
		dir, err := os.MkdirTemp(workDir, "secure-")
		if err != nil {
			t.Fatal(err)
		}
		sp := &secureProxy{TLSAddr: freeAddr(t), PlainAddr: freeAddr(t), RequireAddr: freeAddr(t), FixedTLSAddr: freeAddr(t), TrustedAddr: freeAddr(t),
			Config: filepath.Join(dir, "gearproxy.toml"), CertFile: certFile, KeyFile: keyFile, pki: pki}
		sp.head = fmt.Sprintf(`data_dir = %[1]q
handle_key = "security-test"

[[listener]]
address = %[2]q
sasl = ["SCRAM-SHA-256"]
auth_timeout = "3s"

[[listener]]
address = %[7]q
auth_timeout = "3s"
[listener.tls]
cert = %[5]q
key = %[6]q
client_ca = %[8]q
client_auth = "require"

[[listener]]
address = %[10]q
sasl = ["PLAIN", "ANONYMOUS"]
insecure_plain = true
anonymous_user = "carol"

[[listener]]
address = %[9]q
user = "carol"
[listener.tls]
cert = %[5]q
key = %[6]q

[[listener]]
address = %[3]q
sasl = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "EXTERNAL"]
auth_timeout = "3s"
%[4]s
[listener.tls]
cert = %[5]q
key = %[6]q
client_ca = %[8]q
client_auth = "request"
cert_mapping = ["cn"]

[[backend]]
name = "shard1"
bundled = true
`, filepath.Join(dir, "data"), sp.PlainAddr, sp.TLSAddr, extraListener, certFile, keyFile, sp.RequireAddr, pki.CAFile, sp.FixedTLSAddr, sp.TrustedAddr)
		sp.writeConfig(t, sp.head+sp.usersText(t))
		// The request listener is the last: once it accepts, all do.
		s := startProcess(t, "gearproxy-secure", sp.TLSAddr, filepath.Join(dir, "stderr.log"), bin, "run", "-config", sp.Config)
		if s != nil {
			sp.Server = s
			return sp
		}
	}
	t.Fatal("gearproxy run with TLS did not start")
	return nil
}

func (sp *secureProxy) writeConfig(t testing.TB, text string) {
	t.Helper()
	if err := os.WriteFile(sp.Config, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// reload sends SIGHUP and waits for the log line that says how it went;
// it returns that line.
func (sp *secureProxy) reload(t testing.TB) string {
	t.Helper()
	before := strings.Count(sp.Log(), "reload")
	if err := syscall.Kill(sp.Pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		log := sp.Log()
		if strings.Count(log, "reload") > before {
			lines := strings.Split(strings.TrimSpace(log), "\n")
			for i := len(lines) - 1; i >= 0; i-- {
				if strings.Contains(lines[i], "reload") {
					return lines[i]
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no reload line in the log after SIGHUP:\n%s", sp.Log())
	return ""
}

// waitLog waits until the proxy's log has a line containing every part.
func (sp *secureProxy) waitLog(t testing.TB, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(sp.Log(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(l, p)
			}
			if all {
				return l
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no log line with %q:\n%s", parts, tail(sp.LogPath, 3000))
	return ""
}

func (sp *secureProxy) tlsConfig(certs ...tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: sp.pki.Pool, ServerName: "127.0.0.1"}
	if len(certs) > 0 {
		// Always present it: with Certificates, crypto/tls would
		// quietly send nothing when the server's CA list does not
		// match, and a bad certificate would never reach the proxy.
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
	}
	return cfg
}

// clientConfig is a Go client of the TLS listener as user/password.
func (sp *secureProxy) clientConfig(user, mech string) client.Config {
	return client.Config{
		Addr: sp.TLSAddr, TLS: sp.tlsConfig(), DialTimeout: 5 * time.Second, MaxBackoff: time.Second,
		Credentials: &client.Credentials{Username: user, Password: user, Mechanism: mech},
	}
}

func (sp *secureProxy) dial(t testing.TB, user, mech string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, sp.clientConfig(user, mech))
	if err != nil {
		t.Fatalf("%s with %s: %v", user, mech, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// startWorker runs a Go worker as user that answers every function with
// "<user>:<function as the worker sees it>:<unique>:<data>".
func (sp *secureProxy) startWorker(t testing.TB, user string, fns ...string) {
	t.Helper()
	w, err := client.NewWorker(sp.clientConfig(user, "SCRAM-SHA-256"))
	if err != nil {
		t.Fatal(err)
	}
	for _, fn := range fns {
		w.Register(fn, 0, func(ctx context.Context, j *client.WorkerJob) ([]byte, error) {
			return []byte(user + ":" + j.Function + ":" + j.Unique + ":" + string(j.Data)), nil
		})
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// rawTLS is a raw protocol connection over TLS to the TLS listener.
func (sp *secureProxy) rawTLS(t testing.TB, certs ...tls.Certificate) (*RawConn, error) {
	t.Helper()
	nc, err := net.DialTimeout("tcp", sp.TLSAddr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	tc := tls.Client(nc, sp.tlsConfig(certs...))
	nc.SetDeadline(time.Now().Add(ioTimeout))
	err = tc.Handshake()
	nc.SetDeadline(time.Time{})
	return &RawConn{t: t, conn: tc, br: bufio.NewReaderSize(tc, 64<<10)}, err
}

// adminAs runs an admin list command as user and returns its lines.
func (sp *secureProxy) adminAs(t testing.TB, user, line string) []string {
	t.Helper()
	c := sp.rawAuthed(t, user)
	c.SendLine(line)
	return c.RecvList()
}

// rawAuthed is a raw TLS connection authenticated with PLAIN.
func (sp *secureProxy) rawAuthed(t testing.TB, user string) *RawConn {
	t.Helper()
	c, err := sp.rawTLS(t)
	if err != nil {
		t.Fatal(err)
	}
	c.Send(protocol.SASLStart, "PLAIN", "\x00"+user+"\x00"+user)
	if r := c.Recv(); r.Type != protocol.SASLOK {
		t.Fatalf("PLAIN as %s: %v", user, r)
	}
	return c
}
