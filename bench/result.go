package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// Result is what a run measured and what it found wrong. Lost, Duplicated,
// Mismatched and Failed are zero on a correct server; OK says so.
type Result struct {
	Mode     Mode       `json:"mode"`
	Servers  []string   `json:"servers"`
	Clients  int        `json:"clients"`
	Workers  int        `json:"workers"`
	Pipeline int        `json:"pipeline"`
	Payload  int        `json:"payload"`
	Unique   UniqueMode `json:"unique"`
	Priority Priority   `json:"priority"`
	Function string     `json:"function"`

	// Jobs is the number of jobs (or echoes) that completed and checked
	// out; in bg, the number of distinct jobs that ran.
	Jobs int64 `json:"jobs"`
	// Elapsed is the measured time: from the first submit to the last
	// result, in bg the submit phase plus the drain phase.
	Elapsed    Seconds `json:"elapsed_s"`
	JobsPerSec float64 `json:"jobs_per_s"`
	// Latency: submit to WORK_COMPLETE in fg, submit to JOB_CREATED in bg,
	// request to reply in echo.
	Latency Latency `json:"latency"`
	// Submit and Drain are bg's two phases; Drain is empty with no workers.
	Submit *Phase `json:"submit,omitempty"`
	Drain  *Phase `json:"drain,omitempty"`

	// Lost jobs were accepted (or sent, in fg and echo) and never
	// finished before the run ended or stalled.
	Lost int64 `json:"lost"`
	// Duplicated counts extra results in fg and extra runs in bg.
	Duplicated int64 `json:"duplicated"`
	// Mismatched counts results (or assigned payloads) that are not what
	// was sent: wrong data, wrong job, an unknown handle, a reply of the
	// wrong type.
	Mismatched int64 `json:"mismatched"`
	// Failed counts jobs the server refused (ERROR) or that ended in
	// WORK_FAIL or WORK_EXCEPTION.
	Failed int64 `json:"failed"`
	// Foreign counts jobs of other runs that workers found queued and
	// completed; they do not count against the server.
	Foreign int64 `json:"foreign"`
	// Errors are the first connection or protocol errors, and why the run
	// stopped early if it did.
	Errors []string `json:"errors,omitempty"`
	// GeneratorCPU is the load generator's CPU time per job, set by a
	// caller that can measure it (gearproxy bench: its process's CPU
	// time). Run leaves it zero: it shares its process with its caller.
	GeneratorCPU Micros `json:"generator_cpu_per_job_us,omitempty"`
}

// Phase is one timed part of a bg run.
type Phase struct {
	Jobs       int64   `json:"jobs"`
	Elapsed    Seconds `json:"elapsed_s"`
	JobsPerSec float64 `json:"jobs_per_s"`
}

// Latency summarizes the latency histogram.
type Latency struct {
	P50 Micros `json:"p50_us"`
	P99 Micros `json:"p99_us"`
	Max Micros `json:"max_us"`
}

// Seconds is a duration that JSON-encodes as seconds.
type Seconds time.Duration

func (s Seconds) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, "%.6f", time.Duration(s).Seconds()), nil
}

// UnmarshalJSON reads what MarshalJSON writes, so that a program can read
// `gearproxy bench -json` back.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*s = Seconds(f * float64(time.Second))
	return nil
}

// Micros is a duration that JSON-encodes as microseconds.
type Micros time.Duration

func (m Micros) MarshalJSON() ([]byte, error) {
	return fmt.Appendf(nil, "%.1f", float64(m)/1e3), nil
}

// UnmarshalJSON reads what MarshalJSON writes.
func (m *Micros) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*m = Micros(f * float64(time.Microsecond))
	return nil
}

// OK reports whether every job checked out: nothing lost, duplicated,
// mismatched or failed, and no connection error.
func (r *Result) OK() bool {
	return r.Lost == 0 && r.Duplicated == 0 && r.Mismatched == 0 && r.Failed == 0 && len(r.Errors) == 0
}

func rate(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// WriteText prints the result for a person.
func (r *Result) WriteText(w io.Writer) {
	fmt.Fprintf(w, "mode %s  servers %s  clients %d x %d in flight  workers %d  payload %d B  unique %s  priority %s\n",
		r.Mode, strings.Join(r.Servers, ","), r.Clients, r.Pipeline, r.Workers, r.Payload, r.Unique, r.Priority)
	fmt.Fprintf(w, "jobs %d in %s: %.0f jobs/s\n", r.Jobs, round(time.Duration(r.Elapsed)), r.JobsPerSec)
	if r.Submit != nil {
		fmt.Fprintf(w, "  submit %d in %s: %.0f jobs/s\n", r.Submit.Jobs, round(time.Duration(r.Submit.Elapsed)), r.Submit.JobsPerSec)
	}
	if r.Drain != nil {
		fmt.Fprintf(w, "  drain  %d in %s: %.0f jobs/s\n", r.Drain.Jobs, round(time.Duration(r.Drain.Elapsed)), r.Drain.JobsPerSec)
	}
	fmt.Fprintf(w, "latency p50 %s  p99 %s  max %s\n",
		round(time.Duration(r.Latency.P50)), round(time.Duration(r.Latency.P99)), round(time.Duration(r.Latency.Max)))
	if r.GeneratorCPU > 0 {
		fmt.Fprintf(w, "generator CPU %s per job\n", round(time.Duration(r.GeneratorCPU)))
	}
	fmt.Fprintf(w, "lost %d  duplicated %d  mismatched %d  failed %d", r.Lost, r.Duplicated, r.Mismatched, r.Failed)
	if r.Foreign > 0 {
		fmt.Fprintf(w, "  (foreign jobs from other runs completed: %d)", r.Foreign)
	}
	fmt.Fprintln(w)
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
	if r.OK() {
		fmt.Fprintln(w, "OK")
	} else {
		fmt.Fprintln(w, "FAILED")
	}
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(100 * time.Nanosecond)
}
