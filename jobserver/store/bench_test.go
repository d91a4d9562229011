package store

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

var benchModes = []SyncMode{SyncAlways, SyncBatch, SyncNone}

// benchJob is a typical small background job: a function, a UUID-sized
// unique and a 100-byte payload.
func benchJob(id uint64) *Job {
	return &Job{ID: id, Function: "resize_image", Unique: fmt.Sprintf("%036d", id), Data: make([]byte, 100)}
}

// BenchmarkAddParallel: 8 goroutines, each a connection that waits for
// every Add (a client that does not pipeline).
func BenchmarkAddParallel(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(mode.String(), func(b *testing.B) {
			s := openT(b, b.TempDir(), Options{Sync: mode})
			var next atomic.Uint64
			b.ResetTimer()
			runSubmitters(b, 8, func() {
				if err := s.Add(benchJob(next.Add(1))); err != nil {
					b.Error(err)
				}
			})
			b.StopTimer()
			reportCommits(b, s)
		})
	}
}

// BenchmarkAddAsyncParallel: 8 goroutines, each a pipelining connection
// with up to 256 jobs waiting for their commit, as a job server that uses
// AddAsync keeps them.
func BenchmarkAddAsyncParallel(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(mode.String(), func(b *testing.B) {
			s := openT(b, b.TempDir(), Options{Sync: mode})
			var next atomic.Uint64
			b.ResetTimer()
			var wg sync.WaitGroup
			runSubmittersWith(b, 8, func() func() {
				window := make(chan struct{}, benchWindow())
				return func() {
					window <- struct{}{}
					wg.Add(1)
					s.AddAsync(benchJob(next.Add(1)), func(err error) {
						if err != nil {
							b.Error(err)
						}
						<-window
						wg.Done()
					})
				}
			})
			wg.Wait()
			b.StopTimer()
			reportCommits(b, s)
		})
	}
}

func reportCommits(b *testing.B, s *Bolt) {
	st := s.Stats()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
	if st.Commits > 0 {
		b.ReportMetric(float64(st.Added)/float64(st.Commits), "jobs/commit")
		b.ReportMetric(float64(st.CommitTime.Microseconds())/float64(st.Commits), "µs/commit")
	}
}

func runSubmitters(b *testing.B, n int, fn func()) {
	runSubmittersWith(b, n, func() func() { return fn })
}

// runSubmittersWith splits b.N calls over n goroutines; mk makes each
// goroutine's own function.
func runSubmittersWith(b *testing.B, n int, mk func() func()) {
	var wg sync.WaitGroup
	for g := range n {
		count := b.N / n
		if g < b.N%n {
			count++
		}
		fn := mk()
		wg.Go(func() {
			for range count {
				fn()
			}
		})
	}
	wg.Wait()
}

// BenchmarkLoad1M measures recovery: Load of a store holding a million
// queued jobs. Building the store takes a while, so it runs only with
// GEARPROXY_BENCH_LOAD=1 (or a count: GEARPROXY_BENCH_LOAD=200000).
func BenchmarkLoad1M(b *testing.B) {
	n := loadBenchSize(b)
	dir := b.TempDir()
	s := openT(b, dir, Options{Sync: SyncNone})
	fill(b, s, n)
	if err := s.Close(); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		s, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		count := 0
		if err := s.Load(func(*Job) error { count++; return nil }); err != nil {
			b.Fatal(err)
		}
		if count != n {
			b.Fatalf("loaded %d, want %d", count, n)
		}
		_ = s.Close()
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "jobs/s")
}

// TestLoadRate prints the recovery rate under -v (same switch as
// BenchmarkLoad1M): Open plus Load, as a restarting server does it, once
// from a checkpointed store (a clean stop), after a crash with the
// default checkpoints, and after a crash that left every job in the log
// (the worst case, which default checkpoints never reach).
func TestLoadRate(t *testing.T) {
	n := loadBenchSize(t)
	t.Run("checkpointed", func(t *testing.T) {
		dir := t.TempDir()
		s := openT(t, dir, Options{Sync: SyncNone})
		fill(t, s, n)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		measureRecovery(t, dir, n)
	})
	t.Run("after SIGKILL", func(t *testing.T) {
		// Default checkpoints: what a crash under load leaves, bbolt
		// plus up to about two CheckpointBytes of log. A child process
		// fills the store and is killed the moment its last Add returns.
		dir := t.TempDir()
		cmd := exec.Command(os.Args[0], "-test.run=^TestFillHelperProcess$")
		cmd.Env = append(os.Environ(), fillHelperEnv+"="+dir, fmt.Sprintf("GEARPROXY_BENCH_LOAD=%d", n))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		cmd.Process.Kill()
		cmd.Wait()
		if line != "filled\n" {
			t.Fatalf("helper said %q, %v", line, err)
		}
		measureRecovery(t, dir, n)
	})
	t.Run("all in the log", func(t *testing.T) {
		s := openT(t, t.TempDir(), Options{Sync: SyncNone, CheckpointBytes: 1 << 40, CheckpointInterval: time.Hour})
		fill(t, s, n)
		measureRecovery(t, crashCopy(t, s), n)
	})
}

// fillHelperEnv makes the test binary, run as a child, fill a store in the
// directory it names and say "filled" (then wait to be killed).
const fillHelperEnv = "GEARPROXY_STORE_FILL_HELPER_DIR"

func TestFillHelperProcess(t *testing.T) {
	dir := os.Getenv(fillHelperEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestLoadRate")
	}
	s, err := Open(dir, Options{Sync: SyncNone})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(1)
	}
	fill(t, s, loadBenchSize(t))
	fmt.Println("filled")
	select {}
}

func measureRecovery(t *testing.T, dir string, n int) {
	var size int64
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if fi, err := e.Info(); err == nil {
			size += fi.Size()
		}
	}
	start := time.Now()
	s := openT(t, dir, Options{})
	opened := time.Since(start)
	count := 0
	if err := s.Load(func(*Job) error { count++; return nil }); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	if count != n {
		t.Fatalf("loaded %d, want %d", count, n)
	}
	t.Logf("recovered %d jobs (%d MB of files) in %v (Open %v): %.0f jobs/s", n, size>>20, el, opened, float64(n)/el.Seconds())
}

func loadBenchSize(t testing.TB) int {
	v := os.Getenv("GEARPROXY_BENCH_LOAD")
	if v == "" {
		t.Skip("set GEARPROXY_BENCH_LOAD=1 (one million jobs) or to a job count")
	}
	n := 1_000_000
	if _, err := fmt.Sscan(v, &n); err != nil || n <= 1 {
		n = 1_000_000
	}
	return n
}

// fill adds n jobs in large commits.
func fill(t testing.TB, s *Bolt, n int) {
	var wg sync.WaitGroup
	wg.Add(n)
	for id := 1; id <= n; id++ {
		s.AddAsync(benchJob(uint64(id)), func(err error) {
			if err != nil {
				t.Error(err)
			}
			wg.Done()
		})
	}
	wg.Wait()
}

// benchWindow is how many jobs each AddAsync submitter keeps waiting:
// GEARPROXY_BENCH_WINDOW, default 256.
func benchWindow() int {
	n := 256
	if v := os.Getenv("GEARPROXY_BENCH_WINDOW"); v != "" {
		fmt.Sscan(v, &n)
	}
	return max(n, 1)
}
