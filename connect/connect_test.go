package connect_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/connect"
	"github.com/gearproxy/gearproxy/connect/connecttest"
	"github.com/gearproxy/gearproxy/protocol"
)

// ioTimeout bounds each wait on a peer so that a hang fails the test; it
// is not a performance threshold.
const ioTimeout = 10 * time.Second

// startBackend is a minimal plain Gearman server behind the front: it
// answers OPTION_REQ and ECHO_REQ, enough to see bytes go both ways.
func startBackend(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer nc.Close()
				r := protocol.NewReader(nc, protocol.ReaderOptions{Expect: protocol.Req})
				w := protocol.NewWriter(nc)
				var p protocol.Packet
				for r.Read(&p) == nil {
					switch p.Type {
					case protocol.OptionReq:
						w.WritePacket(protocol.Res, protocol.OptionRes, p.Arg(0))
					case protocol.EchoReq:
						w.WritePacket(protocol.Res, protocol.EchoRes, p.Data())
					}
					if w.Flush() != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// lockedBuffer collects the sidecar's log lines from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

type fixture struct {
	pki   *connecttest.PKI
	front *connecttest.Front
	log   *lockedBuffer
}

func newFixture(t *testing.T) *fixture {
	pki := connecttest.NewPKI(t)
	front := connecttest.StartFront(t, pki, connecttest.FrontOptions{
		Backend:      startBackend(t),
		Passwords:    map[string]string{"alice": "s3cret"},
		Certificates: map[string]string{"worker": "worker.example"},
	})
	return &fixture{pki: pki, front: front, log: &lockedBuffer{}}
}

// sidecar starts a Sidecar on 127.0.0.1 for cfg (Server, TLS defaults
// filled from the front) and returns its local address.
func (f *fixture) sidecar(t *testing.T, cfg connect.Config) (*connect.Sidecar, string) {
	if cfg.Server == "" {
		cfg.Server = f.front.Addr
	}
	if cfg.TLS == nil {
		cfg.TLS = &tls.Config{RootCAs: f.pki.Pool, ServerName: f.front.ServerName}
	}
	cfg.Logger = slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	s, err := connect.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := connect.Listen("127.0.0.1:0", false)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-served; !errors.Is(err, connect.ErrSidecarClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, ln.Addr().String()
}

var alice = client.Credentials{Mechanism: client.MechSCRAM, Username: "alice", Password: "s3cret"}

func dial(t *testing.T, addr string) net.Conn {
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(ioTimeout))
	return c
}

func send(t *testing.T, c net.Conn, typ protocol.Type, args ...string) {
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	if _, err := c.Write(protocol.AppendPacket(nil, protocol.Req, typ, bs...)); err != nil {
		t.Fatal(err)
	}
}

// recv reads one response packet and returns its type and its body.
func recv(t *testing.T, c net.Conn) (protocol.Type, string) {
	t.Helper()
	var h [protocol.HeaderSize]byte
	if _, err := io.ReadFull(c, h[:]); err != nil {
		t.Fatalf("read header: %v", err)
	}
	body := make([]byte, binary.BigEndian.Uint32(h[8:]))
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatalf("read body: %v", err)
	}
	return protocol.Type(binary.BigEndian.Uint32(h[4:])), string(body)
}

func expectClosed(t *testing.T, c net.Conn) {
	t.Helper()
	b, err := io.ReadAll(c)
	if err != nil || len(b) > 0 {
		t.Fatalf("want a clean close, got %q, %v", b, err)
	}
}

// TestRelay: every mechanism the sidecar may use, with a request sent
// before the upstream is ready (held back and delivered in order) and one
// after.
func TestRelay(t *testing.T) {
	f := newFixture(t)
	workerCert := f.pki.Issue(t, "worker.example")
	tests := []struct {
		name  string
		creds client.Credentials
		cert  bool
	}{
		{"SCRAM-SHA-256", alice, false},
		{"auto (SCRAM-SHA-256-PLUS)", client.Credentials{Username: "alice", Password: "s3cret"}, false},
		{"PLAIN", client.Credentials{Mechanism: client.MechPlain, Username: "alice", Password: "s3cret"}, false},
		{"EXTERNAL", client.Credentials{Mechanism: client.MechExternal}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tc := &tls.Config{RootCAs: f.pki.Pool, ServerName: connecttest.ServerName}
			if tt.cert {
				tc.Certificates = []tls.Certificate{workerCert.TLS}
			}
			_, addr := f.sidecar(t, connect.Config{TLS: tc, Credentials: tt.creds})
			c := dial(t, addr)
			send(t, c, protocol.OptionReq, "exceptions")
			send(t, c, protocol.EchoReq, "early")
			if typ, body := recv(t, c); typ != protocol.OptionRes || body != "exceptions" {
				t.Fatalf("got %v %q", typ, body)
			}
			if typ, body := recv(t, c); typ != protocol.EchoRes || body != "early" {
				t.Fatalf("got %v %q", typ, body)
			}
			big := strings.Repeat("x", 200<<10)
			send(t, c, protocol.EchoReq, big)
			if typ, body := recv(t, c); typ != protocol.EchoRes || body != big {
				t.Fatalf("big echo: got %v, %d bytes", typ, len(body))
			}
			// A half-close reaches the server, whose close comes back.
			c.(*net.TCPConn).CloseWrite()
			expectClosed(t, c)
		})
	}
	if n := strings.Count(f.log.String(), "relay open"); n != len(tests) {
		t.Errorf("%d relay open lines for %d connections:\n%s", n, len(tests), f.log)
	}
	if n := strings.Count(f.log.String(), "relay closed"); n != len(tests) {
		t.Errorf("%d relay closed lines for %d connections:\n%s", n, len(tests), f.log)
	}
}

