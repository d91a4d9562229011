package test

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/protocol"
)

// errorCode is the code of an ERROR reply, "" for anything else.
func errorCode(r Reply) string {
	if r.Type != protocol.Error || len(r.Args) == 0 {
		return ""
	}
	return r.Args[0]
}

// Each kind of bad input before authentication gets a clear error, leaves
// an audit line, and does not disturb a session doing real work meanwhile.
func TestSecurityBadInputBeforeAuth(t *testing.T) {
	t.Parallel()
	sp := startSecureProxy(t, newTestPKI(t, "ca"), "max_auth_failures = 3")
	sp.startWorker(t, "carol", "shared.echo")
	bystander := sp.dial(t, "carol", "SCRAM-SHA-256")
	stillWorks := func(t *testing.T) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := bystander.Do(ctx, client.Job{Function: "shared.echo", Data: []byte(t.Name())}); err != nil {
			t.Fatalf("another session failed meanwhile: %v", err)
		}
	}
	raw := func(t *testing.T) *RawConn {
		c, err := sp.rawTLS(t)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	t.Run("wrong password until the limit", func(t *testing.T) {
		c := raw(t)
		for i := 1; i <= 3; i++ {
			c.Send(protocol.SASLStart, "PLAIN", "\x00alice\x00wrong")
			if r := c.Recv(); errorCode(r) != "AUTH_FAILED" {
				t.Fatalf("attempt %d: %v, want ERROR AUTH_FAILED", i, r)
			}
		}
		if got := c.WaitClosed(); len(got) != 0 {
			t.Fatalf("after the third failure: %v, want the connection closed", got)
		}
		sp.waitLog(t, "auth.failure", "user=alice", "mechanism=PLAIN")
		stillWorks(t)
	})
	t.Run("packet before authentication", func(t *testing.T) {
		c := raw(t)
		c.Send(protocol.SubmitJob, "shared.echo", "", "x")
		got := c.WaitClosed()
		if len(got) != 1 || errorCode(got[0]) != "AUTH_REQUIRED" {
			t.Fatalf("got %v, want ERROR AUTH_REQUIRED then close", got)
		}
		sp.waitLog(t, "auth.failure", "packet before authentication: SUBMIT_JOB")
		stillWorks(t)
	})
	t.Run("admin line before authentication", func(t *testing.T) {
		c := raw(t)
		c.SendLine("status")
		got := c.WaitClosed()
		if len(got) != 1 || !strings.HasPrefix(got[0].Line, "ERR AUTH_REQUIRED") {
			t.Fatalf("got %v, want ERR AUTH_REQUIRED then close", got)
		}
		stillWorks(t)
	})
	t.Run("echo is allowed before authentication", func(t *testing.T) {
		c := raw(t)
		c.Send(protocol.EchoReq, "ping")
		c.Expect(protocol.EchoRes, "ping")
	})
	t.Run("SASL_STEP out of sequence", func(t *testing.T) {
		c := raw(t)
		c.Send(protocol.SASLStep, "n,,n=alice,r=abc")
		if r := c.Recv(); errorCode(r) != "AUTH_SEQUENCE" {
			t.Fatalf("got %v, want ERROR AUTH_SEQUENCE", r)
		}
		// The connection stays usable: a proper login follows.
		c.Send(protocol.SASLStart, "PLAIN", "\x00alice\x00alice")
		if r := c.Recv(); r.Type != protocol.SASLOK {
			t.Fatalf("login after AUTH_SEQUENCE: %v", r)
		}
	})
	t.Run("SASL_START twice", func(t *testing.T) {
		c := raw(t)
		c.Send(protocol.SASLStart, "SCRAM-SHA-256", "n,,n=alice,r=clientnonce0123456789")
		if r := c.Recv(); r.Type != protocol.SASLChallenge {
			t.Fatalf("first SASL_START: %v, want SASL_CHALLENGE", r)
		}
		// A second SASL_START abandons the first exchange and begins
		// anew (RFC 4422 section 3.5): a fresh server nonce, and no
		// trace of the first exchange is accepted any more.
		c.Send(protocol.SASLStart, "SCRAM-SHA-256", "n,,n=alice,r=othernonce0123456789")
		r := c.Recv()
		if r.Type != protocol.SASLChallenge || !strings.HasPrefix(r.Args[0], "r=othernonce0123456789") {
			t.Fatalf("second SASL_START: %v, want a new SASL_CHALLENGE for the new nonce", r)
		}
		c.Send(protocol.SASLStep, "c=biws,r=clientnonce0123456789,p=AAAA")
		if r := c.Recv(); errorCode(r) != "AUTH_FAILED" {
			t.Fatalf("a step of the abandoned exchange: %v, want ERROR AUTH_FAILED", r)
		}
		stillWorks(t)
	})
	t.Run("SASL_START after success", func(t *testing.T) {
		c := sp.rawAuthed(t, "carol")
		c.Send(protocol.SASLStart, "PLAIN", "\x00alice\x00alice")
		if r := c.Recv(); errorCode(r) != "AUTH_SEQUENCE" {
			t.Fatalf("got %v, want ERROR AUTH_SEQUENCE: the user never changes", r)
		}
		c.Send(protocol.EchoReq, "still open")
		c.Expect(protocol.EchoRes, "still open")
	})
	t.Run("garbage SASL data", func(t *testing.T) {
		c := raw(t)
		c.Send(protocol.SASLStart, "SCRAM-SHA-256", "\xff\xfe garbage, not a client-first-message")
		if r := c.Recv(); errorCode(r) != "AUTH_FAILED" {
			t.Fatalf("got %v, want ERROR AUTH_FAILED", r)
		}
		c.Send(protocol.SASLStart, "NOT-A-MECH", "")
		if r := c.Recv(); errorCode(r) != "AUTH_MECH_UNSUPPORTED" {
			t.Fatalf("got %v, want ERROR AUTH_MECH_UNSUPPORTED", r)
		}
		stillWorks(t)
	})
	t.Run("oversized SASL data", func(t *testing.T) {
		c := raw(t)
		c.Send(protocol.SASLStart, "PLAIN", "\x00alice\x00"+strings.Repeat("A", 64<<10))
		got := c.WaitClosed()
		if len(got) != 1 || got[0].Type != protocol.Error {
			t.Fatalf("got %v, want one ERROR then close", got)
		}
		t.Logf("oversized: %v", got[0])
		stillWorks(t)
	})
	t.Run("plaintext spoken to the TLS listener", func(t *testing.T) {
		c := dialRaw(t, sp.TLSAddr)
		c.Send(protocol.EchoReq, "hello")
		for _, r := range c.WaitClosed() {
			if r.Type == protocol.EchoRes {
				t.Fatalf("a plaintext packet was served on the TLS listener: %v", r)
			}
		}
		sp.waitLog(t, "auth.failure", "TLS handshake")
		stillWorks(t)
	})
	t.Run("TLS spoken to the plaintext listener", func(t *testing.T) {
		nc, err := net.DialTimeout("tcp", sp.PlainAddr, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.SetDeadline(time.Now().Add(ioTimeout))
		err = tls.Client(nc, sp.tlsConfig()).Handshake()
		if err == nil {
			t.Fatal("a TLS handshake succeeded on the plaintext listener")
		}
		t.Logf("handshake: %v", err)
		stillWorks(t)
	})
}

// Connections that never send a ClientHello hold nobody up: each is cut
// off at auth_timeout on its own goroutine, and meanwhile a client keeps
// completing jobs.
func TestSecuritySilentConnections(t *testing.T) {
	t.Parallel()
	sp := startSecureProxy(t, newTestPKI(t, "ca"), "")
	sp.startWorker(t, "carol", "shared.echo")
	c := sp.dial(t, "carol", "SCRAM-SHA-256")
	var silent []net.Conn
	for range 50 {
		nc, err := net.DialTimeout("tcp", sp.TLSAddr, ioTimeout)
		if err != nil {
			t.Fatal(err)
		}
		silent = append(silent, nc)
		t.Cleanup(func() { nc.Close() })
	}
	// New logins and jobs go through while all 50 are open.
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cc := c
			if i%2 == 1 {
				cc = sp.dial(t, "carol", "PLAIN")
			}
			for range 25 {
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := cc.Do(ctx, client.Job{Function: "shared.echo", Data: []byte("x")})
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("a legitimate client failed while 50 connections sat silent: %v", err)
	}
	// And the silent ones are closed by the proxy at auth_timeout.
	for _, nc := range silent {
		nc.SetReadDeadline(time.Now().Add(15 * time.Second))
		if _, err := nc.Read(make([]byte, 1)); err == nil {
			t.Fatal("a silent connection got data")
		} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("a silent connection was not closed by the proxy")
		}
	}
	sp.waitLog(t, "auth.failure", "authentication not finished in time")
}

