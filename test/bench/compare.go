package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/gearproxy/gearproxy/bench"
)

// side is one thing a comparison measures: where the load goes and which
// processes' CPU it costs.
type side struct {
	label string
	addr  string
	procs []*proc
}

// comparison runs the same workloads against a baseline and a candidate.
type comparison struct {
	title      string
	base, cand side
	workloads  []*workload
}

// workload is one load shape and the numbers read from its results.
type workload struct {
	name    string
	cfg     bench.Config
	metrics []metric
	// samples[0] is the baseline's runs, samples[1] the candidate's.
	samples [2][]sample
}

// metric is one number of a result. The ratio is candidate/baseline;
// target, when set, is the bound that ratio must meet: at least target
// when higher is better, at most target otherwise.
type metric struct {
	name         string
	value        func(s sample) float64
	format       func(float64) string
	higherBetter bool
	target       float64
}

// sample is one run of a workload on one side.
type sample struct {
	res            *bench.Result
	serverCPU      time.Duration
	genCPU         time.Duration
	serverSwitches int64
	// procCPU is each process's share of serverCPU, by name (a proxy and
	// its backends, a relay and its gearmand).
	procCPU map[string]float64
}

func perJob(d time.Duration, s sample) float64 {
	if s.res.Jobs == 0 {
		return 0
	}
	return float64(d) / float64(s.res.Jobs)
}

func jobsPerSec(f float64) string  { return fmt.Sprintf("%.0f", f) }
func duration(f float64) string    { return time.Duration(f).Round(10 * time.Microsecond).String() }
func cpuPerJob(f float64) string   { return fmt.Sprintf("%.1fµs", f/1e3) }
func twoDecimals(f float64) string { return fmt.Sprintf("%.2f", f) }

func throughput(target float64) metric {
	return metric{name: "jobs/s", value: func(s sample) float64 { return s.res.JobsPerSec }, format: jobsPerSec, higherBetter: true, target: target}
}

func p99(target float64) metric {
	return metric{name: "p99 latency", value: func(s sample) float64 { return float64(s.res.Latency.P99) }, format: duration, target: target}
}

// The informational rows: no target, read for the why behind a ratio.
func infoMetrics() (serverCPU, switches, genCPU metric) {
	serverCPU = metric{name: "server CPU per job", value: func(s sample) float64 { return perJob(s.serverCPU, s) }, format: cpuPerJob}
	switches = metric{name: "server ctx switches per job", value: func(s sample) float64 { return perJob(time.Duration(s.serverSwitches), s) }, format: twoDecimals}
	genCPU = metric{name: "generator CPU per job", value: func(s sample) float64 { return perJob(s.genCPU, s) }, format: cpuPerJob}
	return
}

// procShare is the CPU per job of the side's processes that match: the
// proxy comparison splits server CPU into the hop (proxy or relay) and its
// gearmand backends, since on a machine where every process shares the
// CPUs the backends' share alone can decide the ratio.
func procShare(name string, match func(proc string) bool) metric {
	return metric{name: name, format: cpuPerJob, value: func(s sample) float64 {
		var sec float64
		for p, v := range s.procCPU {
			if match(p) {
				sec += v
			}
		}
		return perJob(time.Duration(sec*float64(time.Second)), s)
	}}
}

// phaseMetrics are bg's submit and drain rates.
func phaseMetrics() (submit, drain metric) {
	submit = metric{name: "  submit jobs/s", value: func(s sample) float64 { return phaseRate(s.res.Submit) }, format: jobsPerSec, higherBetter: true}
	drain = metric{name: "  drain jobs/s", value: func(s sample) float64 { return phaseRate(s.res.Drain) }, format: jobsPerSec, higherBetter: true}
	return
}

func phaseRate(p *bench.Phase) float64 {
	if p == nil {
		return 0
	}
	return p.JobsPerSec
}

func fgWorkload(o options, target float64) *workload {
	serverCPU, switches, genCPU := infoMetrics()
	return &workload{
		name: "fg: 8 clients x 8 in flight, 4 workers, 100 B",
		cfg: bench.Config{Mode: bench.Foreground, Clients: 8, Pipeline: 8, Workers: 4, Payload: 100,
			Duration: o.fgDuration, Function: "cmp_fg"},
		metrics: []metric{throughput(target), p99(1.0), serverCPU, switches, genCPU},
	}
}

