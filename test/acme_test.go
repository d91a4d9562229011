package test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"

	"github.com/gearproxy/gearproxy/client"
)

// pebble is Let's Encrypt's test CA running in this process: its ACME
// directory on an httptest TLS server, and a VA that validates
// TLS-ALPN-01 by connecting to 127.0.0.1 on the port under test, because
// its DNS server (ours, below) resolves every name there.
type pebble struct {
	Directory string         // ACME directory URL
	CARoot    string         // PEM file of the directory's own HTTPS certificate
	Roots     *x509.CertPool // roots of the certificates it issues
}

// startPebble runs a CA whose challenges go to tlsPort. Pebble reads its
// knobs from the environment when built, so the caller cannot be
// parallel.
func startPebble(t *testing.T, tlsPort int) *pebble {
	t.Helper()
	// No random sleep before each validation (up to 15 s otherwise), and
	// no deliberately rejected nonces: both exist to shake out clients,
	// which is certmagic's test suite's job, not ours.
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	logger := log.New(io.Discard, "", 0)
	if testing.Verbose() {
		logger = log.New(testWriter{t}, "pebble ", 0)
	}
	store := db.NewMemoryStore()
	authority := ca.New(logger, store, "", "ecdsa", 0, 1, map[string]ca.Profile{"default": {Description: "test"}})
	validator := va.New(logger, 0, tlsPort, false, startLoopbackDNS(t), store)
	front := wfe.New(logger, store, validator, authority, []string{"pebble.letsencrypt.org"}, false, false, 0, 0)
	srv := httptest.NewUnstartedServer(front.Handler())
	srv.StartTLS()
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	p := &pebble{Directory: srv.URL + "/dir", CARoot: filepath.Join(dir, "pebble-https.pem"), Roots: x509.NewCertPool()}
	writePEM(t, p.CARoot, "CERTIFICATE", srv.Certificate().Raw)
	for i := range authority.GetNumberOfRootCerts() {
		p.Roots.AddCert(authority.GetRootCert(i).Cert)
	}
	return p
}

// startLoopbackDNS answers every A question with 127.0.0.1 and AAAA
// with nothing, over TCP (pebble's VA asks over TCP), so that the test
// domains need no entry anywhere.
func startLoopbackDNS(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, q *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(q)
		for _, question := range q.Question {
			if question.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: question.Name, Rrtype: dns.TypeA, Class: dns.ClassINET},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(m)
	})
	srv := &dns.Server{Listener: l, Handler: handler}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return l.Addr().String()
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(b []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// acmeProxy is `gearproxy run` with one ACME listener in front of a
// bundled backend.
type acmeProxy struct {
	*Server
	Domain string
	pebble *pebble
	bin    string
	config string
	dir    string
}

// restart kills the proxy and starts it again with the same config and
// data_dir.
func (ap *acmeProxy) restart(t *testing.T) {
	t.Helper()
	ap.Kill()
	s := startProcess(t, "gearproxy-acme-restarted", ap.Addr, filepath.Join(ap.dir, "restarted.log"), ap.bin, "run", "-config", ap.config)
	if s == nil {
		t.Fatal("gearproxy run did not start again")
	}
	ap.Server = s
}

// startACMEProxy starts pebble and gearproxy; tlsTable is the listener's
// [listener.tls] (client certificate policy), or "".
func startACMEProxy(t *testing.T, domain, tlsTable, users string) *acmeProxy {
	t.Helper()
	bin := gearproxyBinary(t)
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	portNum, _ := strconv.Atoi(port)
	pb := startPebble(t, portNum)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`data_dir = %q
handle_key = "acme-test"

[[listener]]
address = %q
sasl = ["SCRAM-SHA-256"]
auth_timeout = "5s"
%s
[listener.acme]
domains = [%q]
email = "ops@gearproxy.test"
ca = %q
ca_root = %q

[[backend]]
name = "shard1"
bundled = true
%s`, filepath.Join(dir, "data"), addr, tlsTable, domain, pb.Directory, pb.CARoot, users)
	cfgFile := filepath.Join(dir, "gearproxy.toml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	s := startProcess(t, "gearproxy-acme", addr, filepath.Join(dir, "stderr.log"), bin, "run", "-config", cfgFile)
	if s == nil {
		t.Fatal("gearproxy run with [listener.acme] did not start")
	}
	return &acmeProxy{Server: s, Domain: domain, pebble: pb, bin: bin, config: cfgFile, dir: dir}
}

// tlsConfig trusts only pebble's roots and expects the ACME domain.
func (ap *acmeProxy) tlsConfig(certs ...tls.Certificate) *tls.Config {
	cfg := &tls.Config{RootCAs: ap.pebble.Roots, ServerName: ap.Domain}
	if len(certs) > 0 {
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &certs[0], nil }
	}
	return cfg
}

