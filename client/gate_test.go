package client_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/auth"
	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/protocol"
)

// serveGate accepts TCP connections and puts each through
// auth.Listener.AuthenticateConn, the seam the proxy uses, then answers
// OPTION_REQ and ECHO_REQ, echoing the user name for ECHO "whoami".
func serveGate(t *testing.T, l *auth.Listener) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				res, err := l.AuthenticateConn(ctx, nc)
				cancel()
				if err != nil {
					return
				}
				defer res.Conn.Close()
				r := protocol.NewReader(res.Conn, protocol.ReaderOptions{Expect: protocol.Req})
				w := protocol.NewWriter(res.Conn)
				var p protocol.Packet
				for r.Read(&p) == nil {
					switch p.Type {
					case protocol.OptionReq:
						w.WritePacket(protocol.Res, protocol.OptionRes, p.Arg(0))
					case protocol.EchoReq:
						if string(p.Data()) == "whoami" {
							w.WritePacket(protocol.Res, protocol.EchoRes, []byte(res.User.Name+" "+res.Mechanism))
						} else {
							w.WritePacket(protocol.Res, protocol.EchoRes, p.Data())
						}
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

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestThroughAuthGate: the client over real TCP and TLS against the
// server side exactly as the proxy will run it: SCRAM-SHA-256-PLUS by
// default, PLAIN, EXTERNAL, and a certificate login with no SASL at all.
func TestThroughAuthGate(t *testing.T) {
	pki := newTestPKI(t)
	dir := t.TempDir()
	keyDER, _ := x509.MarshalPKCS8PrivateKey(pki.server.PrivateKey)
	tlsSrv, err := auth.NewTLSServer(auth.TLSConfig{
		Cert:       writePEM(t, dir, "server.pem", "CERTIFICATE", pki.server.Certificate[0]),
		Key:        writePEM(t, dir, "server.key", "PRIVATE KEY", keyDER),
		ClientCA:   writePEM(t, dir, "ca.pem", "CERTIFICATE", pki.ca.Raw),
		ClientAuth: auth.ClientAuthRequest,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l := newAuthListener(t, auth.ListenerConfig{Name: "gate", TLS: tlsSrv, CertLogin: true,
		Mechanisms: []string{auth.MechSCRAMPlus, auth.MechSCRAM, auth.MechPlain, auth.MechExternal}})
	addr := serveGate(t, l)
	_, port, _ := net.SplitHostPort(addr)
	worker := pki.issue(t, "worker.example")
	stranger := pki.issue(t, "stranger.example")
	tests := []struct {
		name  string
		cert  *tls.Certificate
		creds *client.Credentials
		want  string
	}{
		{"SCRAM-PLUS chosen", nil, &client.Credentials{Username: "alice", Password: "s3cret"}, "alice SCRAM-SHA-256-PLUS"},
		{"PLAIN", nil, &client.Credentials{Mechanism: client.MechPlain, Username: "alice", Password: "s3cret"}, "alice PLAIN"},
		{"certificate login, no SASL", &worker, nil, "worker certificate"},
		{"unmapped certificate, then SCRAM", &stranger, &client.Credentials{Username: "alice", Password: "s3cret"}, "alice SCRAM-SHA-256-PLUS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := client.Config{Addr: net.JoinHostPort("gearproxy.test", port), TLS: &tls.Config{RootCAs: pki.pool},
				Credentials: tt.creds,
				Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
					var d net.Dialer
					return d.DialContext(ctx, network, addr)
				}}
			if tt.cert != nil {
				cfg.TLS.Certificates = []tls.Certificate{*tt.cert}
			}
			c, err := client.Dial(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			got, err := c.Echo(context.Background(), []byte("whoami"))
			if err != nil || string(got) != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	// Without credentials or a mapped certificate the first request is
	// refused with AUTH_REQUIRED and the connection closed.
	_, err = client.Dial(context.Background(), client.Config{Addr: "gearproxy.test:" + port, TLS: &tls.Config{RootCAs: pki.pool},
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}})
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != auth.CodeAuthRequired {
		t.Fatalf("unauthenticated: %v", err)
	}
}
