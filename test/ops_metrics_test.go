package test

import (
	"fmt"
	"testing"

	"github.com/gearproxy/gearproxy/protocol"
)

// After a known workload the counters say exactly what happened: jobs
// submitted, completed and failed per function, connections per listener,
// and the gauges show the backends and the idle worker.
func TestOpsMetrics(t *testing.T) {
	t.Parallel()
	p := startOpsProxy(t, bundledBackends(2), "")
	listener := `listener="` + p.Work + `"`
	opsWorker(t, p.Work, 0, "ops.ok", "ops.bad")
	c := dialRaw(t, p.Work)
	const ok, bad = 10, 3
	for i := range ok {
		if typ, data := opsJob(t, c, "ops.ok", fmt.Sprintf("u%d", i), "x"); typ != protocol.WorkComplete || data != "x" {
			t.Fatalf("job %d: %v %q", i, typ, data)
		}
	}
	for i := range bad {
		if typ, _ := opsJob(t, c, "ops.bad", fmt.Sprintf("b%d", i), "fail"); typ != protocol.WorkFail {
			t.Fatalf("failing job %d: %v", i, typ)
		}
	}
	m := p.metrics(t)
	for _, w := range []struct {
		name  string
		label []string
		want  float64
	}{
		{"gearproxy_jobs_submitted_total", []string{`function="ops.ok"`, `user="local"`}, ok},
		{"gearproxy_jobs_submitted_total", []string{`function="ops.bad"`}, bad},
		{"gearproxy_jobs_completed_total", []string{`function="ops.ok"`, `user="local"`}, ok},
		{"gearproxy_jobs_completed_total", []string{`function="ops.bad"`}, 0},
		{"gearproxy_jobs_failed_total", []string{`function="ops.bad"`, `reason="work_fail"`}, bad},
		{"gearproxy_jobs_failed_total", []string{`function="ops.ok"`}, 0},
		{"gearproxy_job_latency_seconds_count", []string{`function="ops.ok"`}, ok},
		// The worker and the client.
		{"gearproxy_connections_total", []string{listener}, 2},
		{"gearproxy_connections", []string{listener}, 2},
		{"gearproxy_backend_up", nil, 2},
		{"gearproxy_function_workers", []string{`function="ops.ok"`}, 1},
		{"gearproxy_function_queued", []string{`function="ops.ok"`}, 0},
	} {
		if got := sum(m, w.name, w.label...); got != w.want {
			t.Errorf("%s%v = %v, want %v", w.name, w.label, got, w.want)
		}
	}
	// Both backends got some of the jobs: the backend label is real.
	for _, b := range []string{"shard1", "shard2"} {
		if sum(m, "gearproxy_jobs_submitted_total", `backend="`+b+`"`) == 0 {
			t.Errorf("no job submitted to %s", b)
		}
	}
	if t.Failed() {
		t.Logf("metrics: %v", m)
	}
}
