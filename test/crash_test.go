package test

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// TestCrashKeepsAcknowledgedJobs is issue 3's crash test: 8 connections
// submit background jobs while 4 workers run, the server is SIGKILLed at a
// random moment, restarted on the same directory and drained. Every job
// whose JOB_CREATED reached a client must run at least once. The same
// rounds run against gearmand -q libsqlite3 and both are reported side by
// side; only gearproxy is held to it.
//
// GEARPROXY_CRASH_JOBS (default 50000), GEARMAND_CRASH_JOBS (default 2000:
// its sqlite queue takes about 2 ms per job), GEARPROXY_CRASH_ROUNDS
// (kill points for -sync always, default 3; batch and none get one,
// gearmand two) and GEARPROXY_CRASH_SEED (default: the clock) tune it;
// CRASH_SERVERS picks servers from gearproxy (-sync always),
// gearproxy-batch, gearproxy-none and gearmand-sqlite.
func TestCrashKeepsAcknowledgedJobs(t *testing.T) {
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("GEARPROXY_CRASH_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("GEARPROXY_CRASH_SEED=%d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	rounds := envInt("GEARPROXY_CRASH_ROUNDS", 3)

	type result struct {
		name   string
		jobs   int
		rounds []crashCounts
	}
	var results []*result
	servers := strings.Split(envOr("CRASH_SERVERS", "gearproxy,gearproxy-batch,gearproxy-none,gearmand-sqlite"), ",")
	run := func(kind durableServer, jobs, rounds int, drain time.Duration, strict bool) {
		if !slices.Contains(servers, kind.name) {
			return
		}
		r := &result{name: kind.name, jobs: jobs}
		results = append(results, r)
		t.Run(kind.name, func(t *testing.T) {
			for round := range rounds {
				c := crashRound(t, kind, jobs, rng, drain)
				r.rounds = append(r.rounds, c)
				if !strict {
					continue
				}
				if c.Lost > 0 || c.SameLifeDups > 0 || c.Errors > 0 {
					t.Errorf("round %d: %d acknowledged jobs lost, %d run twice by one server life, %d submit errors",
						round, c.Lost, c.SameLifeDups, c.Errors)
				}
			}
		})
	}
	run(gearproxyDurable(), envInt("GEARPROXY_CRASH_JOBS", 50000), rounds, 30*time.Second, true)
	// The other sync modes write every job to the log before JOB_CREATED
	// too: they differ only in what an operating-system crash loses, so a
	// process crash must lose nothing in them either.
	for _, mode := range []string{"batch", "none"} {
		kind := gearproxyDurable("-sync", mode)
		kind.name += "-" + mode
		run(kind, envInt("GEARPROXY_CRASH_JOBS", 50000), 1, 30*time.Second, true)
	}
	run(gearmandSqlite(), envInt("GEARMAND_CRASH_JOBS", 2000), min(rounds, 2), 30*time.Second, false)

	var b strings.Builder
	fmt.Fprintf(&b, "crash test, side by side:\n")
	fmt.Fprintf(&b, "  %-16s %8s %10s %12s %6s %8s %16s\n", "server", "jobs", "sent", "acknowledged", "lost", "re-run", "unacked-but-ran")
	for _, r := range results {
		for i, c := range r.rounds {
			fmt.Fprintf(&b, "  %-16s %8d %10d %12d %6d %8d %16d   (round %d)\n", r.name, r.jobs, c.Sent, c.Acked, c.Lost, c.Reruns, c.UnackedKept, i+1)
		}
	}
	t.Log(b.String())
}

func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

// TestRestartKeepsOrderAndCoalescing: jobs queued before a SIGKILL come
// back in priority order, FIFO within each priority, after jobs submitted
// since; and a unique submitted again after the restart joins the job
// that was stored, so it runs once.
func TestRestartKeepsOrderAndCoalescing(t *testing.T) {
	kind := gearproxyDurable()
	dir := t.TempDir()
	srv := kind.start(t, dir)
	c := dialRaw(t, srv.Addr)
	submit := func(c *RawConn, typ protocol.Type, fn, unique string) string {
		t.Helper()
		c.Send(typ, fn, unique, "data-"+unique)
		r := c.Recv()
		if r.Type != protocol.JobCreated {
			t.Fatalf("submit %s: got %s", unique, r)
		}
		return r.Args[0]
	}
	for _, j := range []struct {
		typ    protocol.Type
		unique string
	}{
		{protocol.SubmitJobLowBg, "low-1"}, {protocol.SubmitJobBg, "normal-1"},
		{protocol.SubmitJobHighBg, "high-1"}, {protocol.SubmitJobBg, "normal-2"},
		{protocol.SubmitJobLowBg, "low-2"}, {protocol.SubmitJobHighBg, "high-2"},
		{protocol.SubmitJobBg, "normal-3"},
	} {
		submit(c, j.typ, "order", j.unique)
	}
	first := submit(c, protocol.SubmitJobBg, "coalesce", "same")
	if again := submit(c, protocol.SubmitJobBg, "coalesce", "same"); again != first {
		t.Fatalf("before restart: second submit of unique \"same\" got %s, want %s", again, first)
	}
	srv.Kill()

	srv = kind.start(t, dir)
	c = dialRaw(t, srv.Addr)
	submit(c, protocol.SubmitJobBg, "order", "normal-4")
	if again := submit(c, protocol.SubmitJobBg, "coalesce", "same"); again != first {
		t.Errorf("after restart: submit of stored unique \"same\" got handle %s, want the stored job's %s", again, first)
	}
	got := drainUniques(t, srv.Addr, "order")
	want := []string{"high-1", "high-2", "normal-1", "normal-2", "normal-3", "normal-4", "low-1", "low-2"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("order after restart:\n got %v\nwant %v", got, want)
	}
	if got := drainUniques(t, srv.Addr, "coalesce"); strings.Join(got, " ") != "same" {
		t.Errorf("coalesced job ran as %v, want once", got)
	}
}

// drainUniques grabs every queued job of fn with one worker and returns
// their uniques in the order they were handed out.
func drainUniques(t *testing.T, addr, fn string) []string {
	t.Helper()
	w := dialRaw(t, addr)
	defer w.Close()
	w.Send(protocol.CanDo, fn)
	var got []string
	for {
		w.Send(protocol.GrabJobUniq)
		r := w.Recv()
		switch r.Type {
		case protocol.NoJob:
			return got
		case protocol.JobAssignUniq:
			got = append(got, r.Args[2])
			if want := "data-" + r.Args[2]; r.Args[3] != want {
				t.Errorf("job %s came back with data %q, want %q", r.Args[2], r.Args[3], want)
			}
			w.Send(protocol.WorkComplete, r.Args[0], "")
		default:
			t.Fatalf("grab: got %s", r)
		}
	}
}

// runServerToExit runs `gearproxy server` with args, expecting it to
// refuse to start, and returns its exit code and output.
func runServerToExit(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, gearproxyBinary(t), append([]string{"server", "-listen", "127.0.0.1:0"}, args...)...)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("gearproxy server %v still running after %s: it started over a store it cannot use\n%s", args, ioTimeout, out)
	}
	if err == nil {
		t.Fatalf("gearproxy server %v exited 0\n%s", args, out)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// TestUnusableStoreRefusesToStart: a damaged store file, or one that
// another server holds, stops `gearproxy server` with an error naming the
// file and the cause, and leaves the file as it was.
func TestUnusableStoreRefusesToStart(t *testing.T) {
	t.Run("corrupted", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "jobs.db")
		garbage := bytes.Repeat([]byte("not a bbolt file "), 1024)
		if err := os.WriteFile(path, garbage, 0o600); err != nil {
			t.Fatal(err)
		}
		code, out := runServerToExit(t, "-data", dir)
		if !strings.Contains(out, path) || !strings.Contains(out, "invalid database") {
			t.Errorf("exit %d, output %q: want it to name %s and say \"invalid database\"", code, out, path)
		}
		if after, _ := os.ReadFile(path); !bytes.Equal(after, garbage) {
			t.Error("the refused store file was changed")
		}
	})
	t.Run("locked", func(t *testing.T) {
		dir := t.TempDir()
		holder := gearproxyDurable().start(t, dir)
		code, out := runServerToExit(t, "-data", dir)
		want := fmt.Sprintf("locked by pid %d", holder.Pid)
		if !strings.Contains(out, want) || !strings.Contains(out, filepath.Join(dir, "jobs.db")) {
			t.Errorf("exit %d, output %q: want it to name the file and say %q", code, out, want)
		}
	})
}