// TestRefusedAnswersFirstRequest: when the upstream refuses, the first
// request that expects a reply gets the cause, wherever it sits.
func TestRefusedAnswersFirstRequest(t *testing.T) {
	f := newFixture(t)
	_, addr := f.sidecar(t, connect.Config{Credentials: client.Credentials{
		Mechanism: client.MechSCRAM, Username: "alice", Password: "wrong"}})
	t.Run("PHP's addServer, then a job", func(t *testing.T) {
		// OPTION_REQ exceptions is accepted: libgearman would hide the
		// text of an ERROR to it; the job's reply slot carries it.
		c := dial(t, addr)
		send(t, c, protocol.OptionReq, "exceptions")
		if typ, body := recv(t, c); typ != protocol.OptionRes || body != "exceptions" {
			t.Fatalf("got %v %q", typ, body)
		}
		send(t, c, protocol.SubmitJob, "reverse", "", "data")
		typ, body := recv(t, c)
		if typ != protocol.Error || !strings.HasPrefix(body, "AUTH_FAILED\x00") || !strings.Contains(body, "alice") {
			t.Fatalf("got %v %q", typ, body)
		}
		expectClosed(t, c)
	})
	t.Run("worker: CAN_DO then GRAB_JOB", func(t *testing.T) {
		c := dial(t, addr)
		send(t, c, protocol.SetClientID, "w1")
		send(t, c, protocol.CanDo, "reverse")
		send(t, c, protocol.GrabJobAll)
		if typ, body := recv(t, c); typ != protocol.Error || !strings.HasPrefix(body, "AUTH_FAILED\x00") {
			t.Fatalf("got %v %q", typ, body)
		}
		expectClosed(t, c)
	})
	t.Run("admin line", func(t *testing.T) {
		c := dial(t, addr)
		c.Write([]byte("status\r\n"))
		line, err := io.ReadAll(c)
		if err != nil || !strings.HasPrefix(string(line), "ERR AUTH_FAILED ") {
			t.Fatalf("got %q, %v", line, err)
		}
	})
	t.Run("request sent late", func(t *testing.T) {
		c := dial(t, addr)
		// Nothing is sent until the upstream has certainly failed: the
		// failure line is in the log.
		waitFor(t, func() bool { return strings.Contains(f.log.String(), "upstream failed") })
		send(t, c, protocol.EchoReq, "late")
		if typ, _ := recv(t, c); typ != protocol.Error {
			t.Fatalf("got %v", typ)
		}
	})
}