func issue2Workloads(o options, target float64) []*workload {
	var ws []*workload
	if o.only["fg"] {
		ws = append(ws, fgWorkload(o, target))
	}
	if o.only["bg"] {
		serverCPU, switches, genCPU := infoMetrics()
		submitPS, drainPS := phaseMetrics()
		ws = append(ws, &workload{
			name: fmt.Sprintf("bg: %dk jobs by 4 clients x 32 in flight, drained by 4 workers, 100 B", o.bgJobs/1000),
			cfg: bench.Config{Mode: bench.Background, Clients: 4, Pipeline: 32, Workers: 4, Payload: 100,
				Jobs: o.bgJobs, Function: "cmp_bg"},
			metrics: []metric{throughput(target), submitPS, drainPS, serverCPU, switches, genCPU},
		})
	}
	return ws
}

// proxyWorkloads are issue 4's: in fg the proxy must at least match its
// baseline's jobs/s. Issue 4 sets no other target: the rest is shown for
// the why.
func proxyWorkloads(o options) []*workload {
	ws := issue2Workloads(o, 1.0)
	for _, w := range ws {
		for i := range w.metrics {
			w.metrics[i].target = 0
		}
		if w.cfg.Mode == bench.Foreground {
			w.metrics[0].target = 1.0
		}
	}
	return ws
}

// run drives every workload o.rounds times per side, alternating which side
// goes first, after one untimed warm-up each.
func (c *comparison) run(ctx context.Context, o options, rep *report) error {
	fmt.Printf("\n== %s\n", c.title)
	sides := [2]*side{&c.base, &c.cand}
	for _, w := range c.workloads {
		warm := w.cfg
		warm.Duration, warm.Jobs = 0, 20000
		for _, s := range sides {
			if _, err := c.once(ctx, o, s, warm); err != nil {
				return err
			}
		}
		for round := 1; round <= o.rounds; round++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			order := []int{0, 1}
			if round%2 == 0 {
				order = []int{1, 0}
			}
			for _, i := range order {
				s, err := c.once(ctx, o, sides[i], w.cfg)
				if err != nil {
					return err
				}
				w.samples[i] = append(w.samples[i], s)
				rep.Runs = append(rep.Runs, runRecord{Comparison: c.title, Side: sides[i].label, Workload: w.name,
					Round: round, ServerCPU: s.serverCPU.Seconds(), ProcCPU: s.procCPU, GenCPU: s.genCPU.Seconds(), Result: s.res})
				if !s.res.OK() {
					rep.failures = append(rep.failures, fmt.Sprintf("%s, %s, round %d: lost %d duplicated %d mismatched %d failed %d %q",
						sides[i].label, w.name, round, s.res.Lost, s.res.Duplicated, s.res.Mismatched, s.res.Failed, s.res.Errors))
				}
				if o.verbose {
					fmt.Printf("-- %s, %s, round %d\n", sides[i].label, w.name, round)
					s.res.WriteText(stdoutIndent{})
					for name, sec := range s.procCPU {
						fmt.Printf("   CPU %s: %.1fµs/job\n", name, sec*1e6/float64(max(s.res.Jobs, 1)))
					}
				} else {
					fmt.Print(".")
				}
			}
		}
		if !o.verbose {
			fmt.Println()
		}
	}
	for _, w := range c.workloads {
		for _, m := range w.metrics {
			row := c.summarize(w, m)
			rep.Summary = append(rep.Summary, row)
			if row.Verdict == "MISS" {
				rep.missed++
			}
		}
	}
	return ctx.Err()
}

