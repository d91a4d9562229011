package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Client certificate modes of a listener's client_auth.
const (
	ClientAuthNone    = "none"
	ClientAuthRequest = "request"
	ClientAuthRequire = "require"
)

// TLSConfig is a listener's [listener.tls] table.
type TLSConfig struct {
	Cert string // PEM certificate chain file
	Key  string // PEM private key file
	// ClientCA is a PEM bundle of the CAs that client certificates must
	// chain to; required unless ClientAuth is "none".
	ClientCA string
	// ClientAuth is "none", "request" (verify a certificate if the client
	// sends one) or "require"; default "request" with a ClientCA, else
	// "none".
	ClientAuth string
}

// TLSServer is a listener's TLS configuration whose certificate, key and
// client CA bundle can be reloaded while connections are served. Each
// handshake picks up the current files through an atomic pointer, so a
// reload never interrupts anyone; a reload that fails keeps the files that
// work (ghostunnel's certloader does the same).
type TLSServer struct {
	cfg  TLSConfig
	auth tls.ClientAuthType
	log  *slog.Logger
	cur  atomic.Pointer[tlsState]

	mu     sync.Mutex // serializes reloads
	failed [3]fileStamp
}

// tlsState is one loaded generation of the files.
type tlsState struct {
	config *tls.Config
	leaf   *x509.Certificate
	stamps [3]fileStamp
}

// fileStamp is what polling compares to notice a changed file.
type fileStamp struct {
	mod  time.Time
	size int64
}

// NewTLSServer loads the files once; an error here stops startup.
func NewTLSServer(cfg TLSConfig, log *slog.Logger) (*TLSServer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Cert == "" || cfg.Key == "" {
		return nil, errors.New("tls: cert and key are required")
	}
	if cfg.ClientAuth == "" {
		cfg.ClientAuth = ClientAuthNone
		if cfg.ClientCA != "" {
			cfg.ClientAuth = ClientAuthRequest
		}
	}
	s := &TLSServer{cfg: cfg, log: log}
	switch cfg.ClientAuth {
	case ClientAuthNone:
		s.auth = tls.NoClientCert
	case ClientAuthRequest:
		// Verify a certificate when one is sent: an unverifiable one
		// fails the handshake rather than being passed on unchecked.
		s.auth = tls.VerifyClientCertIfGiven
	case ClientAuthRequire:
		s.auth = tls.RequireAndVerifyClientCert
	default:
		return nil, fmt.Errorf("tls: client_auth %q: want none, request or require", cfg.ClientAuth)
	}
	if s.auth != tls.NoClientCert && cfg.ClientCA == "" {
		return nil, fmt.Errorf("tls: client_auth %q needs client_ca", cfg.ClientAuth)
	}
	st, err := s.load()
	if err != nil {
		return nil, err
	}
	s.cur.Store(st)
	return s, nil
}

func (s *TLSServer) files() [3]string { return [3]string{s.cfg.Cert, s.cfg.Key, s.cfg.ClientCA} }

func stamp(path string) fileStamp {
	if path == "" {
		return fileStamp{}
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mod: fi.ModTime(), size: fi.Size()}
}

// load reads all files and builds the handshake config for them.
func (s *TLSServer) load() (*tlsState, error) {
	var st tlsState
	for i, f := range s.files() {
		st.stamps[i] = stamp(f)
	}
	cert, err := tls.LoadX509KeyPair(s.cfg.Cert, s.cfg.Key)
	if err != nil {
		return nil, fmt.Errorf("tls: load %s and %s: %w", s.cfg.Cert, s.cfg.Key, err)
	}
	st.leaf = cert.Leaf
	if st.leaf == nil {
		if st.leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls: parse %s: %w", s.cfg.Cert, err)
		}
	}
	if time.Now().After(st.leaf.NotAfter) {
		return nil, fmt.Errorf("tls: certificate %s expired at %s", s.cfg.Cert, st.leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	c := &tls.Config{
		// TLS 1.0 and 1.1 are deprecated by RFC 8996.
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   s.auth,
	}
	if s.cfg.ClientCA != "" {
		pem, err := os.ReadFile(s.cfg.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("tls: client_ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: client_ca %s holds no PEM certificate", s.cfg.ClientCA)
		}
		c.ClientCAs = pool
	}
	st.config = c
	return &st, nil
}

// Config returns the tls.Config for the listener. It is fixed; the
// certificate and CAs behind it follow reloads.
func (s *TLSServer) Config() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			return s.cur.Load().config, nil
		},
	}
}

