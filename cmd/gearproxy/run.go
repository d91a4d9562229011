package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/gearproxy/gearproxy/backend"
	"github.com/gearproxy/gearproxy/config"
	"github.com/gearproxy/gearproxy/jobserver"
	"github.com/gearproxy/gearproxy/jobserver/store"
	"github.com/gearproxy/gearproxy/proxy"
)

// runProxy is `gearproxy` and `gearproxy run [-config FILE]`: it runs the
// proxy until SIGINT or SIGTERM; SIGHUP reloads users, ACLs and
// certificates.
func runProxy(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "configuration file (default: the built-in defaults of config.toml.example)")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile to this file until the proxy stops")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintf(stderr, "gearproxy run: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "gearproxy run: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gearproxy run: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg := config.Default()
	if *file != "" {
		var err error
		if cfg, err = config.Load(*file); err != nil {
			fmt.Fprintln(stderr, err)
			return 1
		}
	}
	log := newLogger(cfg, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	if err := serveProxy(ctx, cfg, log, stdout); err != nil {
		fmt.Fprintf(stderr, "gearproxy: %v\n", err)
		return 1
	}
	return 0
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	switch cfg.Log.Level {
	case "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	// A LevelVar, so that SIGHUP can change the level (ops.go).
	lv := new(slog.LevelVar)
	lv.Set(level)
	opts := &slog.HandlerOptions{Level: lv}
	if cfg.Log.Format == "json" {
		return slog.New(liveLevel{slog.NewJSONHandler(w, opts), lv})
	}
	return slog.New(liveLevel{slog.NewTextHandler(w, opts), lv})
}

// serveProxy turns the configuration into the packages' own options, runs
// the proxy and stops it when ctx ends.
func serveProxy(ctx context.Context, cfg *config.Config, log *slog.Logger, stdout io.Writer) error {
	// Users and certificates first: a mistake there stops startup before
	// any store is opened, and SIGHUP is caught from here on.
	sec, err := newSecurity(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer sec.stop()
	ops, err := newOperations(ctx, cfg, log, sec)
	if err != nil {
		return err
	}
	defer ops.close()
	var bundled []*jobserver.Server
	defer func() {
		for _, js := range bundled {
			js.Close()
		}
	}()
	opts := proxy.Options{
		HandleKey:      []byte(cfg.HandleKey),
		HandleCache:    cfg.Limits.HandleCache,
		MaxConnections: cfg.Limits.MaxConnections,
		MaxData:        cfg.Limits.MaxPacketSize,
		MaxOutput:      cfg.Limits.MaxOutput,
		IdleTimeout:    cfg.Limits.IdleTimeout.Duration,
		HealthInterval: cfg.Health.Interval.Duration,
		HealthTimeout:  cfg.Health.Timeout.Duration,
		DialTimeout:    cfg.Health.DialTimeout.Duration,
		MaxBackoff:     cfg.Health.MaxBackoff.Duration,
		Version:        jobserver.Version,
		Logger:         log,
		Metrics:        ops.observer(),
	}
	for _, b := range cfg.Backends {
		pb := proxy.Backend{Name: b.Name, Weight: b.Weight, Links: b.Links, Address: backendAddress(b)}
		if b.Bundled {
			st, err := store.Open(cfg.BackendDir(b), store.Options{Logger: log.With("backend", b.Name)})
			if err != nil {
				return fmt.Errorf("backend %s: %w", b.Name, err)
			}
			js, err := jobserver.New(jobserver.Options{
				// A short prefix keeps handles embeddable in the
				// 63 bytes clients accept.
				HandlePrefix: "H:" + b.Name,
				MaxPacket:    cfg.Limits.MaxPacketSize,
				Logger:       log.With("backend", b.Name),
				Store:        st,
			})
			if err != nil {
				st.Close()
				return fmt.Errorf("backend %s: %w", b.Name, err)
			}
			bundled = append(bundled, js)
			pb.Dial = backend.DirectDialer(func(replies net.Conn) (io.WriteCloser, error) { return js.ServeDirect(replies) })
		} else {
			pb.Dial = backend.TCPDialer(b.Address)
		}
		opts.Backends = append(opts.Backends, pb)
	}
	srv, err := proxy.New(opts)
	if err != nil {
		return err
	}
	defer srv.Close()
	// Give the backends a moment to connect before clients arrive, so
	// that the first submits do not find an empty pool.
	wait, cancel := context.WithTimeout(ctx, cfg.Health.DialTimeout.Duration)
	if err := srv.WaitUp(wait, len(opts.Backends)); err != nil {
		log.Warn("listening before every backend is up", "err", err)
	}
	cancel()
	for i, l := range cfg.Listeners {
		gate, err := sec.gate(cfg, i)
		if err != nil {
			return err
		}
		addr, err := srv.Listen(l.Address, proxy.Listener{
			Auth:           gate,
			AuthTimeout:    l.AuthTimeout.Duration,
			MaxConnections: l.MaxConnections,
		})
		if err != nil {
			return err
		}
		log.Info("listening", "addr", addr.String(), "user", l.User, "tls", l.Secure(), "acme", l.ACME != nil, "sasl", l.SASL)
		if err := sec.startACME(ctx, i); err != nil {
			return err
		}
	}
	if err := ops.start(srv, cfg); err != nil {
		return err
	}
	ops.waitReloads(ctx, cfg.File)
	log.Info("shutting down")
	ops.shutdown(srv, cfg.DrainTimeout.Duration)
	if err := srv.Close(); err != nil && !errors.Is(err, proxy.ErrClosed) {
		return err
	}
	return nil
}
