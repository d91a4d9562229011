package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/connect"
)

// passwordEnv carries the password when no -password-file is given; a
// password flag would show in ps and shell history.
const passwordEnv = "GEARPROXY_PASSWORD"

// runConnect runs the local sidecar until SIGTERM or SIGINT, then drains.
func runConnect(args []string, _ io.Writer, stderr io.Writer) int {
	fs := flag.NewFlagSet("connect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: gearproxy connect -server HOST:PORT [flags]\n\n"+
			"Lets plain Gearman clients (PHP, the gearman CLI, ...) reach a gearproxy that requires TLS and SASL:\n"+
			"each local connection is relayed over its own authenticated TLS connection.\n"+
			"The password comes from -password-file or the "+passwordEnv+" environment variable.")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "127.0.0.1:4730", "local `address` for plain Gearman clients (loopback only unless -listen-insecure)")
	insecure := fs.Bool("listen-insecure", false, "allow a non-loopback -listen address: anyone who reaches it acts as -user")
	server := fs.String("server", "", "upstream gearproxy `HOST:PORT` (TLS)")
	serverName := fs.String("server-name", "", "`name` to verify the server certificate against and send as SNI (default: the host of -server)")
	caFile := fs.String("ca", "", "PEM `file` of CAs for the server certificate (default: system roots)")
	certFile := fs.String("cert", "", "PEM client certificate `file` (for EXTERNAL or certificate login)")
	keyFile := fs.String("key", "", "PEM private key `file` of -cert")
	user := fs.String("user", "", "SASL user `name`")
	passwordFile := fs.String("password-file", "", "read the password from `file` (first line)")
	mechanism := fs.String("mechanism", "", "SASL `mechanism`: SCRAM-SHA-256, SCRAM-SHA-256-PLUS, PLAIN or EXTERNAL (default: the best offered)")
	maxConns := fs.Int("max-connections", connect.DefaultMaxConnections, "concurrent local connections; more wait in the backlog")
	authTimeout := fs.Duration("auth-timeout", connect.DefaultAuthTimeout, "bound on dial + TLS handshake + SASL per connection")
	drain := fs.Duration("drain-timeout", 30*time.Second, "on SIGTERM, how long relays may go on before they are closed")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile to `file` until the sidecar stops")
	procs := fs.Int("procs", 1, "run Go code on at most `N` CPUs (0 = all): a relay waits on sockets, and on one CPU it spends about a sixth less CPU per job on thread hand-offs, leaving more to the clients it serves")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "gearproxy connect: "+format+"\n", a...)
		return 2
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q", fs.Arg(0))
	}
	if *procs < 0 {
		return fail("-procs must be 0 or more")
	}
	if *procs > 0 {
		runtime.GOMAXPROCS(*procs)
	}
	if *server == "" {
		return fail("-server is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fail("-log-level: %v", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	tc := &tls.Config{ServerName: *serverName}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fail("-ca: %v", err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return fail("-ca %s: no PEM certificate in it", *caFile)
		}
	}
	if (*certFile == "") != (*keyFile == "") {
		return fail("-cert and -key go together")
	}
	if *certFile != "" {
		cert, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			return fail("-cert/-key: %v", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	creds := client.Credentials{Mechanism: strings.ToUpper(*mechanism), Username: *user}
	switch creds.Mechanism {
	case "", client.MechSCRAM, client.MechSCRAMPlus, client.MechPlain, client.MechExternal:
	default:
		return fail("-mechanism %q: want SCRAM-SHA-256, SCRAM-SHA-256-PLUS, PLAIN or EXTERNAL", *mechanism)
	}
	if *passwordFile != "" {
		b, err := os.ReadFile(*passwordFile)
		if err != nil {
			return fail("-password-file: %v", err)
		}
		if fi, err := os.Stat(*passwordFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			fmt.Fprintf(stderr, "gearproxy connect: warning: -password-file %s is readable by others (mode %v): chmod 600 it\n",
				*passwordFile, fi.Mode().Perm())
		}
		creds.Password, _, _ = strings.Cut(string(b), "\n")
		creds.Password = strings.TrimSuffix(creds.Password, "\r")
	} else {
		creds.Password = os.Getenv(passwordEnv)
	}
	switch {
	case creds.Mechanism == client.MechExternal && len(tc.Certificates) == 0:
		return fail("-mechanism EXTERNAL needs -cert and -key")
	case creds.Mechanism != client.MechExternal && creds.Mechanism != "" && (creds.Username == "" || creds.Password == ""):
		return fail("-mechanism %s needs -user and a password (-password-file or %s)", creds.Mechanism, passwordEnv)
	case creds.Mechanism == "" && creds.Username == "" && len(tc.Certificates) == 0:
		return fail("no credentials: give -user with a password, or -cert and -key")
	case creds.Username != "" && creds.Password == "" && len(tc.Certificates) == 0:
		return fail("-user %s has no password: use -password-file or %s", creds.Username, passwordEnv)
	}

	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return fail("-cpuprofile: %v", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fail("-cpuprofile: %v", err)
		}
		defer pprof.StopCPUProfile()
	}
	sc, err := connect.New(connect.Config{Server: *server, TLS: tc, Credentials: creds,
		MaxConnections: *maxConns, AuthTimeout: *authTimeout, Logger: log})
	if err != nil {
		return fail("%v", err)
	}
	ln, err := connect.Listen(*listen, *insecure)
	if err != nil {
		log.Error("cannot start", "err", err)
		return 1
	}
	if *insecure {
		log.Warn("-listen-insecure: whoever reaches the listen address acts as the upstream user", "listen", ln.Addr().String())
	}
	log.Info("gearproxy connect listening", "listen", ln.Addr().String(), "server", *server,
		"user", creds.Username, "mechanism", orDefault(creds.Mechanism, "auto"))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sig)
	served := make(chan error, 1)
	go func() { served <- sc.Serve(ln) }()
	select {
	case err := <-served:
		log.Error("stopped", "err", err)
		sc.Close()
		return 1
	case s := <-sig:
		log.Info("stopping: no new connections, draining relays", "signal", s.String(), "drain_timeout", *drain)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	if err := sc.Shutdown(ctx); err != nil {
		log.Warn("drain timeout: remaining relays closed")
	}
	<-served
	log.Info("stopped")
	return 0
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
