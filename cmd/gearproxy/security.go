package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gearproxy/gearproxy/auth"
	"github.com/gearproxy/gearproxy/config"
	"github.com/gearproxy/gearproxy/proxy"
)

// certPollInterval is how often listeners' certificate files are checked
// for changes, so that a renewed certificate is picked up without SIGHUP.
const certPollInterval = 2 * time.Second

// security is what `gearproxy run` builds from the security keys: users,
// the authenticator, each listener's TLS, and the live sessions a reload
// must re-check. One per process.
type security struct {
	log   *slog.Logger
	users *auth.UserStore
	authn *auth.Authenticator
	audit *auth.Auditor
	conns *auth.Connections
	live  *proxy.LiveUsers
	// tls by listener index; nil for a plaintext listener. tlsFiles
	// and acme are what each was configured with: a reload re-reads
	// those files, and a changed path needs a restart.
	tls      []auth.TLSSource
	tlsFiles []config.TLS
	acme     []*config.ACME
	hup      chan os.Signal
}

func authUsers(cfg *config.Config) (*auth.Users, error) {
	us := make([]auth.UserConfig, 0, len(cfg.Users))
	for _, u := range cfg.Users {
		us = append(us, auth.UserConfig{
			Name: u.Name, Password: u.Password, Certificates: u.Certificates, Groups: u.Groups,
			Superuser: u.Superuser, Namespace: u.Namespace, MaxConnections: u.MaxConnections,
			MaxPayload: int64(u.MaxPayload), Disabled: u.Disabled,
			Allow: auth.Rules(u.Allow), Deny: auth.Rules(u.Deny),
		})
	}
	gs := make([]auth.GroupConfig, 0, len(cfg.Groups))
	for _, g := range cfg.Groups {
		gs = append(gs, auth.GroupConfig{Name: g.Name, Namespace: g.Namespace, Allow: auth.Rules(g.Allow), Deny: auth.Rules(g.Deny)})
	}
	return auth.NewUsers(us, gs)
}

func tlsConfig(t *config.TLS) auth.TLSConfig {
	return auth.TLSConfig{Cert: t.Cert, Key: t.Key, ClientCA: t.ClientCA, ClientAuth: t.ClientAuth}
}

// newSecurity builds users and listeners' TLS; ctx bounds the certificate
// watchers. SIGHUP is caught from here on, so that a reload arriving
// during startup does not kill the process.
func newSecurity(ctx context.Context, cfg *config.Config, log *slog.Logger) (*security, error) {
	sec := &security{log: log, conns: auth.NewConnections(), live: proxy.NewLiveUsers(), hup: make(chan os.Signal, 1)}
	signal.Notify(sec.hup, syscall.SIGHUP)
	us, err := authUsers(cfg)
	if err != nil {
		signal.Stop(sec.hup)
		return nil, fmt.Errorf("users: %w", err)
	}
	sec.users = auth.NewUserStore(us)
	sec.audit = auth.NewAuditor(log.With("component", "audit"), auth.AuditOptions{})
	// The handle key is already shared by every instance: it keeps an
	// unknown user's made-up SCRAM salt the same on all of them.
	sec.authn, err = auth.NewAuthenticator(auth.Options{Users: sec.users, Secret: []byte(cfg.HandleKey), Audit: sec.audit, Logger: log})
	if err != nil {
		signal.Stop(sec.hup)
		return nil, err
	}
	for _, l := range cfg.Listeners {
		var src auth.TLSSource
		switch {
		case l.ACME != nil:
			a, err := newACME(ctx, cfg, l, log.With("listener", l.Address))
			if err != nil {
				signal.Stop(sec.hup)
				return nil, fmt.Errorf("listener %s: %w", l.Address, err)
			}
			src = a
		case l.TLS != nil:
			ts, err := auth.NewTLSServer(tlsConfig(l.TLS), log.With("listener", l.Address))
			if err != nil {
				signal.Stop(sec.hup)
				return nil, fmt.Errorf("listener %s: %w", l.Address, err)
			}
			go ts.Watch(ctx, certPollInterval)
			src = ts
		}
		sec.tls = append(sec.tls, src)
		sec.acme = append(sec.acme, l.ACME)
		var files config.TLS
		if l.TLS != nil {
			files = *l.TLS
		}
		sec.tlsFiles = append(sec.tlsFiles, files)
	}
	return sec, nil
}

