package main

import (
	"testing"

	"github.com/gearproxy/gearproxy/bench"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		in   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.in); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.in, got, c.want)
		}
	}
}

// TestSummarize checks the table's arithmetic: the ratio is the median of
// the per-round ratios (not the ratio of medians), and the verdict follows
// the direction of the metric.
func TestSummarize(t *testing.T) {
	run := func(rate float64, p99 bench.Micros) sample {
		return sample{res: &bench.Result{Jobs: 1, JobsPerSec: rate, Latency: bench.Latency{P99: p99}}}
	}
	w := &workload{name: "w", metrics: []metric{throughput(1.5), p99(1.0)}}
	w.samples[0] = []sample{run(100, 1000), run(100, 1000), run(200, 1000)}
	w.samples[1] = []sample{run(160, 900), run(120, 1200), run(300, 800)}
	c := &comparison{title: "t"}

	rate := c.summarize(w, w.metrics[0])
	if rate.Ratio != 1.5 || rate.Verdict != "ok" || rate.Base != 100 || rate.Cand != 160 {
		t.Errorf("throughput row: %+v", rate)
	}
	lat := c.summarize(w, w.metrics[1])
	if lat.Ratio != 0.9 || lat.Verdict != "ok" {
		t.Errorf("p99 row: %+v", lat)
	}
	w.samples[1][0] = run(140, 1100)
	if r := c.summarize(w, w.metrics[0]); r.Verdict != "MISS" {
		t.Errorf("1.4x passed a 1.5x target: %+v", r)
	}
	if r := c.summarize(w, w.metrics[1]); r.Verdict != "MISS" {
		t.Errorf("a worse p99 passed: %+v", r)
	}
}
