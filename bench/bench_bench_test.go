package bench

import (
	"context"
	"testing"
)

// The benchmarks drive a real gearmand with b.N jobs in one run, so ns/op
// is per job and allocs/op shows what the generator allocates per job
// (about zero: setup cost spread over b.N). They are for profiling the
// generator (-cpuprofile); compare servers with test/bench, not with these.

func benchmarkMode(b *testing.B, cfg Config) {
	addr := gearmandB(b)
	cfg.Servers = []string{addr}
	cfg.Jobs = max(b.N, 8)
	b.ReportAllocs()
	b.ResetTimer()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if !res.OK() {
		b.Fatalf("run failed: %+v", res)
	}
	b.ReportMetric(res.JobsPerSec, "jobs/s")
	b.ReportMetric(float64(res.Latency.P99)/1e3, "p99-µs")
}

func BenchmarkForeground(b *testing.B) {
	benchmarkMode(b, Config{Mode: Foreground, Clients: 8, Pipeline: 8, Workers: 4, Function: "bench_fg"})
}

func BenchmarkBackground(b *testing.B) {
	benchmarkMode(b, Config{Mode: Background, Clients: 4, Pipeline: 32, Workers: 4, Function: "bench_bg"})
}

func BenchmarkEcho(b *testing.B) {
	benchmarkMode(b, Config{Mode: Echo, Clients: 8, Pipeline: 8})
}