// once runs cfg against one side and measures the CPU both the side's
// processes and this generator spent on it.
func (c *comparison) once(ctx context.Context, o options, s *side, cfg bench.Config) (sample, error) {
	cfg.Servers = []string{s.addr}
	before := make([]time.Duration, len(s.procs))
	var switches int64
	for i, p := range s.procs {
		before[i] = cpuTime(p.cmd.Process.Pid)
		switches -= ctxSwitches(p.cmd.Process.Pid)
	}
	var res *bench.Result
	var genCPU time.Duration
	var err error
	if o.cli != "" {
		res, genCPU, err = benchCLI(ctx, o.cli, cfg)
	} else {
		gen0 := cpuTime(0)
		res, err = bench.Run(ctx, cfg)
		genCPU = cpuTime(0) - gen0
	}
	if err != nil {
		return sample{}, fmt.Errorf("%s: %w", s.label, err)
	}
	smp := sample{res: res, genCPU: genCPU, procCPU: map[string]float64{}}
	for i, p := range s.procs {
		d := cpuTime(p.cmd.Process.Pid) - before[i]
		smp.serverCPU += d
		smp.procCPU[p.name] = d.Seconds()
		switches += ctxSwitches(p.cmd.Process.Pid)
	}
	smp.serverSwitches = switches
	return smp, nil
}