// waitCertificate waits until the listener presents a certificate from
// pebble for the domain: the proxy obtained it.
func (ap *acmeProxy) waitCertificate(t *testing.T, certs ...tls.Certificate) *x509.Certificate {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var last error
	for time.Now().Before(deadline) {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", ap.Addr, ap.tlsConfig(certs...))
		if err == nil {
			leaf := c.ConnectionState().PeerCertificates[0]
			c.Close()
			return leaf
		}
		last = err
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("no certificate from pebble for %s: last handshake: %v\n%s", ap.Domain, last, tail(ap.LogPath, 4000))
	return nil
}

// acmeRunJob submits one job through the proxy with a worker serving it,
// both with cfg.
func acmeRunJob(t *testing.T, cfg client.Config, fn string) {
	t.Helper()
	w, err := client.NewWorker(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w.Register(fn, 0, func(ctx context.Context, j *client.WorkerJob) ([]byte, error) {
		return append([]byte("done:"), j.Data...), nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	c, err := client.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	out, err := c.Do(ctx, client.Job{Function: fn, Data: []byte("payload")})
	if err != nil || string(out) != "done:payload" {
		t.Fatalf("job %s: %q, %v", fn, out, err)
	}
}

// acmeUsers: alice logs in with SCRAM, acme-worker with its client
// certificate alone.
func acmeUsers(t *testing.T) string {
	return fmt.Sprintf(`
[[user]]
name = "alice"
password = %q
[user.allow]
submit = ["acme.*"]
work = ["acme.*"]

[[user]]
name = "acme-worker"
certificates = ["CN=acme-worker"]
[user.allow]
submit = ["acme.*"]
work = ["acme.*"]
`, verifier(t, "alice"))
}

// TestACMEObtainAndServe: the listener obtains its certificate from
// pebble over TLS-ALPN-01 on its own port; a client that trusts only
// pebble's root logs in with SCRAM and runs a job.
func TestACMEObtainAndServe(t *testing.T) {
	ap := startACMEProxy(t, "gearproxy.test", "", acmeUsers(t))
	leaf := ap.waitCertificate(t)
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "gearproxy.test" {
		t.Fatalf("certificate names %v", leaf.DNSNames)
	}
	acmeRunJob(t, client.Config{
		Addr: ap.Addr, TLS: ap.tlsConfig(), DialTimeout: 10 * time.Second, MaxBackoff: time.Second,
		Credentials: &client.Credentials{Username: "alice", Password: "alice", Mechanism: "SCRAM-SHA-256"},
	}, "acme.echo")
	// A restart serves the stored certificate: the same one, not asked
	// of the CA again (Let's Encrypt limits how often it issues).
	ap.restart(t)
	if again := ap.waitCertificate(t); again.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
		t.Fatalf("after a restart: serial %v, want the stored %v", again.SerialNumber, leaf.SerialNumber)
	}
	if strings.Contains(ap.Log(), "obtaining certificate") {
		t.Fatalf("the restarted proxy asked the CA again:\n%s", ap.Log())
	}

	// A client that dials the address and sends no server name (an IP
	// address is never sent as one) gets the same certificate: the first
	// domain is certmagic's default server name.
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", ap.Addr, &tls.Config{
		// No ServerName, so no SNI; the chain is verified below.
		InsecureSkipVerify: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	certs := c.ConnectionState().PeerCertificates
	inter := x509.NewCertPool()
	for _, ic := range certs[1:] {
		inter.AddCert(ic)
	}
	if _, err := certs[0].Verify(x509.VerifyOptions{Roots: ap.pebble.Roots, Intermediates: inter, DNSName: "gearproxy.test"}); err != nil {
		t.Fatalf("certificate without SNI: %v", err)
	}
}

// TestACMEWithRequiredClientCert: with client_auth = "require", the CA's
// acme-tls/1 probe (which has no client certificate) still validates,
// while a client without a certificate is refused, one with a mapped
// certificate logs in by it alone, and a connection that offers only
// acme-tls/1 is closed after its handshake instead of reaching a
// session.
func TestACMEWithRequiredClientCert(t *testing.T) {
	pki := newTestPKI(t, "acme-test-clients")
	_, _, pair := pki.issue(t, "acme-worker", false, time.Now().Add(24*time.Hour))
	ap := startACMEProxy(t, "secure.gearproxy.test", fmt.Sprintf("[listener.tls]\nclient_ca = %q\nclient_auth = \"require\"\n", pki.CAFile), acmeUsers(t))
	ap.waitCertificate(t, pair)
	// The CA's probes completed their handshakes without a client
	// certificate (or validation would have failed) and were closed
	// right after, before any session.
	if !strings.Contains(ap.Log(), "ACME TLS-ALPN-01 challenge connection") {
		t.Fatalf("no challenge connection was closed after its handshake:\n%s", ap.Log())
	}

	// No client certificate: refused, whatever the password.
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{
		Addr: ap.Addr, TLS: ap.tlsConfig(), DialTimeout: 5 * time.Second, MaxBackoff: time.Second,
		Credentials: &client.Credentials{Username: "alice", Password: "alice", Mechanism: "SCRAM-SHA-256"},
	})
	if err == nil {
		_, err = c.Echo(ctx, []byte("hello"))
		c.Close()
	}
	if err == nil {
		t.Fatal("a client without a certificate was served on a client_auth = \"require\" listener")
	}
	t.Logf("without a certificate: %v", err)

	// The mapped certificate alone logs in, against client_ca as with
	// certificate files.
	acmeRunJob(t, client.Config{Addr: ap.Addr, TLS: ap.tlsConfig(pair), DialTimeout: 10 * time.Second, MaxBackoff: time.Second}, "acme.cert")
	for _, line := range strings.Split(ap.Log(), "\n") {
		if strings.Contains(line, "connection open") && !strings.Contains(line, "user=acme-worker") {
			t.Fatalf("a session other than the certificate user's: %s", line)
		}
	}

	// Outside a challenge an acme-tls/1 probe gets no certificate at
	// all: nothing to talk to without a client certificate.
	probe, err := tls.DialWithDialer(&net.Dialer{Timeout: ioTimeout}, "tcp", ap.Addr,
		&tls.Config{ServerName: ap.Domain, NextProtos: []string{"acme-tls/1"}, InsecureSkipVerify: true})
	if err == nil {
		probe.Close()
		t.Fatal("an acme-tls/1 handshake succeeded with no challenge under way")
	}
}
