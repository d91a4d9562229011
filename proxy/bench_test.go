package proxy

import (
	"context"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/bench"
)

// BenchmarkForeground drives the bench workload of issue 4 (8 clients x 8
// in flight, 4 workers, 100 B) through the proxy over two bundled
// backends, in process, for profiling:
//
//	go test -run '^$' -bench Foreground -cpuprofile cpu.out ./proxy
func BenchmarkForeground(b *testing.B) {
	srv, _, _ := startBundled(b, 2, nil)
	addr := listen(b, srv, "local")
	b.ResetTimer()
	res, err := bench.Run(context.Background(), bench.Config{Servers: []string{addr}, Jobs: b.N, Timeout: 30 * time.Second})
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	_ = res
}
