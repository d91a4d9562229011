package schedule

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/client"
)

const gearmandPath = "/usr/sbin/gearmand"

// startGearmand runs a real gearmand on a free 127.0.0.1 port until the
// test ends. Without one the test skips, except in CI.
func startGearmand(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(gearmandPath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("gearmand is required in CI: %v", err)
		}
		t.Skip("no gearmand:", err)
	}
	dir := t.TempDir()
	for attempt := 0; attempt < 3; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		cmd := exec.Command(gearmandPath, "--listen=127.0.0.1", "--port="+strconv.Itoa(port), "-t", "1",
			"--log-file="+filepath.Join(dir, "gearmand.log"), "--pid-file="+filepath.Join(dir, "gearmand.pid"),
			"--verbose=WARNING")
		// Pdeathsig: a killed test binary takes gearmand with it.
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if accepts(addr, exited) {
			t.Cleanup(func() { cmd.Process.Kill(); <-exited })
			return addr
		}
		cmd.Process.Kill()
		<-exited // lost the port to another process: try another
	}
	log, _ := os.ReadFile(filepath.Join(dir, "gearmand.log"))
	t.Fatalf("gearmand did not start:\n%s", log)
	return ""
}

// clientSubmitter submits through a Go client connection, as a program
// that runs schedules against a job server from outside the proxy would.
type clientSubmitter struct{ c *client.Client }

func (s clientSubmitter) SubmitBackground(ctx context.Context, job Job) error {
	prio := map[Priority]client.Priority{Normal: client.Normal, High: client.High, Low: client.Low}[job.Priority]
	t, err := s.c.Submit(ctx, client.Job{Function: job.Function, Unique: job.Unique, Data: job.Data,
		Priority: prio, Background: true}, nil)
	if err != nil {
		return err
	}
	_, err = t.Wait(ctx) // JOB_CREATED, or the ERROR that refused the job
	return err
}

// accepts waits until addr accepts a connection or the server exits.
func accepts(addr string, exited <-chan struct{}) bool {
	for range 500 {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// Two gearproxy instances with the same schedule, firing every second,
// submit each firing to one gearmand; its worker gets exactly one job per
// firing. The test moves a fake clock, so each firing happens when the
// test says: both instances have submitted (JOB_CREATED) before the
// worker may finish the job, which is when coalescing must hold.
func TestTwoSchedulersSubmitOnce(t *testing.T) {
	addr := startGearmand(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	const function = "schedule.tick"
	got := make(chan string, 100)
	release := make(chan struct{})
	w, err := client.NewWorker(client.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	w.Register(function, 0, func(ctx context.Context, j *client.WorkerJob) ([]byte, error) {
		got <- j.Unique
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, nil
	})
	workerDone := make(chan struct{})
	go func() { w.Run(ctx); close(workerDone) }()
	defer func() { cancel(); <-workerDone }()

	start := utc(t, "2026-11-28 01:21:30")
	clock := newFakeClock(start)
	submitted := make(chan Job, 100)
	sched := Schedule{Name: "tick", Cron: "* * * * * *", Function: function, Payload: []byte("tock")}
	for range 2 {
		c, err := client.Dial(ctx, client.Config{Addr: addr})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		sub := SubmitterFunc(func(ctx context.Context, j Job) error {
			err := clientSubmitter{c}.SubmitBackground(ctx, j)
			if err != nil {
				t.Errorf("submit %s: %v", j.Unique, err)
			}
			submitted <- j
			return err
		})
		s, err := New([]Schedule{sched}, sub, Options{Clock: clock, Location: time.UTC})
		if err != nil {
			t.Fatal(err)
		}
		run(t, s)
	}

	const firings = 5
	for i := 1; i <= firings; i++ {
		firing := start.Add(time.Duration(i) * time.Second)
		clock.waitFor(t, firing)
		clock.waitFor(t, firing)
		clock.set(firing)
		for range 2 {
			if j := <-submitted; !j.Time.Equal(firing) {
				t.Fatalf("submitted the firing of %s during %s", j.Time, firing)
			}
		}
		want := Unique("tick", firing)
		if u := receive(t, got); u != want {
			t.Fatalf("worker got %q, want %q", u, want)
		}
		release <- struct{}{}
	}

	// A duplicate of any firing would have been queued before this job,
	// and gearmand hands out jobs of one priority in order.
	c, err := client.Dial(ctx, client.Config{Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := (clientSubmitter{c}).SubmitBackground(ctx, Job{Function: function, Unique: "sentinel"}); err != nil {
		t.Fatal(err)
	}
	if u := receive(t, got); u != "sentinel" {
		t.Fatalf("after %d firings the worker got %q, want the sentinel: a firing ran twice", firings, u)
	}
	release <- struct{}{}
}

func receive(t *testing.T, c <-chan string) string {
	t.Helper()
	select {
	case s := <-c:
		return s
	case <-time.After(10 * time.Second): // a hang guard
		t.Fatal("the worker got no job")
	}
	return ""
}