// waitFor polls cond until it holds or ioTimeout passes.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(ioTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in time")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestFailureLoggedOnce: a flood of connections with a wrong password
// leaves one line naming the cause; a working relay afterwards says so.
func TestFailureLoggedOnce(t *testing.T) {
	f := newFixture(t)
	_, addr := f.sidecar(t, connect.Config{Credentials: client.Credentials{
		Mechanism: client.MechPlain, Username: "alice", Password: "wrong"}})
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.DialTimeout("tcp", addr, ioTimeout)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(ioTimeout))
			c.Write(protocol.AppendPacket(nil, protocol.Req, protocol.EchoReq, []byte("x")))
			io.ReadAll(c)
		}()
	}
	wg.Wait()
	log := f.log.String()
	if n := strings.Count(log, "upstream failed"); n != 1 {
		t.Fatalf("%d failure lines for 20 connections:\n%s", n, log)
	}
	if !strings.Contains(log, "AUTH_FAILED") {
		t.Fatalf("the failure line does not name the cause:\n%s", log)
	}
}

// TestUnknownCA: a server certificate from a CA we do not trust is
// refused, and the local client is told why.
func TestUnknownCA(t *testing.T) {
	f := newFixture(t)
	other := connecttest.NewPKI(t)
	_, addr := f.sidecar(t, connect.Config{TLS: &tls.Config{RootCAs: other.Pool, ServerName: connecttest.ServerName},
		Credentials: alice})
	c := dial(t, addr)
	send(t, c, protocol.EchoReq, "x")
	typ, body := recv(t, c)
	if typ != protocol.Error || !strings.HasPrefix(body, connect.CodeUpstreamUnavailable+"\x00") || !strings.Contains(body, "certificate") {
		t.Fatalf("got %v %q", typ, body)
	}
	if !strings.Contains(f.log.String(), "certificate signed by unknown authority") {
		t.Fatalf("log does not name the cause:\n%s", f.log)
	}
}

// TestWrongServerName: the certificate must name the host dialled.
func TestWrongServerName(t *testing.T) {
	f := newFixture(t)
	_, addr := f.sidecar(t, connect.Config{TLS: &tls.Config{RootCAs: f.pki.Pool, ServerName: "elsewhere.test"},
		Credentials: alice})
	c := dial(t, addr)
	send(t, c, protocol.EchoReq, "x")
	if typ, body := recv(t, c); typ != protocol.Error || !strings.Contains(body, "elsewhere.test") {
		t.Fatalf("got %v %q", typ, body)
	}
}

// TestUpstreamDown: nothing listens upstream.
func TestUpstreamDown(t *testing.T) {
	f := newFixture(t)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	_, addr := f.sidecar(t, connect.Config{Server: dead, Credentials: alice})
	c := dial(t, addr)
	send(t, c, protocol.OptionReq, "unknown-option")
	if typ, body := recv(t, c); typ != protocol.Error || !strings.Contains(body, "connection refused") {
		t.Fatalf("got %v %q", typ, body)
	}
}

func TestListenLoopbackOnly(t *testing.T) {
	tests := []struct {
		addr     string
		insecure bool
		ok       bool
	}{
		{"127.0.0.1:0", false, true},
		{"[::1]:0", false, true},
		{"localhost:0", false, true},
		{"0.0.0.0:0", false, false},
		{":0", false, false},
		{"0.0.0.0:0", true, true},
	}
	for _, tt := range tests {
		ln, err := connect.Listen(tt.addr, tt.insecure)
		if ln != nil {
			ln.Close()
		}
		if tt.ok && err != nil && !strings.Contains(err.Error(), "cannot assign") && !strings.Contains(err.Error(), "address family") {
			t.Errorf("%s insecure=%v: %v", tt.addr, tt.insecure, err)
		}
		if !tt.ok && (err == nil || !strings.Contains(err.Error(), "not loopback")) {
			t.Errorf("%s insecure=%v: want refusal, got %v", tt.addr, tt.insecure, err)
		}
	}
}

