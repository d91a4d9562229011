package jobserver

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/gearproxy/gearproxy/protocol"
)

// Benchmarks over loopback TCP with raw packet clients and workers, the
// shapes `gearproxy bench` measures against gearmand:
//
//	go test -run '^$' -bench . -benchtime 20000x ./jobserver/
//
// They report jobs/s; compare runs, not absolute numbers.

// benchWorker grabs jobs and completes them with their data until its
// connection closes. It keeps one job at a time, as real workers do.
func benchWorker(addr, fn string, ready *sync.WaitGroup) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		ready.Done()
		return
	}
	defer nc.Close()
	r := protocol.NewReader(nc, protocol.ReaderOptions{Expect: protocol.Res})
	w := protocol.NewWriter(nc)
	w.WritePacket(protocol.Req, protocol.CanDo, []byte(fn))
	w.WritePacket(protocol.Req, protocol.GrabJob)
	w.Flush()
	ready.Done()
	var p protocol.Packet
	for {
		if err := r.Read(&p); err != nil {
			return
		}
		switch p.Type {
		case protocol.JobAssign:
			w.WritePacket(protocol.Req, protocol.WorkComplete, p.Args[0], p.Args[2])
			w.WritePacket(protocol.Req, protocol.GrabJob)
		case protocol.NoJob:
			w.WritePacket(protocol.Req, protocol.PreSleep)
		case protocol.Noop:
			w.WritePacket(protocol.Req, protocol.GrabJob)
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

// benchClient submits n jobs keeping depth in flight, and waits for each
// job's result when fg.
func benchClient(b *testing.B, addr, fn string, typ protocol.Type, n, depth int, payload []byte) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		b.Error(err)
		return
	}
	defer nc.Close()
	r := protocol.NewReader(nc, protocol.ReaderOptions{Expect: protocol.Res})
	w := protocol.NewWriter(nc)
	fg := !typ.IsBackground()
	sent, done := 0, 0
	var p protocol.Packet
	for done < n {
		for sent < n && sent-done < depth {
			w.WritePacket(protocol.Req, typ, []byte(fn), nil, payload)
			sent++
		}
		if err := w.Flush(); err != nil {
			b.Error(err)
			return
		}
		if err := r.Read(&p); err != nil {
			b.Error(err)
			return
		}
		switch p.Type {
		case protocol.JobCreated:
			if !fg {
				done++
			}
		case protocol.WorkComplete, protocol.EchoRes:
			done++
		case protocol.Error:
			b.Errorf("error %q", p.Args)
			return
		}
	}
}

func runBench(b *testing.B, typ protocol.Type, clients, depth, workers int) {
	_, addr := testServer(b, Options{})
	fn := "bench"
	payload := []byte(strings.Repeat("p", 100))
	var ready sync.WaitGroup
	if !typ.IsBackground() {
		ready.Add(workers)
		for i := 0; i < workers; i++ {
			go benchWorker(addr, fn, &ready)
		}
		ready.Wait()
	}
	b.ResetTimer()
	var wg sync.WaitGroup
	per := (b.N + clients - 1) / clients
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			benchClient(b, addr, fn, typ, per, depth, payload)
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(per*clients)/b.Elapsed().Seconds(), "jobs/s")
}

// BenchmarkSubmitFg: 8 clients x 8 outstanding foreground jobs, 4 workers,
// 100-byte payloads.
func BenchmarkSubmitFg(b *testing.B) { runBench(b, protocol.SubmitJob, 8, 8, 4) }

// BenchmarkSubmitBg: 4 clients x 32 outstanding background submits (the
// queue grows; no workers).
func BenchmarkSubmitBg(b *testing.B) { runBench(b, protocol.SubmitJobBg, 4, 32, 0) }

// BenchmarkEcho: 8 clients x 8 outstanding ECHO_REQ, the floor of one
// request and its reply.
func BenchmarkEcho(b *testing.B) { runBench(b, protocol.EchoReq, 8, 8, 0) }

// TestMemoryPerQueuedJob queues background jobs with 100-byte payloads and
// 36-byte unique IDs and reports the heap and RSS they take per job. It
// is a measurement, run by hand:
//
//	GEARPROXY_MEMTEST=1000000 go test -run TestMemoryPerQueuedJob -v ./jobserver/
func TestMemoryPerQueuedJob(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("GEARPROXY_MEMTEST"))
	if n <= 0 {
		t.Skip("set GEARPROXY_MEMTEST=<jobs> to measure")
	}
	s, addr := testServer(t, Options{})
	runtime.GC()
	debug.FreeOSMemory()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	rss0 := rssBytes()

	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	go func() { // discard the JOB_CREATED replies
		io.Copy(io.Discard, bufio.NewReader(nc))
	}()
	bw := bufio.NewWriterSize(nc, 64<<10)
	payload := []byte(strings.Repeat("d", 100))
	var pkt []byte
	for i := 0; i < n; i++ {
		unique := fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
		pkt = protocol.AppendPacket(pkt[:0], protocol.Req, protocol.SubmitJobBg, []byte("mem"), []byte(unique), payload)
		bw.Write(pkt)
	}
	bw.Flush()
	for {
		s.mu.Lock()
		got := s.jobs.len()
		s.mu.Unlock()
		if got == n {
			break
		}
		sleepBriefly()
	}
	rssPeak := rssBytes()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapInuse-before.HeapInuse) / float64(n)
	t.Logf("%d jobs: heap in use %.0f bytes/job, RSS %.0f bytes/job (the test's own client included)",
		n, heap, float64(rssPeak-rss0)/float64(n))
}

func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
