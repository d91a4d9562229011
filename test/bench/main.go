// Command bench compares gearproxy's servers with gearmand in one run: it
// builds gearproxy, starts gearmand -t 1 and `gearproxy server` on free
// 127.0.0.1 ports, drives the same workloads against both with the
// gearproxy bench library (alternating which goes first, several rounds),
// and prints medians and the median of the per-round ratios next to the
// targets of issue 2. With -proxy it also compares the proxy (issue 4):
// proxy over two gearmand vs a dumb TCP relay in front of one, and proxy
// over two bundled backends vs bare gearmand.
//
// Run it from the repository root:
//
//	go run ./test/bench                 # issue 2: fg, bg and memory, 7 rounds
//	go run ./test/bench -rounds 5 -only fg,bg
//	go run ./test/bench -proxy          # also issue 4 (needs `gearproxy run`)
//	go run ./test/bench -json out.json  # also every raw result as JSON
//	go run ./test/bench -baseline-bin /tmp/gp-old -only fg,bg   # A/B: another build's server instead of gearmand
//
// -proxy also measures memory per idle client connection (-idle-conns,
// 10000 by default) on a fresh proxy and a fresh gearmand.
//
// It exits 1 when any run lost, duplicated or corrupted a job, and with
// -strict also when a target is missed. Every process it starts dies with
// it (SIGKILL on parent death, and killed on exit).
//
// Numbers are ratios on purpose: on a shared machine absolute rates move,
// but both servers see the same noise within a round. The CPU columns
// (server CPU time per job, from /proc/PID/stat) are the steadiest signal
// on a busy host.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/gearproxy/gearproxy/bench"
)

type options struct {
	rounds     int
	fgDuration time.Duration
	bgJobs     int
	memJobs    int
	only       map[string]bool
	proxy      bool
	idleConns  int
	strict     bool
	jsonPath   string
	gearmand   string
	baseline   string
	keep       bool
	verbose    bool
	// cliGen: each run's load comes from a `gearproxy bench` process of
	// its own, the binary cli (set once it is built); else from this
	// process.
	cliGen bool
	cli    string
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 7, "runs of each workload per side, alternating which side goes first (many short rounds cancel a shared machine's load bursts better than a few long ones)")
	flag.DurationVar(&o.fgDuration, "fg-duration", 2*time.Second, "length of each fg run")
	flag.IntVar(&o.bgJobs, "bg-jobs", 100000, "background jobs per bg run")
	flag.IntVar(&o.memJobs, "mem-jobs", 1000000, "background jobs queued (with no workers) to measure memory per job")
	only := flag.String("only", "fg,bg,mem", "workloads to run: comma list of fg, bg, mem")
	flag.BoolVar(&o.proxy, "proxy", false, "also compare the proxy (issue 4); skipped while `gearproxy run` is a placeholder")
	flag.IntVar(&o.idleConns, "idle-conns", 10000, "with -proxy, idle client connections opened to measure memory per connection (0: skip)")
	flag.BoolVar(&o.strict, "strict", false, "exit 1 when a target is missed, not only on a verification failure")
	flag.StringVar(&o.jsonPath, "json", "", "write every raw result and the summary to this file")
	flag.StringVar(&o.gearmand, "gearmand", "/usr/sbin/gearmand", "gearmand binary")
	flag.StringVar(&o.baseline, "baseline-bin", "", "compare with this gearproxy binary's server instead of gearmand (A/B-test a change: e.g. git archive OLD | tar -x -C /tmp/old, build there, pass the binary)")
	flag.BoolVar(&o.keep, "keep", false, "keep the temporary directory (server logs, proxy configs)")
	flag.BoolVar(&o.verbose, "v", false, "print every run's result as it finishes")
	flag.BoolVar(&o.cliGen, "cli", false, "generate each run's load with a `gearproxy bench` process, as the issues state their targets, instead of in this process")
	relayListen := flag.String("relay-listen", "", "internal: run as a TCP relay listening here")
	relayTarget := flag.String("relay-target", "", "internal: the relay's target")
	flag.Parse()
	if *relayListen != "" {
		relay(*relayListen, *relayTarget)
		return
	}
	o.only = map[string]bool{}
	for _, w := range strings.Split(*only, ",") {
		o.only[strings.TrimSpace(w)] = true
	}
	os.Exit(run(o))
}

