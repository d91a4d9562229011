package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/caddyserver/certmagic"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// TLSSource is where a listener's TLS configuration comes from: files on
// disk (TLSServer) or a certificate obtained and renewed automatically
// (ACME). Config is asked once per listener; what it returns follows
// reloads and renewals by itself.
type TLSSource interface {
	Config() *tls.Config
	// Reload re-reads whatever files the source has (on SIGHUP); on
	// error the current configuration stays.
	Reload() error
}

// ACMETLS1 is the ALPN protocol of the TLS-ALPN-01 challenge (RFC 8737).
const ACMETLS1 = "acme-tls/1"

// ErrACMEChallenge is returned for a connection that was a CA's
// TLS-ALPN-01 probe: its handshake is complete and it must be closed,
// never served, because it may have skipped client certificate checks.
var ErrACMEChallenge = errors.New("ACME TLS-ALPN-01 challenge connection")

// ServerHandshake runs the server side of the TLS handshake of nc with
// src's configuration. A CA's acme-tls/1 probe gets ErrACMEChallenge
// after its handshake, which is all it needs; the caller closes it.
func ServerHandshake(ctx context.Context, nc net.Conn, src TLSSource) (*tls.Conn, error) {
	tc := tls.Server(nc, src.Config())
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrTLSHandshake, err)
	}
	if tc.ConnectionState().NegotiatedProtocol == ACMETLS1 {
		return nil, ErrACMEChallenge
	}
	return tc, nil
}

// ACMEConfig is a listener's [listener.acme] table, plus the client
// certificate policy of its [listener.tls] (which then has no cert and
// key of its own).
type ACMEConfig struct {
	// Domains the certificate is for; the first also serves clients
	// that send no server name (those that dial an IP address).
	Domains []string
	// Email is given to the CA for expiry notices; may be empty.
	Email string
	// CA is the directory URL; empty means Let's Encrypt.
	CA string
	// CARoot is a PEM file of roots trusted for the CA's own HTTPS, for
	// a private CA; empty means the system roots.
	CARoot string
	// Storage is the directory for the account, keys and certificates;
	// it survives restarts so that a restart does not ask the CA again.
	Storage string
	// Address is the listener's host:port. The CA's TLS-ALPN-01 probe
	// must reach this listener, so its port is the challenge port.
	Address string
	// ClientCA and ClientAuth are as in TLSConfig.
	ClientCA   string
	ClientAuth string
}

// ACME is a TLSSource whose certificate is obtained and renewed with
// certmagic, Caddy's ACME client. It answers TLS-ALPN-01 on the listener
// itself: a ClientHello that offers exactly acme-tls/1 gets the challenge
// certificate and no client certificate request, so the CA can validate
// even a listener that requires client certificates; ServerHandshake
// then ends that connection. Every other ClientHello gets the managed
// certificate and the listener's client certificate policy.
type ACME struct {
	cfg   ACMEConfig
	auth  tls.ClientAuthType
	log   *slog.Logger
	cache *certmagic.Cache
	magic *certmagic.Config
	cas   atomic.Pointer[x509.CertPool]

	mu      sync.Mutex // serializes Reload
	started atomic.Bool
	stop    sync.Once
}

// NewACME checks cfg and prepares the certificate manager; Start begins
// obtaining, once the listener is bound so that it can answer the CA.
func NewACME(cfg ACMEConfig, log *slog.Logger) (*ACME, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.Domains) == 0 {
		return nil, errors.New("acme: domains are required")
	}
	if cfg.Storage == "" {
		return nil, errors.New("acme: a storage directory is required")
	}
	host, port, err := net.SplitHostPort(cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("acme: listener address %q: %w", cfg.Address, err)
	}
	portNum, err := strconv.Atoi(port)
	if err != nil || portNum <= 0 {
		return nil, fmt.Errorf("acme: listener address %q needs a fixed port for the CA to reach", cfg.Address)
	}
	a := &ACME{cfg: cfg, log: log}
	if a.auth, err = clientAuthType(cfg.ClientAuth, cfg.ClientCA); err != nil {
		return nil, err
	}
	if cfg.ClientCA != "" {
		pool, err := loadCertPool(cfg.ClientCA)
		if err != nil {
			return nil, fmt.Errorf("tls: client_ca: %w", err)
		}
		a.cas.Store(pool)
	}
	var roots *x509.CertPool
	if cfg.CARoot != "" {
		if roots, err = loadCertPool(cfg.CARoot); err != nil {
			return nil, fmt.Errorf("acme: ca_root: %w", err)
		}
	}
	zl := zap.New(slogCore{log: log.With("component", "acme")})
	// Our own cache and config, never certmagic.Default: two listeners,
	// or two proxies in one test, must not share certificates or state.
	a.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert: func(certmagic.Certificate) (*certmagic.Config, error) { return a.magic, nil },
		Logger:           zl,
	})
	a.magic = certmagic.New(a.cache, certmagic.Config{
		Storage:           &certmagic.FileStorage{Path: cfg.Storage},
		DefaultServerName: cfg.Domains[0],
		Logger:            zl,
	})
	ca := cfg.CA
	if ca == "" {
		ca = certmagic.LetsEncryptProductionCA
	}
	issuer := certmagic.NewACMEIssuer(a.magic, certmagic.ACMEIssuer{
		CA: ca,
		// Retries go to the same CA: certmagic would otherwise try
		// Let's Encrypt's staging CA, unknown to a private CA's users.
		TestCA: ca,
		Email:  cfg.Email,
		Agreed: true,
		// Only TLS-ALPN-01: it is answered on this listener's port,
		// where certmagic, finding the port taken, relies on our
		// GetCertificate to serve the challenge certificate.
		DisableHTTPChallenge: true,
		ListenHost:           host,
		AltTLSALPNPort:       portNum,
		TrustedRoots:         roots,
		Logger:               zl,
	})
	a.magic.Issuers = []certmagic.Issuer{issuer}
	return a, nil
}

