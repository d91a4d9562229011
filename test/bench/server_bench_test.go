package main

import (
	"context"
	"net"
	"testing"

	"github.com/gearproxy/gearproxy/bench"
	"github.com/gearproxy/gearproxy/jobserver"
)

// These benchmarks run the bundled server in this process and drive it with
// the bench library, so one CPU profile shows the server's hot paths:
//
//	go test -run X -bench Bundled -benchtime 200000x -cpuprofile cpu.out ./test/bench
//	go tool pprof -top -focus jobserver cpu.out
//
// The profile holds the generator too (package bench); look at jobserver
// and protocol frames under it. Compare servers with `go run ./test/bench`,
// not with these numbers.

func benchmarkBundled(b *testing.B, cfg bench.Config) {
	srv, err := jobserver.New(jobserver.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	b.Cleanup(func() {
		srv.Close()
		<-served
	})
	cfg.Servers = []string{ln.Addr().String()}
	cfg.Jobs = max(b.N, 8)
	b.ReportAllocs()
	b.ResetTimer()
	res, err := bench.Run(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if !res.OK() {
		b.Fatalf("run failed: %+v", res)
	}
	b.ReportMetric(res.JobsPerSec, "jobs/s")
}

func BenchmarkBundledForeground(b *testing.B) {
	benchmarkBundled(b, bench.Config{Mode: bench.Foreground, Clients: 8, Pipeline: 8, Workers: 4, Payload: 100})
}

func BenchmarkBundledBackground(b *testing.B) {
	benchmarkBundled(b, bench.Config{Mode: bench.Background, Clients: 4, Pipeline: 32, Workers: 4, Payload: 100})
}

// BenchmarkBundledQueue only submits: the cost of queueing a background job.
func BenchmarkBundledQueue(b *testing.B) {
	benchmarkBundled(b, bench.Config{Mode: bench.Background, Clients: 8, Pipeline: 32, Workers: -1, Payload: 100})
}
