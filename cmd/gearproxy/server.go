package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/gearproxy/gearproxy/jobserver"
	"github.com/gearproxy/gearproxy/jobserver/store"
)

// runServer runs the bundled job server standalone until SIGTERM, SIGINT
// or an enabled admin "shutdown".
func runServer(args []string, _ io.Writer, stderr io.Writer) int {
	fs := flag.NewFlagSet("server", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: gearproxy server [flags]\n\nRuns the bundled gearmand-compatible job server.")
		fs.PrintDefaults()
	}
	listen := fs.String("listen", "127.0.0.1:4730", "`address` to listen on")
	retries := fs.Int("job-retries", 0, "drop a job after `N` workers failed it (disconnect or timeout); 0 = unlimited")
	prefix := fs.String("handle-prefix", "", "job handle `prefix` (default \"H:<hostname>\")")
	maxPacket := fs.Int("max-packet", 0, "largest packet in `bytes` (default 64 MiB)")
	dataDir := fs.String("data", "", "keep background jobs durable in `dir` (default: memory only)")
	syncMode := fs.String("sync", "always", "with -data, when a job is on disk before JOB_CREATED: always, batch or none")
	allowShutdown := fs.Bool("allow-shutdown", false, "enable the admin command \"shutdown [graceful]\"")
	maxConns := fs.Int("max-connections", 0, "refuse connections beyond `N` (0 = unlimited)")
	idle := fs.Duration("idle-timeout", time.Minute, "close connections that send nothing within this `duration` (0 = never)")
	verbose := fs.String("log-level", "info", "log `level`: debug, info, warn or error")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the server to `file` until it stops")
	procs := fs.Int("procs", -1, "run Go code on at most `N` CPUs (0 = all; default 1 in memory, all with -data): the job server's state is behind one lock, and on one CPU it spends about a quarter less CPU per job on thread hand-offs, while the store's commits gain from a second CPU")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gearproxy server: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*verbose)); err != nil {
		fmt.Fprintf(stderr, "gearproxy server: -log-level: %v\n", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	switch {
	case *procs > 0:
		runtime.GOMAXPROCS(*procs)
	case *procs < 0 && *dataDir == "":
		runtime.GOMAXPROCS(1)
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			log.Error("cannot write the CPU profile", "err", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			log.Error("cannot start the CPU profile", "err", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}

	opts := jobserver.Options{
		HandlePrefix:   *prefix,
		JobRetries:     *retries,
		MaxPacket:      *maxPacket,
		MaxConnections: *maxConns,
		IdleTimeout:    *idle,
		AllowShutdown:  *allowShutdown,
		Logger:         log,
	}
	mode, err := store.ParseSyncMode(*syncMode)
	if err != nil {
		fmt.Fprintf(stderr, "gearproxy server: -sync: %v\n", err)
		return 2
	}
	if *dataDir != "" {
		st, err := store.Open(*dataDir, store.Options{Sync: mode, Logger: log})
		if err != nil {
			log.Error("cannot open the job store", "err", err)
			return 1
		}
		opts.Store = st
	}
	srv, err := jobserver.New(opts)
	if err != nil {
		if opts.Store != nil {
			opts.Store.Close()
		}
		log.Error("cannot start the job server", "err", err)
		return 1
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		srv.Close()
		log.Error("cannot listen", "err", err)
		return 1
	}
	log.Info("job server listening", "addr", l.Addr().String(), "data", *dataDir, "sync", mode.String(), "job_retries", *retries)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case sig := <-sigs:
		log.Info("stopping", "signal", sig.String())
		if err := srv.Close(); err != nil {
			log.Error("closing the job store", "err", err)
			return 1
		}
		<-served
	case err := <-served:
		if !errors.Is(err, jobserver.ErrServerClosed) {
			srv.Close()
			log.Error("serve failed", "err", err)
			return 1
		}
		// An admin "shutdown": a graceful one waits for the last job.
		select {
		case <-srv.Done():
		case sig := <-sigs:
			log.Info("stopping", "signal", sig.String())
		}
		if err := srv.Close(); err != nil {
			log.Error("closing the job store", "err", err)
			return 1
		}
	}
	log.Info("stopped")
	return 0
}
