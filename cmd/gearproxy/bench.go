package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"github.com/gearproxy/gearproxy/bench"
)

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// serverList collects -server values; each may also be a comma list.
type serverList []string

func (s *serverList) String() string { return strings.Join(*s, ",") }

func (s *serverList) Set(v string) error {
	for _, a := range strings.Split(v, ",") {
		if a = strings.TrimSpace(a); a != "" {
			*s = append(*s, a)
		}
	}
	return nil
}

// runBench parses the flags into a bench.Config; the load logic lives in
// package bench so that the comparison program runs the same code.
func runBench(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: gearproxy bench [flags]\n\nLoad-tests Gearman servers and verifies every result; exits 1 on any lost, duplicated, mismatched or failed job.")
		fs.PrintDefaults()
	}
	var servers serverList
	fs.Var(&servers, "server", "job server host:port; repeat or comma-separate for several (clients spread over them, every worker connects to each) (default 127.0.0.1:4730)")
	mode := fs.String("mode", "fg", "workload: fg (foreground jobs), bg (queue background jobs, then drain) or echo")
	clients := fs.Int("clients", 8, "client connections")
	workers := fs.Int("workers", 4, "workers (each connects to every server); bg with -workers -1 leaves the jobs queued")
	pipeline := fs.Int("pipeline", 8, "requests each client keeps in flight")
	payload := fs.Int("payload", 100, fmt.Sprintf("payload bytes (at least %d)", bench.MinPayload))
	jobs := fs.Int("jobs", 0, "total jobs over all clients (default 100000 unless -duration is set)")
	duration := fs.Duration("duration", 0, "run fg or echo for this long instead of -jobs")
	unique := fs.String("unique", "random", "unique IDs: random (one per job), none (empty) or duplicated (every client submits the same ones, to exercise coalescing)")
	priority := fs.String("priority", "normal", "job priority: high, normal or low")
	function := fs.String("function", "gearproxy_bench", "function name")
	timeout := fs.Duration("timeout", 0, "give up when no job progresses for this long; in-flight jobs count as lost (default 10s)")
	asJSON := fs.Bool("json", false, "print the result as JSON")
	cpuprofile := fs.String("cpuprofile", "", "write a CPU profile of the generator to this file")
	security := addBenchSecurityFlags(fs)
	if err := fs.Parse(args); err != nil {
		if err == flag.ErrHelp {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "gearproxy bench: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if len(servers) == 0 {
		servers = serverList{"127.0.0.1:4730"}
	}
	cfg := bench.Config{
		Servers:  servers,
		Mode:     bench.Mode(*mode),
		Clients:  *clients,
		Workers:  *workers,
		Pipeline: *pipeline,
		Payload:  *payload,
		Jobs:     *jobs,
		Duration: *duration,
		Unique:   bench.UniqueMode(*unique),
		Priority: bench.Priority(*priority),
		Function: *function,
		Timeout:  *timeout,
		Dial:     bench.DialTCP,
	}
	dial, err := security.dialer()
	if err != nil {
		fmt.Fprintf(stderr, "gearproxy bench: %v\n", err)
		return 2
	}
	cfg.Dial = dial
	if cfg.Mode == bench.Echo {
		cfg.Workers = 0
	}
	if err := cfg.Validate(); err != nil {
		// bench's errors already start with "bench:".
		fmt.Fprintf(stderr, "gearproxy %v\n", err)
		return 2
	}

	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintf(stderr, "gearproxy bench: %v\n", err)
			return 1
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintf(stderr, "gearproxy bench: %v\n", err)
			return 1
		}
		defer pprof.StopCPUProfile()
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cpu0 := processCPU()
	res, err := bench.Run(ctx, cfg)
	if err != nil {
		// bench's errors already start with "bench:".
		fmt.Fprintf(stderr, "gearproxy %v\n", err)
		return 1
	}
	// The generator's own CPU per job, to set against the server's: on a
	// shared machine the two compete for the same cores.
	if res.Jobs > 0 {
		res.GeneratorCPU = bench.Micros((processCPU() - cpu0) / time.Duration(res.Jobs))
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(res)
	} else {
		res.WriteText(stdout)
	}
	if !res.OK() {
		return 1
	}
	return 0
}