// gate is the Authenticator of listener i.
func (sec *security) gate(cfg *config.Config, i int) (proxy.Authenticator, error) {
	l := cfg.Listeners[i]
	g := &proxy.Gate{Name: l.Address, Users: sec.users, Conns: sec.conns, Audit: sec.audit, Live: sec.live}
	if l.User != "" {
		if _, ok := cfg.User(l.User); !ok {
			return nil, fmt.Errorf("listener %s: user %q is not configured", l.Address, l.User)
		}
		// Through the gate even for a local superuser, so that a
		// reload that disables or demotes it reaches its sessions.
		g.FixedUser, g.TLS = l.User, sec.tls[i]
		return g, nil
	}
	var mapping []string
	if l.TLS != nil {
		mapping = l.TLS.CertMappingFields()
	}
	al, err := sec.authn.Listener(auth.ListenerConfig{
		Name: l.Address, Mechanisms: l.SASL, InsecurePlain: l.InsecurePlain, AnonymousUser: l.AnonymousUser,
		MaxAuthFailures: l.MaxAuthFailures, CertMapping: auth.CertMapping{From: mapping},
		TLS: sec.tls[i], AuthTimeout: l.AuthTimeout.Duration, CertLogin: l.TLS.CertLogin(),
	})
	if err != nil {
		return nil, err
	}
	g.Auth = al
	return g, nil
}

// stop stops catching SIGHUP.
func (sec *security) stop() { signal.Stop(sec.hup) }

// waitReloads serves SIGHUP until ctx ends.
func (sec *security) waitReloads(ctx context.Context, file string) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-sec.hup:
			if err := sec.reload(file); err != nil {
				sec.log.Error("reload refused: still running the previous users, ACLs and certificates", "err", err)
			}
		}
	}
}

// reload re-reads the configuration file and applies its users, groups,
// ACLs and listener certificates, all or nothing: everything is checked
// before anything changes. Listener addresses, mechanisms and backends
// need a restart.
func (sec *security) reload(file string) error {
	if file == "" {
		return errors.New("running on the built-in defaults: there is no file to reload")
	}
	cfg, err := config.Load(file)
	if err != nil {
		return err
	}
	us, err := authUsers(cfg)
	if err != nil {
		return fmt.Errorf("users: %w", err)
	}
	if len(cfg.Listeners) != len(sec.tls) {
		return fmt.Errorf("%s: the number of listeners changed: restart to apply", file)
	}
	for i, l := range cfg.Listeners {
		if l.Secure() != (sec.tls[i] != nil) {
			return fmt.Errorf("listener %s: adding or removing TLS needs a restart", l.Address)
		}
		if err := sameACME(l.ACME, sec.acme[i]); err != nil {
			return fmt.Errorf("listener %s: %w", l.Address, err)
		}
		if l.TLS != nil {
			run := sec.tlsFiles[i]
			if l.TLS.Cert != run.Cert || l.TLS.Key != run.Key || l.TLS.ClientCA != run.ClientCA || l.TLS.ClientAuth != run.ClientAuth {
				return fmt.Errorf("listener %s: changed certificate paths or client_auth need a restart (replace the files in place to reload them)", l.Address)
			}
			if err := checkTLSFiles(l.TLS, l.ACME == nil); err != nil {
				return fmt.Errorf("listener %s: %w", l.Address, err)
			}
		}
	}
	// Everything checked: apply. A certificate file replaced between
	// the check and here is still refused by Reload, keeping the old.
	sec.users.Swap(us)
	closed := sec.live.Recheck(us)
	for i, ts := range sec.tls {
		if ts != nil {
			if err := ts.Reload(); err != nil {
				sec.log.Error("certificate reload", "listener", cfg.Listeners[i].Address, "err", err)
			}
		}
	}
	sec.log.Info("reloaded users, ACLs and certificates", "file", file, "users", us.Len(), "sessions_closed", closed)
	return nil
}

// checkTLSFiles loads a listener's certificate pair and client CA bundle
// the way a reload would, without installing them.
func checkTLSFiles(t *config.TLS, pair bool) error {
	// Without a pair, ACME owns the certificate: only the client CA is
	// a file.
	if pair {
		if _, err := tls.LoadX509KeyPair(t.Cert, t.Key); err != nil {
			return fmt.Errorf("certificate %s / key %s: %w", t.Cert, t.Key, err)
		}
	}
	if t.ClientCA != "" {
		pem, err := os.ReadFile(t.ClientCA)
		if err != nil {
			return fmt.Errorf("client_ca: %w", err)
		}
		if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			return fmt.Errorf("client_ca %s: no PEM certificate in it", t.ClientCA)
		}
	}
	return nil
}