// Start loads the certificate from storage or obtains it, in the
// background and with retries, and renews it until Close. Call it after
// the listener is bound: the CA connects to it to validate.
func (a *ACME) Start(ctx context.Context) error {
	if !a.started.CompareAndSwap(false, true) {
		return nil
	}
	if err := a.magic.ManageAsync(ctx, a.cfg.Domains); err != nil {
		return fmt.Errorf("acme: manage %v: %w", a.cfg.Domains, err)
	}
	return nil
}

// Close stops renewals.
func (a *ACME) Close() {
	a.stop.Do(a.cache.Stop)
}

// Domains returns the names the certificate is for.
func (a *ACME) Domains() []string { return slices.Clone(a.cfg.Domains) }

// Config implements TLSSource.
func (a *ACME) Config() *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		GetConfigForClient: a.configFor,
	}
}

func (a *ACME) configFor(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ACMETLS1 {
		// The CA's probe (RFC 8737 section 3): it cannot present a
		// client certificate, and it learns nothing but the challenge
		// certificate, so this is the one place the policy relaxes.
		return &tls.Config{
			MinVersion:     tls.VersionTLS12,
			NextProtos:     []string{ACMETLS1},
			GetCertificate: a.magic.GetCertificate,
			ClientAuth:     tls.NoClientCert,
		}, nil
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: a.magic.GetCertificate,
		ClientAuth:     a.auth,
		ClientCAs:      a.cas.Load(),
	}, nil
}

// Reload implements TLSSource: it re-reads the client CA bundle. The
// certificate itself is renewed by certmagic, not by SIGHUP.
func (a *ACME) Reload() error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg.ClientCA == "" {
		return nil
	}
	pool, err := loadCertPool(a.cfg.ClientCA)
	if err != nil {
		a.log.Error("client CA reload failed, keeping the current bundle", "client_ca", a.cfg.ClientCA, "err", err)
		return fmt.Errorf("tls: client_ca: %w", err)
	}
	a.cas.Store(pool)
	return nil
}

// clientAuthType turns client_auth into crypto/tls's mode, defaulting as
// TLSConfig documents.
func clientAuthType(mode, clientCA string) (tls.ClientAuthType, error) {
	if mode == "" {
		mode = ClientAuthNone
		if clientCA != "" {
			mode = ClientAuthRequest
		}
	}
	var t tls.ClientAuthType
	switch mode {
	case ClientAuthNone:
		t = tls.NoClientCert
	case ClientAuthRequest:
		t = tls.VerifyClientCertIfGiven
	case ClientAuthRequire:
		t = tls.RequireAndVerifyClientCert
	default:
		return 0, fmt.Errorf("tls: client_auth %q: want none, request or require", mode)
	}
	if t != tls.NoClientCert && clientCA == "" {
		return 0, fmt.Errorf("tls: client_auth %q needs client_ca", mode)
	}
	return t, nil
}

func loadCertPool(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate", path)
	}
	return pool, nil
}

// slogCore hands certmagic's zap log entries to the process's slog
// logger, so that why a certificate could not be obtained shows up in
// the same log as everything else.
type slogCore struct {
	log    *slog.Logger
	fields []zapcore.Field
}

func (c slogCore) Enabled(l zapcore.Level) bool { return l >= zapcore.InfoLevel }

func (c slogCore) With(fields []zapcore.Field) zapcore.Core {
	return slogCore{log: c.log, fields: append(slices.Clip(c.fields), fields...)}
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range append(slices.Clip(c.fields), fields...) {
		f.AddTo(enc)
	}
	attrs := make([]slog.Attr, 0, len(enc.Fields))
	for k, v := range enc.Fields {
		attrs = append(attrs, slog.Any(k, v))
	}
	level := slog.LevelInfo
	switch {
	case e.Level >= zapcore.ErrorLevel:
		level = slog.LevelError
	case e.Level == zapcore.WarnLevel:
		level = slog.LevelWarn
	}
	c.log.LogAttrs(context.Background(), level, e.Message, attrs...)
	return nil
}

func (c slogCore) Sync() error { return nil }