func run(o options) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	dir, err := os.MkdirTemp("", "gearproxy-bench-")
	if err != nil {
		return fail(err)
	}
	if o.keep {
		fmt.Printf("temporary directory: %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	self, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	e := &env{dir: dir, gearmand: o.gearmand, self: self, gearproxy: filepath.Join(dir, "gearproxy"), baselineBin: o.baseline}
	defer e.stopAll()
	if err := build(ctx, e.gearproxy); err != nil {
		return fail(err)
	}
	if o.cliGen {
		o.cli = e.gearproxy
	}

	rep := &report{started: time.Now(), args: os.Args[1:], tree: treeState(ctx)}
	rep.header(os.Stdout)

	gm, err := e.startBaseline(ctx, e.baselineLabel())
	if err != nil {
		return fail(err)
	}
	bundled, err := e.startBundled(ctx, "bundled")
	if err != nil {
		return fail(err)
	}
	issue2 := &comparison{
		title:     "bundled job server (gearproxy server) vs gearmand -t 1  [issue 2]",
		base:      side{label: e.baselineLabel(), addr: gm.addr, procs: []*proc{gm}},
		cand:      side{label: "bundled", addr: bundled.addr, procs: []*proc{bundled}},
		workloads: issue2Workloads(o, 1.5),
	}
	if o.baseline != "" {
		// An A/B test of two builds: issue 2's targets are about
		// gearmand, so only the ratios mean something here.
		issue2.title = "bundled job server: this checkout vs " + o.baseline
		for _, w := range issue2.workloads {
			for i := range w.metrics {
				w.metrics[i].target = 0
			}
		}
	}
	if len(issue2.workloads) > 0 {
		if err := issue2.run(ctx, o, rep); err != nil {
			return fail(err)
		}
		issue2.print(os.Stdout)
	}
	gm.stop()
	bundled.stop()

	if o.only["mem"] {
		m, err := measureMemory(ctx, e, o, rep)
		if err != nil {
			return fail(err)
		}
		m.print(os.Stdout)
		rep.Memory = m
	}

	if o.proxy {
		if err := runProxyComparisons(ctx, e, o, rep); err != nil {
			if errors.Is(err, errNotBuilt) {
				fmt.Println("\n== proxy comparisons skipped: `gearproxy run` is not built yet")
			} else {
				return fail(err)
			}
		}
	}

	rep.footer(os.Stdout)
	if o.jsonPath != "" {
		if err := rep.writeJSON(o.jsonPath); err != nil {
			return fail(err)
		}
	}
	switch {
	case !rep.verified():
		return 1
	case o.strict && rep.missed > 0:
		return 1
	}
	return 0
}

// runProxyComparisons measures issue 4's two targets.
func runProxyComparisons(ctx context.Context, e *env, o options, rep *report) error {
	gm1, err := e.startGearmand(ctx, "backend-gm1")
	if err != nil {
		return err
	}
	gm2, err := e.startGearmand(ctx, "backend-gm2")
	if err != nil {
		return err
	}
	proxyGM, err := e.startProxy(ctx, "proxy-2gearmand", []string{gm1.addr, gm2.addr}, 0)
	if err != nil {
		return err
	}
	gm0, err := e.startGearmand(ctx, "relayed-gearmand")
	if err != nil {
		return err
	}
	rl, err := e.startRelay(ctx, "relay", gm0.addr)
	if err != nil {
		return err
	}
	a := &comparison{
		title:     "proxy over 2 gearmand vs TCP relay over 1 gearmand  [issue 4]",
		base:      side{label: "relay+gearmand", addr: rl.addr, procs: []*proc{rl, gm0}},
		cand:      side{label: "proxy+2 gearmand", addr: proxyGM.addr, procs: []*proc{proxyGM, gm1, gm2}},
		workloads: proxyWorkloads(o),
	}
	isGearmand := func(p string) bool { return p == gm0.name || p == gm1.name || p == gm2.name }
	for _, w := range a.workloads {
		w.metrics = append(w.metrics,
			procShare("  relay or proxy", func(p string) bool { return !isGearmand(p) }),
			procShare("  gearmand backends", isGearmand))
	}
	if err := a.run(ctx, o, rep); err != nil {
		return err
	}
	a.print(os.Stdout)
	for _, p := range []*proc{gm1, gm2, proxyGM, gm0, rl} {
		p.stop()
	}

	bare, err := e.startGearmand(ctx, "bare-gearmand")
	if err != nil {
		return err
	}
	proxyB, err := e.startProxy(ctx, "proxy-2bundled", nil, 2)
	if err != nil {
		return err
	}
	b := &comparison{
		title:     "proxy over 2 bundled backends vs bare gearmand -t 1  [issue 4]",
		base:      side{label: "gearmand", addr: bare.addr, procs: []*proc{bare}},
		cand:      side{label: "proxy+2 bundled", addr: proxyB.addr, procs: []*proc{proxyB}},
		workloads: proxyWorkloads(o),
	}
	if err := b.run(ctx, o, rep); err != nil {
		return err
	}
	b.print(os.Stdout)
	bare.stop()
	proxyB.stop()
	if o.idleConns > 0 {
		return measureIdleConns(ctx, e, o, rep)
	}
	return nil
}

// measureIdleConns measures memory per idle client connection on fresh
// processes: one that already ran a workload has freed memory to reuse,
// which would hide part of the cost.
func measureIdleConns(ctx context.Context, e *env, o options, rep *report) error {
	fmt.Printf("\n== memory per idle client connection  [issue 4]\n")
	gm, err := e.startGearmand(ctx, "idle-gearmand")
	if err != nil {
		return err
	}
	px, err := e.startProxy(ctx, "idle-proxy-2bundled", nil, 2)
	if err != nil {
		return err
	}
	for _, t := range []struct {
		p      *proc
		label  string
		target float64
	}{{gm, "gearmand", 0}, {px, "proxy+2 bundled", 16 << 10}} {
		r, err := measureIdle(ctx, t.p, t.label, o.idleConns, t.target)
		if err != nil {
			return err
		}
		r.print(os.Stdout)
		rep.Idle = append(rep.Idle, r)
		if r.Verdict == "MISS" {
			rep.missed++
		}
		t.p.stop()
	}
	return nil
}

// build compiles gearproxy from the module this program belongs to.
func build(ctx context.Context, out string) error {
	gomod, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("go env GOMOD: %w", err)
	}
	root := filepath.Dir(strings.TrimSpace(string(gomod)))
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/gearproxy")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build gearproxy: %v\n%s", err, b)
	}
	return nil
}

