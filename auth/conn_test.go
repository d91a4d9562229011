package auth

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

func req(t protocol.Type, args ...string) []byte {
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	return protocol.AppendPacket(nil, protocol.Req, t, bs...)
}

// peer plays the client side of a pipe: it writes its script in one go
// and collects everything the server sends until the pipe closes.
func peer(t *testing.T, c net.Conn, script []byte) <-chan []byte {
	out := make(chan []byte, 1)
	go func() {
		go c.Write(script)
		b, _ := io.ReadAll(c)
		out <- b
	}()
	return out
}

func replies(t *testing.T, b []byte) []protocol.Packet {
	t.Helper()
	r := protocol.NewReader(bytes.NewReader(b), protocol.ReaderOptions{Expect: protocol.Res})
	var out []protocol.Packet
	for {
		var p protocol.Packet
		if err := r.Read(&p); err != nil {
			return out
		}
		q := protocol.Packet{Type: p.Type}
		for _, a := range p.Args {
			q.Args = append(q.Args, append([]byte(nil), a...))
		}
		out = append(out, q)
	}
}

func TestAuthenticateConn(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Name: "l", Mechanisms: []string{MechPlain}, InsecurePlain: true})
	submit := req(protocol.SubmitJob, "f", "u", "data")
	tests := []struct {
		name       string
		script     []byte
		wantErr    error
		wantUser   string
		wantTypes  string
		wantBuffer []byte
	}{
		{
			name: "echo, mechanisms, login, pipelined submit",
			script: bytes.Join([][]byte{req(protocol.EchoReq, "ping"), req(protocol.SASLMechsReq),
				req(protocol.SASLStart, "PLAIN", "\x00alice\x00s3cret"), submit}, nil),
			wantUser: "alice", wantTypes: "ECHO_RES SASL_MECHS_RES SASL_OK", wantBuffer: submit,
		},
		{
			name:     "login after a failure",
			script:   bytes.Join([][]byte{req(protocol.SASLStart, "PLAIN", "\x00alice\x00bad"), req(protocol.SASLStart, "PLAIN", "\x00alice\x00s3cret")}, nil),
			wantUser: "alice", wantTypes: "ERROR SASL_OK",
		},
		{
			name:    "submit before authentication",
			script:  submit,
			wantErr: ErrAuthRequired, wantTypes: "ERROR",
		},
		{
			name: "three failures",
			script: bytes.Join([][]byte{req(protocol.SASLStart, "PLAIN", "\x00alice\x00a"), req(protocol.SASLStart, "PLAIN", "\x00alice\x00b"),
				req(protocol.SASLStart, "PLAIN", "\x00alice\x00c"), req(protocol.SASLStart, "PLAIN", "\x00alice\x00s3cret")}, nil),
			wantErr: ErrAuthFailed, wantTypes: "ERROR ERROR ERROR",
		},
		{
			name:    "oversized packet",
			script:  req(protocol.SASLStart, "PLAIN", strings.Repeat("x", maxPreAuthData)),
			wantErr: protocol.ErrTooLarge, wantTypes: "ERROR",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := net.Pipe()
			got := peer(t, a, tt.script)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			res, err := l.AuthenticateConn(ctx, b)
			b.Close()
			var types []string
			for _, p := range replies(t, <-got) {
				types = append(types, p.Type.String())
			}
			if strings.Join(types, " ") != tt.wantTypes {
				t.Errorf("replies %v, want %s", types, tt.wantTypes)
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || res.User.Name != tt.wantUser || res.Mechanism != MechPlain {
				t.Fatalf("got %+v, %v", res, err)
			}
			if !bytes.Equal(res.Buffered, tt.wantBuffer) {
				t.Fatalf("buffered %q, want %q", res.Buffered, tt.wantBuffer)
			}
		})
	}
}

func TestAuthenticateConnTextLine(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechSCRAM}})
	a, b := net.Pipe()
	got := peer(t, a, []byte("status\n"))
	_, err := l.AuthenticateConn(context.Background(), b)
	b.Close()
	if !errors.Is(err, ErrAuthRequired) {
		t.Fatalf("got %v", err)
	}
	if line := string(<-got); !strings.HasPrefix(line, "ERR AUTH_REQUIRED ") {
		t.Fatalf("reply %q", line)
	}
}

// TestAuthenticateConnTimeout: a peer that says nothing is cut off when
// the context ends (the proxy's auth_timeout), however it behaves.
func TestAuthenticateConnTimeout(t *testing.T) {
	e := newTLSEnv(t)
	srv, err := NewTLSServer(TLSConfig{Cert: e.certFile, Key: e.keyFile}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, saslUsers(t), nil)
	for _, withTLS := range []bool{false, true} {
		cfg := ListenerConfig{Mechanisms: []string{MechSCRAM}}
		if withTLS {
			cfg.TLS = srv // a peer that never sends a ClientHello
		}
		l := f.listener(t, cfg)
		a, b := net.Pipe()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		_, err := l.AuthenticateConn(ctx, b)
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("tls=%v: got %v", withTLS, err)
		}
		a.Close()
		b.Close()
	}
}

// TestCertLogin: over TLS, a verified client certificate that maps to a
// user authenticates with no SASL at all; one that maps to nobody may
// still use SASL.
func TestCertLogin(t *testing.T) {
	e := newTLSEnv(t)
	srv, err := NewTLSServer(TLSConfig{Cert: e.certFile, Key: e.keyFile, ClientCA: e.caFile, ClientAuth: ClientAuthRequest}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, saslUsers(t), nil)
	if _, err := f.auth.Listener(ListenerConfig{Mechanisms: []string{MechSCRAM}, CertLogin: true}); err == nil {
		t.Fatal("certificate login without TLS accepted")
	}
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechPlain}, TLS: srv, CertLogin: true})
	for _, tt := range []struct {
		cn       string
		script   []byte
		wantUser string
		wantMech string
	}{
		{"alice-worker", nil, "alice", "certificate"},
		{"stranger", req(protocol.SASLStart, "PLAIN", "\x00alice\x00s3cret"), "alice", MechPlain},
	} {
		cert := e.ca.issue(leafOpts{cn: tt.cn})
		a, b := net.Pipe()
		done := make(chan error, 1)
		go func() {
			tc := tls.Client(a, e.clientConfig(&cert))
			if err := tc.Handshake(); err != nil {
				done <- err
				return
			}
			if tt.script != nil {
				tc.Write(tt.script)
			}
			io.Copy(io.Discard, tc)
			done <- nil
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := l.AuthenticateConn(ctx, b)
		cancel()
		if err != nil || res.User.Name != tt.wantUser || res.Mechanism != tt.wantMech {
			t.Fatalf("%s: got %+v, %v", tt.cn, res, err)
		}
		if _, ok := res.Conn.(*tls.Conn); !ok {
			t.Fatalf("%s: Conn is %T, want the TLS connection", tt.cn, res.Conn)
		}
		res.Conn.Close()
		if err := <-done; err != nil {
			t.Fatalf("%s: client: %v", tt.cn, err)
		}
	}
}

func TestAuthTimeoutDefault(t *testing.T) {
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechSCRAM}, AuthTimeout: 30 * time.Millisecond})
	a, b := net.Pipe()
	defer a.Close()
	// No deadline on ctx: the listener's own timeout ends the wait.
	_, err := l.AuthenticateConn(context.Background(), b)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	if l2 := f.listener(t, ListenerConfig{Mechanisms: []string{MechSCRAM}}); l2.cfg.AuthTimeout != DefaultAuthTimeout {
		t.Fatalf("default %v", l2.cfg.AuthTimeout)
	}
}
