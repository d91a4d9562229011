package client_test

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/client"
)

// TestNoGoroutineLeak: after Close and after Run returns, every goroutine
// the client and worker started has ended.
func TestNoGoroutineLeak(t *testing.T) {
	addr := gearmand(t)
	before := runtime.NumGoroutine()
	f := fn(t, "f")
	w := newWorker(t, client.Config{Addr: addr, Concurrency: 3}, map[string]client.JobHandler{
		f: func(_ context.Context, j *client.WorkerJob) ([]byte, error) { return j.Data, nil },
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	for i := 0; i < 3; i++ {
		c, err := client.Dial(timeout(t), client.Config{Addr: addr})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Do(timeout(t), client.Job{Function: f, Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		task, _ := c.Submit(timeout(t), client.Job{Function: fn(t, "nobody")}, nil)
		c.Close()
		<-task.Done()
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines, %d before:\n%s", n, before, buf[:runtime.Stack(buf, true)])
	}
}
