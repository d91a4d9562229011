package main

import (
	"context"
	"errors"
	"log/slog"
	"slices"

	"github.com/gearproxy/gearproxy/auth"
	"github.com/gearproxy/gearproxy/config"
)

// newACME builds listener l's automatic certificate; it is stopped when
// ctx ends. It obtains nothing before startACME: the CA connects to the
// listener, which must be bound first.
func newACME(ctx context.Context, cfg *config.Config, l config.Listener, log *slog.Logger) (*auth.ACME, error) {
	ac := auth.ACMEConfig{
		Domains: l.ACME.Domains, Email: l.ACME.Email, CA: l.ACME.CA, CARoot: l.ACME.CARoot,
		Storage: cfg.ACMEStorage(), Address: l.Address,
	}
	if l.TLS != nil {
		ac.ClientCA, ac.ClientAuth = l.TLS.ClientCA, l.TLS.ClientAuth
	}
	a, err := auth.NewACME(ac, log)
	if err != nil {
		return nil, err
	}
	context.AfterFunc(ctx, a.Close)
	return a, nil
}

// startACME begins obtaining (or loading) listener i's certificate, if it
// has [listener.acme]; call it once the listener is bound.
func (sec *security) startACME(ctx context.Context, i int) error {
	if a, ok := sec.tls[i].(*auth.ACME); ok {
		return a.Start(ctx)
	}
	return nil
}

// sameACME refuses a reload that changes [listener.acme]: the certificate
// manager is built at startup, so a change needs a restart.
func sameACME(now, running *config.ACME) error {
	switch {
	case now == nil && running == nil:
		return nil
	case now == nil || running == nil:
		return errors.New("adding or removing [listener.acme] needs a restart")
	case !slices.Equal(now.Domains, running.Domains) || now.Email != running.Email || now.CA != running.CA || now.CARoot != running.CARoot:
		return errors.New("changed [listener.acme] settings need a restart")
	}
	return nil
}
