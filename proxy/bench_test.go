package proxy

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/backend"
	"github.com/gearproxy/gearproxy/bench"
	"github.com/gearproxy/gearproxy/protocol"
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

// BenchmarkForegroundGearmand is BenchmarkForeground over two gearmand
// processes (skipped without /usr/sbin/gearmand).
func BenchmarkForegroundGearmand(b *testing.B) {
	var backends []Backend
	for i := range 2 {
		addr := startGearmand(b)
		backends = append(backends, Backend{Name: fmt.Sprintf("gm%d", i+1), Dial: backend.TCPDialer(addr)})
	}
	opts := Options{Backends: backends}
	if os.Getenv("PROXY_DEBUG") != "" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
	}
	srv := startProxy(b, opts, 2)
	addr := listen(b, srv, "local")
	b.ResetTimer()
	if _, err := bench.Run(context.Background(), bench.Config{Servers: []string{addr}, Jobs: b.N, Timeout: 30 * time.Second}); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

func startGearmand(b *testing.B) string {
	b.Helper()
	if _, err := os.Stat("/usr/sbin/gearmand"); err != nil {
		b.Skip("no gearmand")
	}
	for range 5 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		host, port, _ := net.SplitHostPort(addr)
		cmd := exec.Command("/usr/sbin/gearmand", "--listen="+host, "--port="+port, "-t", "1", "--log-file=/dev/null")
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		for range 100 {
			if c, err := net.Dial("tcp", addr); err == nil {
				c.Close()
				return addr
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	b.Fatal("gearmand did not start")
	return ""
}

// BenchmarkIdleWorkerHeap reports the heap an idle worker session costs
// over two bundled backends (CAN_DO, then PRE_SLEEP), measured once the
// sessions are quiet and after two garbage collections, so that pools
// have let go:
//
//	go test -run '^$' -bench IdleWorkerHeap ./proxy
func BenchmarkIdleWorkerHeap(b *testing.B) {
	srv, _, _ := startBundled(b, 2, nil)
	addr := listen(b, srv, "local")
	const workers = 500
	for range b.N {
		runtime.GC()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		conns := make([]net.Conn, 0, workers)
		for i := range workers {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
			req := protocol.AppendPacket(nil, protocol.Req, protocol.CanDo, []byte(fmt.Sprintf("idle.f%d", i%10)))
			req = protocol.AppendPacket(req, protocol.Req, protocol.EchoReq, []byte("sync"))
			req = protocol.AppendPacket(req, protocol.Req, protocol.PreSleep)
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
		}
		// Every session has registered once its echo is back; after
		// shrinkAfter of quiet it has given its read buffer back.
		for _, c := range conns {
			r := protocol.NewReader(c, protocol.ReaderOptions{Expect: protocol.Res, BufferSize: protocol.MinBufferSize})
			var p protocol.Packet
			for p.Type != protocol.EchoRes {
				if err := r.Read(&p); err != nil {
					b.Fatal(err)
				}
			}
		}
		time.Sleep(2 * shrinkAfter)
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapInuse-before.HeapInuse)/workers, "heap-B/worker")
		for _, c := range conns {
			c.Close()
		}
	}
}