// benchCLI runs cfg as a `gearproxy bench -json` process of its own, the
// way the issues state their targets, and returns its result and the CPU
// the process used.
func benchCLI(ctx context.Context, gearproxy string, cfg bench.Config) (*bench.Result, time.Duration, error) {
	args := []string{"bench", "-json", "-mode", string(cfg.Mode), "-clients", fmt.Sprint(cfg.Clients),
		"-pipeline", fmt.Sprint(cfg.Pipeline), "-workers", fmt.Sprint(cfg.Workers), "-payload", fmt.Sprint(cfg.Payload),
		"-function", cfg.Function, "-server", strings.Join(cfg.Servers, ",")}
	if cfg.Duration > 0 {
		args = append(args, "-duration", cfg.Duration.String())
	} else {
		args = append(args, "-jobs", fmt.Sprint(cfg.Jobs))
	}
	if cfg.Unique != "" {
		args = append(args, "-unique", string(cfg.Unique))
	}
	if cfg.Priority != "" {
		args = append(args, "-priority", string(cfg.Priority))
	}
	cmd := exec.CommandContext(ctx, gearproxy, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var res bench.Result
	if jerr := json.Unmarshal(out, &res); jerr != nil {
		return nil, 0, fmt.Errorf("gearproxy %s: %v %v: %s", strings.Join(args, " "), err, jerr, strings.TrimSpace(stderr.String()))
	}
	var cpu time.Duration
	if st := cmd.ProcessState; st != nil {
		cpu = st.UserTime() + st.SystemTime()
	}
	return &res, cpu, nil
}

// summaryRow is one line of the table.
type summaryRow struct {
	Comparison string    `json:"comparison"`
	Workload   string    `json:"workload"`
	Metric     string    `json:"metric"`
	Base       float64   `json:"base"`
	Cand       float64   `json:"candidate"`
	Ratio      float64   `json:"ratio"`
	Ratios     []float64 `json:"ratios"`
	Target     string    `json:"target,omitempty"`
	Verdict    string    `json:"verdict,omitempty"`
	base, cand string
}

func (c *comparison) summarize(w *workload, m metric) summaryRow {
	var bv, cv, ratios []float64
	for i := range w.samples[0] {
		b, x := m.value(w.samples[0][i]), m.value(w.samples[1][i])
		bv, cv = append(bv, b), append(cv, x)
		if b > 0 {
			ratios = append(ratios, x/b)
		}
	}
	row := summaryRow{Comparison: c.title, Workload: w.name, Metric: m.name,
		Base: median(bv), Cand: median(cv), Ratio: median(ratios), Ratios: ratios}
	row.base, row.cand = m.format(row.Base), m.format(row.Cand)
	if m.target > 0 {
		ok := row.Ratio <= m.target
		row.Target = fmt.Sprintf("<= %.2fx", m.target)
		if m.higherBetter {
			ok = row.Ratio >= m.target
			row.Target = fmt.Sprintf(">= %.2fx", m.target)
		}
		row.Verdict = "ok"
		if !ok {
			row.Verdict = "MISS"
		}
	}
	return row
}

func (c *comparison) print(out io.Writer) {
	fmt.Fprintf(out, "%-28s %16s %16s %8s  %-9s %s   (ratio = %s / %s, median of rounds)\n",
		"", c.base.label, c.cand.label, "ratio", "target", "", c.cand.label, c.base.label)
	for _, w := range c.workloads {
		fmt.Fprintln(out, w.name)
		for _, m := range w.metrics {
			r := c.summarize(w, m)
			ratios := make([]string, len(r.Ratios))
			for i, x := range r.Ratios {
				ratios[i] = fmt.Sprintf("%.2f", x)
			}
			fmt.Fprintf(out, "  %-26s %16s %16s %7.2fx  %-9s %-4s  rounds: %s\n",
				m.name, r.base, r.cand, r.Ratio, r.Target, r.Verdict, strings.Join(ratios, " "))
		}
	}
}

// stdoutIndent indents a result printed in -v mode.
type stdoutIndent struct{}

func (stdoutIndent) Write(b []byte) (int, error) {
	s := strings.ReplaceAll(strings.TrimSuffix(string(b), "\n"), "\n", "\n   ")
	fmt.Print("   " + s + "\n")
	return len(b), nil
}

// memoryResult is the memory each server needs per queued background job.
type memoryResult struct {
	Jobs     int     `json:"jobs"`
	Payload  int     `json:"payload"`
	Baseline string  `json:"baseline"`
	Gearmand float64 `json:"baseline_bytes_per_job"`
	Bundled  float64 `json:"bundled_bytes_per_job"`
	Ratio    float64 `json:"ratio"`
	Verdict  string  `json:"verdict"`
	details  [2]string
}

// measureMemory starts a fresh gearmand and bundled server, queues memJobs
// 100-byte background jobs on each with no worker, and divides the growth
// of VmRSS by the number of jobs.
func measureMemory(ctx context.Context, e *env, o options, rep *report) (*memoryResult, error) {
	fmt.Printf("\n== memory per queued background job: %d jobs of 100 B, no workers\n", o.memJobs)
	m := &memoryResult{Jobs: o.memJobs, Payload: 100}
	start := [2]func(context.Context, string) (*proc, error){e.startBaseline, e.startBundled}
	names := [2]string{"mem-" + e.baselineLabel(), "mem-bundled"}
	m.Baseline = e.baselineLabel()
	var perJob [2]float64
	for i := range start {
		p, err := start[i](ctx, names[i])
		if err != nil {
			return nil, err
		}
		before, err := p.rss()
		if err != nil {
			return nil, err
		}
		res, err := bench.Run(ctx, bench.Config{Servers: []string{p.addr}, Mode: bench.Background, Workers: -1,
			Clients: 8, Pipeline: 32, Payload: 100, Jobs: o.memJobs, Function: "cmp_mem", Timeout: 30 * time.Second})
		if err != nil {
			return nil, err
		}
		if !res.OK() {
			rep.failures = append(rep.failures, fmt.Sprintf("%s: lost %d failed %d %q", names[i], res.Lost, res.Failed, res.Errors))
		}
		// Let a garbage-collected server settle: RSS right after the
		// burst includes garbage of the submit path, not only jobs.
		time.Sleep(2 * time.Second)
		after, err := p.rss()
		if err != nil {
			return nil, err
		}
		perJob[i] = float64(after-before) / float64(res.Jobs)
		m.details[i] = fmt.Sprintf("VmRSS %d MiB -> %d MiB, %d jobs queued at %.0f jobs/s", before>>20, after>>20, res.Jobs, res.JobsPerSec)
		p.stop()
	}
	m.Gearmand, m.Bundled = perJob[0], perJob[1]
	if m.Gearmand > 0 {
		m.Ratio = m.Bundled / m.Gearmand
	}
	m.Verdict = "ok"
	if e.baselineBin != "" {
		m.Verdict = ""
	} else if m.Ratio > 0.5 {
		m.Verdict = "MISS"
		rep.missed++
	}
	return m, nil
}

func (m *memoryResult) print(out io.Writer) {
	fmt.Fprintf(out, "  %s: %s\n  bundled: %s\n", m.Baseline, m.details[0], m.details[1])
	fmt.Fprintf(out, "%-28s %16s %16s %8s  %-9s\n", "", m.Baseline, "bundled", "ratio", "target")
	fmt.Fprintf(out, "  %-26s %15.0fB %15.0fB %7.2fx  %-9s %s\n", "memory per queued job", m.Gearmand, m.Bundled, m.Ratio, "<= 0.50x", m.Verdict)
}