// Client certificates: a trusted one logs in without SASL; expired,
// self-signed (untrusted) and other-CA ones fail the handshake, which is
// audited.
func TestSecurityClientCertificates(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "ca")
	sp := startSecureProxy(t, pki, "")
	_, _, good := pki.issue(t, "cert-worker", false, time.Now().Add(time.Hour))
	_, _, unmapped := pki.issue(t, "nobody-known", false, time.Now().Add(time.Hour))
	_, _, expired := pki.issue(t, "cert-worker", false, time.Now().Add(-time.Hour))
	_, _, otherCA := newTestPKI(t, "other-ca").issue(t, "cert-worker", false, time.Now().Add(time.Hour))
	self := newTestPKI(t, "cert-worker") // a CA nobody trusts presents itself
	_, _, selfSigned := self.issue(t, "cert-worker", false, time.Now().Add(time.Hour))

	t.Run("trusted certificate logs in", func(t *testing.T) {
		c, err := sp.rawTLS(t, good)
		if err != nil {
			t.Fatal(err)
		}
		c.Send(protocol.SubmitJobBg, "cli.allowed", "", "x")
		c.Send(protocol.SubmitJobBg, "cli.forbidden", "", "x")
		if r := c.Recv(); r.Type != protocol.JobCreated {
			t.Fatalf("allowed submit: %v", r)
		}
		if r := c.Recv(); errorCode(r) != "PERMISSION_DENIED" {
			t.Fatalf("forbidden submit: %v", r)
		}
	})
	t.Run("unmapped certificate still needs SASL", func(t *testing.T) {
		c, err := sp.rawTLS(t, unmapped)
		if err != nil {
			t.Fatal(err)
		}
		c.Send(protocol.SubmitJobBg, "cli.allowed", "", "x")
		if got := c.WaitClosed(); len(got) != 1 || errorCode(got[0]) != "AUTH_REQUIRED" {
			t.Fatalf("got %v, want AUTH_REQUIRED", got)
		}
	})
	for _, tc := range []struct {
		name string
		cert tls.Certificate
	}{{"expired", expired}, {"wrong CA", otherCA}, {"untrusted self-made CA", selfSigned}} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := sp.rawTLS(t, tc.cert)
			if err == nil {
				// TLS 1.3: the server's verdict arrives after the
				// client's handshake is done.
				c.Send(protocol.EchoReq, "x")
				_, err = c.Next(ioTimeout)
			}
			if err == nil {
				t.Fatal("served a connection with a bad client certificate")
			}
			t.Logf("refused: %v", err)
		})
	}
	sp.waitLog(t, "auth.failure", "TLS handshake", "certificate")
}

