package admin_test

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"time"

	"github.com/gearproxy/gearproxy/admin"
)

// The proxy passes a Source for its state and calls Metrics as packets
// pass; the admin server serves both.
func Example() {
	src := admin.SourceFunc(func(ctx context.Context) (admin.Status, error) {
		return admin.Status{
			Backends:  []admin.BackendStatus{{Name: "shard1", Address: "127.0.0.1:4731", Healthy: true, RTT: time.Millisecond}},
			Functions: []admin.FunctionStatus{{Name: "reverse", Queued: 2, Running: 1, Workers: 1}},
		}, nil
	})
	m := admin.NewMetrics(admin.MetricsOptions{Version: "example"})
	srv, err := admin.New(admin.Options{Source: src, Metrics: m})
	if err != nil {
		panic(err)
	}
	m.JobSubmitted("reverse", "alice", "shard1")

	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	body, _ := io.ReadAll(rec.Body)
	fmt.Print(rec.Code, " ", string(body))
	// Output: 200 ready: 1 of 1 backends healthy
}
