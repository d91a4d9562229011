package auth

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// TestACMEConfigForClient: only a ClientHello offering exactly acme-tls/1
// (the CA's probe, RFC 8737 section 3) escapes the client certificate
// policy; anything else, including acme-tls/1 among other protocols,
// gets it in full.
func TestACMEConfigForClient(t *testing.T) {
	e := newTLSEnv(t)
	a, err := NewACME(ACMEConfig{
		Domains: []string{"gearproxy.test"}, CA: "https://127.0.0.1:1/dir", Storage: t.TempDir(),
		Address: "127.0.0.1:4731", ClientCA: e.caFile, ClientAuth: ClientAuthRequire,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for _, tt := range []struct {
		protos    []string
		wantAuth  tls.ClientAuthType
		wantProto []string
	}{
		{[]string{ACMETLS1}, tls.NoClientCert, []string{ACMETLS1}},
		{[]string{ACMETLS1, "h2"}, tls.RequireAndVerifyClientCert, nil},
		{[]string{"h2"}, tls.RequireAndVerifyClientCert, nil},
		{nil, tls.RequireAndVerifyClientCert, nil},
	} {
		c, err := a.configFor(&tls.ClientHelloInfo{SupportedProtos: tt.protos})
		if err != nil {
			t.Fatal(err)
		}
		if c.ClientAuth != tt.wantAuth || !slices.Equal(c.NextProtos, tt.wantProto) || c.MinVersion != tls.VersionTLS12 {
			t.Errorf("%q: client auth %v, protocols %q", tt.protos, c.ClientAuth, c.NextProtos)
		}
		if tt.wantAuth != tls.NoClientCert && c.ClientCAs == nil {
			t.Errorf("%q: no client CAs", tt.protos)
		}
	}
}

func TestNewACMEErrors(t *testing.T) {
	base := ACMEConfig{Domains: []string{"gearproxy.test"}, Storage: t.TempDir(), Address: "127.0.0.1:4731"}
	for _, tt := range []struct {
		name string
		edit func(*ACMEConfig)
	}{
		{"no domains", func(c *ACMEConfig) { c.Domains = nil }},
		{"no storage", func(c *ACMEConfig) { c.Storage = "" }},
		{"port zero", func(c *ACMEConfig) { c.Address = "127.0.0.1:0" }},
		{"require without CA", func(c *ACMEConfig) { c.ClientAuth = ClientAuthRequire }},
		{"missing ca_root", func(c *ACMEConfig) { c.CARoot = "/nonexistent/root.pem" }},
	} {
		cfg := base
		tt.edit(&cfg)
		if a, err := NewACME(cfg, nil); err == nil {
			a.Close()
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

// alpnSource serves a static certificate and, like ACME, negotiates
// acme-tls/1 without asking for a client certificate when that is all a
// ClientHello offers.
type alpnSource struct{ *TLSServer }

func (s alpnSource) Config() *tls.Config {
	return &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		c := s.cur.Load().config
		if slices.Equal(h.SupportedProtos, []string{ACMETLS1}) {
			c = c.Clone()
			c.NextProtos, c.ClientAuth = []string{ACMETLS1}, tls.NoClientCert
		}
		return c, nil
	}}
}

// TestChallengeConnectionNotServed: a connection that negotiated
// acme-tls/1 skipped the client certificate check, so AuthenticateConn
// ends it after the handshake: a SASL request it sends is never read,
// let alone answered.
func TestChallengeConnectionNotServed(t *testing.T) {
	e := newTLSEnv(t)
	srv, err := NewTLSServer(TLSConfig{Cert: e.certFile, Key: e.keyFile, ClientCA: e.caFile, ClientAuth: ClientAuthRequire}, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, saslUsers(t), nil)
	l := f.listener(t, ListenerConfig{Mechanisms: []string{MechPlain}, TLS: alpnSource{srv}})
	a, b := net.Pipe()
	defer a.Close()
	got := make(chan error, 1)
	go func() {
		cfg := e.clientConfig(nil)
		cfg.NextProtos = []string{ACMETLS1}
		tc := tls.Client(a, cfg)
		if err := tc.Handshake(); err != nil {
			got <- err
			return
		}
		tc.Write(req(protocol.SASLStart, "PLAIN", "\x00alice\x00s3cret"))
		n, err := io.Copy(io.Discard, tc)
		if n > 0 {
			err = errors.New("the challenge connection got a reply")
		}
		got <- err
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := l.AuthenticateConn(ctx, b)
	if !errors.Is(err, ErrACMEChallenge) || res.User != nil {
		t.Fatalf("got %+v, %v; want ErrACMEChallenge", res, err)
	}
	b.Close()
	if err := <-got; err != nil && !errors.Is(err, io.ErrClosedPipe) && !errors.Is(err, io.EOF) {
		t.Fatalf("client: %v", err)
	}
}