// client_auth = "require" refuses a client without a certificate at the
// handshake and logs in one with a mapped certificate; a listener with
// `user` over TLS authenticates nobody but still encrypts.
func TestSecurityRequireAndFixedTLS(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t, "ca")
	sp := startSecureProxy(t, pki, "")
	_, _, good := pki.issue(t, "cert-worker", false, time.Now().Add(time.Hour))
	dial := func(addr string, certs ...tls.Certificate) (*RawConn, error) {
		nc, err := net.DialTimeout("tcp", addr, ioTimeout)
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
	c, err := dial(sp.RequireAddr)
	if err == nil {
		c.Send(protocol.EchoReq, "x")
		_, err = c.Next(ioTimeout)
	}
	if err == nil {
		t.Fatal("client_auth = require served a client without a certificate")
	}
	c, err = dial(sp.RequireAddr, good)
	if err != nil {
		t.Fatal(err)
	}
	c.Send(protocol.SubmitJobBg, "cli.allowed", "", "x")
	if r := c.Recv(); r.Type != protocol.JobCreated {
		t.Fatalf("cert-worker on the require listener: %v", r)
	}

	f, err := dial(sp.FixedTLSAddr)
	if err != nil {
		t.Fatal(err)
	}
	f.Send(protocol.SubmitJobBg, "shared.fixed", "", "x")
	f.Send(protocol.SubmitJobBg, "img.not-carols", "", "x")
	if r := f.Recv(); r.Type != protocol.JobCreated {
		t.Fatalf("carol's listener, her function: %v", r)
	}
	if r := f.Recv(); errorCode(r) != "PERMISSION_DENIED" {
		t.Fatalf("carol's listener, another function: %v", r)
	}
	plain := dialRaw(t, sp.FixedTLSAddr)
	plain.Send(protocol.EchoReq, "clear text")
	for _, r := range plain.WaitClosed() {
		if r.Type == protocol.EchoRes {
			t.Fatal("the TLS listener with a fixed user served clear text")
		}
	}
}