// TestShutdownDrains: Shutdown stops accepting, lets a relay that ends by
// itself finish, and closes one that does not when ctx ends.
func TestShutdownDrains(t *testing.T) {
	f := newFixture(t)
	s, addr := f.sidecar(t, connect.Config{Credentials: alice})
	c := dial(t, addr)
	send(t, c, protocol.EchoReq, "before")
	if typ, _ := recv(t, c); typ != protocol.EchoRes {
		t.Fatalf("got %v", typ)
	}
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan error, 1)
	go func() { stopped <- s.Shutdown(ctx) }()
	// The listener closes: new connections are refused...
	waitFor(t, func() bool {
		nc, err := net.DialTimeout("tcp", addr, ioTimeout)
		if err == nil {
			nc.Close()
		}
		return err != nil
	})
	// ...while the open relay still works.
	send(t, c, protocol.EchoReq, "during")
	if typ, body := recv(t, c); typ != protocol.EchoRes || body != "during" {
		t.Fatalf("got %v %q", typ, body)
	}
	cancel()
	if err := <-stopped; !errors.Is(err, context.Canceled) {
		t.Fatalf("Shutdown: %v", err)
	}
	expectClosed(t, c)
	if s.Connections() != 0 {
		t.Fatalf("%d connections left", s.Connections())
	}
}

// TestMaxConnections: beyond the limit a client waits, and is served once
// a slot frees.
func TestMaxConnections(t *testing.T) {
	f := newFixture(t)
	s, addr := f.sidecar(t, connect.Config{Credentials: alice, MaxConnections: 1})
	a := dial(t, addr)
	send(t, a, protocol.EchoReq, "a")
	recv(t, a)
	b := dial(t, addr)
	send(t, b, protocol.EchoReq, "b")
	if n := s.Connections(); n != 1 {
		t.Fatalf("%d connections served with a limit of 1", n)
	}
	a.Close()
	if typ, body := recv(t, b); typ != protocol.EchoRes || body != "b" {
		t.Fatalf("got %v %q", typ, body)
	}
}

// TestNoLeaks: after relays that end normally, relays refused upstream and
// a Close, the goroutines are back to what they were.
func TestNoLeaks(t *testing.T) {
	f := newFixture(t)
	base := runtime.NumGoroutine()
	good, goodAddr := f.sidecar(t, connect.Config{Credentials: alice})
	bad, badAddr := f.sidecar(t, connect.Config{Credentials: client.Credentials{
		Mechanism: client.MechSCRAM, Username: "alice", Password: "wrong"}})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := goodAddr
			if i%4 == 0 {
				addr = badAddr
			}
			c, err := net.DialTimeout("tcp", addr, ioTimeout)
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(ioTimeout))
			c.Write(protocol.AppendPacket(nil, protocol.Req, protocol.EchoReq, []byte("x")))
			var h [protocol.HeaderSize]byte
			if _, err := io.ReadFull(c, h[:]); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	waitFor(t, func() bool { return good.Connections() == 0 && bad.Connections() == 0 })
	good.Close()
	bad.Close()
	waitFor(t, func() bool { return runtime.NumGoroutine() <= base })
}

// TestRefusalBackoff: once the upstream refused the credentials, local
// connections are refused with that cause without a new login each, so a
// retrying pool does not spend the upstream's failure budget.
func TestRefusalBackoff(t *testing.T) {
	f := newFixture(t)
	_, addr := f.sidecar(t, connect.Config{AuthBackoff: time.Hour, Credentials: client.Credentials{
		Mechanism: client.MechSCRAM, Username: "alice", Password: "wrong"}})
	for range 5 {
		c := dial(t, addr)
		send(t, c, protocol.EchoReq, "x")
		if typ, body := recv(t, c); typ != protocol.Error || !strings.HasPrefix(body, "AUTH_FAILED\x00") {
			t.Fatalf("got %v %q", typ, body)
		}
		c.Close()
	}
	if n := f.front.Accepted(); n != 1 {
		t.Fatalf("%d logins upstream for 5 local connections, want 1", n)
	}
}