// Certificate returns the leaf certificate now in use.
func (s *TLSServer) Certificate() *x509.Certificate { return s.cur.Load().leaf }

// Reload reads the files again (on SIGHUP). If they do not form a working
// configuration the current one stays and the error is logged and
// returned.
func (s *TLSServer) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reloadLocked()
}

func (s *TLSServer) reloadLocked() error {
	st, err := s.load()
	if err != nil {
		s.log.Error("TLS reload failed, keeping the current certificate", "cert", s.cfg.Cert, "err", err)
		return err
	}
	s.cur.Store(st)
	s.log.Info("TLS certificate loaded", "cert", s.cfg.Cert, "subject", st.leaf.Subject.String(),
		"not_after", st.leaf.NotAfter.UTC().Format(time.RFC3339))
	return nil
}

// Watch polls the files every interval and reloads when one changes, until
// ctx ends. A change that fails to load is logged once, not every poll.
func (s *TLSServer) Watch(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.Poll()
		}
	}
}

// Poll reloads if a file changed since the last load (or the last failed
// attempt), and reports whether it tried.
func (s *TLSServer) Poll() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var now [3]fileStamp
	for i, f := range s.files() {
		now[i] = stamp(f)
	}
	if now == s.cur.Load().stamps || now == s.failed {
		return false
	}
	if err := s.reloadLocked(); err != nil {
		s.failed = now
	}
	return true
}

// CertMapping says which fields of a verified client certificate name a
// user: "URI" (each URI SAN, e.g. a SPIFFE ID), "DNS" (each DNS SAN), "CN"
// (the subject common name). Users list the identities they accept as
// "URI=spiffe://...", "DNS=..." or "CN=...".
type CertMapping struct {
	// From lists the fields to use; empty means all three.
	From []string
}

func (m CertMapping) validate() error {
	for _, f := range m.From {
		switch strings.ToUpper(f) {
		case "CN", "DNS", "URI":
		default:
			return fmt.Errorf("certificate mapping field %q: want CN, DNS or URI", f)
		}
	}
	return nil
}

func (m CertMapping) uses(kind string) bool {
	if len(m.From) == 0 {
		return true
	}
	return slices.ContainsFunc(m.From, func(f string) bool { return strings.EqualFold(f, kind) })
}

// CertIdentities lists the identities of cert that m uses, in the
// "KIND=value" form of a user's certificates list.
func (m CertMapping) CertIdentities(cert *x509.Certificate) []string {
	var ids []string
	if m.uses("URI") {
		for _, u := range cert.URIs {
			ids = append(ids, "URI="+u.String())
		}
	}
	if m.uses("DNS") {
		for _, d := range cert.DNSNames {
			ids = append(ids, "DNS="+d)
		}
	}
	if m.uses("CN") && cert.Subject.CommonName != "" {
		ids = append(ids, "CN="+cert.Subject.CommonName)
	}
	return ids
}

// UserFor maps the connection's verified client certificate to a user.
// Only a chain the TLS stack verified counts: with client_auth "request" a
// client may send no certificate, and an unverified one must never name
// anybody. A certificate whose identities name two different users is
// refused as ambiguous rather than resolved by order.
func (m CertMapping) UserFor(us *Users, cs *tls.ConnectionState) (*User, error) {
	if cs == nil || len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return nil, errors.New("no verified client certificate")
	}
	leaf := cs.VerifiedChains[0][0]
	ids := m.CertIdentities(leaf)
	var found *User
	for _, id := range ids {
		u, ok := us.lookupCert(id)
		if !ok {
			continue
		}
		if found != nil && found != u {
			return nil, fmt.Errorf("client certificate maps to both %q and %q", found.Name, u.Name)
		}
		found = u
	}
	if found == nil {
		return nil, fmt.Errorf("client certificate %v maps to no user", ids)
	}
	return found, nil
}