func fail(err error) int {
	fmt.Fprintf(os.Stderr, "bench: %v\n", err)
	return 1
}

// report collects everything printed, for -json and the final verdict.
type report struct {
	started  time.Time
	args     []string
	tree     string
	Runs     []runRecord   `json:"runs"`
	Summary  []summaryRow  `json:"summary"`
	Memory   *memoryResult `json:"memory,omitempty"`
	Idle     []*idleResult `json:"idle,omitempty"`
	failures []string
	missed   int
}

type runRecord struct {
	Comparison string             `json:"comparison"`
	Side       string             `json:"side"`
	Workload   string             `json:"workload"`
	Round      int                `json:"round"`
	ServerCPU  float64            `json:"server_cpu_s"`
	ProcCPU    map[string]float64 `json:"process_cpu_s"`
	GenCPU     float64            `json:"generator_cpu_s"`
	Result     *bench.Result      `json:"result"`
}

func (r *report) header(w io.Writer) {
	fmt.Fprintf(w, "gearproxy server comparison  %s  (go run ./test/bench %s)\n",
		r.started.UTC().Format("2006-01-02 15:04 UTC"), strings.Join(r.args, " "))
	fmt.Fprintf(w, "host: %d CPUs, load average %s; gearproxy built from %s\n", runtime.NumCPU(), loadavg(), r.tree)
}

// treeState names the commit the measured gearproxy was built from, and
// whether the work tree had changes on top of it (they are in the build).
func treeState(ctx context.Context) string {
	head, err := exec.CommandContext(ctx, "git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "an unknown tree"
	}
	s := strings.TrimSpace(string(head))
	if st, err := exec.CommandContext(ctx, "git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil {
		if n := strings.Count(string(st), "\n"); n > 0 {
			s += fmt.Sprintf(" + %d modified files", n)
		}
	}
	return s
}

func (r *report) footer(w io.Writer) {
	fmt.Fprintf(w, "\nfinished in %s, load average %s\n", time.Since(r.started).Round(time.Second), loadavg())
	if r.verified() {
		fmt.Fprintln(w, "verification: every run OK (0 lost, 0 duplicated, 0 mismatched, 0 failed)")
	} else {
		fmt.Fprintln(w, "VERIFICATION FAILED:")
		for _, f := range r.failures {
			fmt.Fprintf(w, "  %s\n", f)
		}
	}
	if r.missed > 0 {
		fmt.Fprintf(w, "targets missed: %d\n", r.missed)
	}
}

func (r *report) verified() bool { return len(r.failures) == 0 }

func (r *report) writeJSON(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}
