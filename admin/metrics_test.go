package admin

import (
	"bufio"
	"errors"
	"strings"
	"testing"
	"time"
)

// scrape returns /metrics as a set of "name{labels} value" lines.
func scrape(t *testing.T, s *Server) map[string]bool {
	t.Helper()
	code, _, body := get(t, s.Handler(), "GET", "/metrics", nil)
	if code != 200 {
		t.Fatalf("/metrics = %d\n%s", code, body)
	}
	lines := map[string]bool{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if l := sc.Text(); l != "" && !strings.HasPrefix(l, "#") {
			lines[l] = true
		}
	}
	return lines
}

func expectLines(t *testing.T, got map[string]bool, want ...string) {
	t.Helper()
	for _, w := range want {
		if !got[w] {
			t.Errorf("/metrics lacks %s", w)
		}
	}
}

// After a known sequence of calls every counter is exact, and the gauges
// are the Source's numbers.
func TestMetricsCounts(t *testing.T) {
	m := NewMetrics(MetricsOptions{Version: "1.2.3"})
	s := newTestServer(t, &fakeSource{st: twoBackends()}, func(o *Options) { o.Metrics = m })

	for range 3 {
		m.JobSubmitted("resize_image", "web", "gearmand-east")
	}
	m.JobSubmitted("resize_image", "batch", "bundled-west")
	m.JobSubmitted("send_email", "web", "gearmand-east")
	m.JobCompleted("resize_image", "worker", "gearmand-east", 3*time.Millisecond)
	m.JobCompleted("resize_image", "worker", "gearmand-east", 3*time.Millisecond)
	m.JobFailed("resize_image", "worker", "gearmand-east", FailException, 2*time.Second)
	m.JobFailed("send_email", "worker", "gearmand-east", FailWork, 10*time.Millisecond)
	m.JobFailed("resize_image", "batch", "bundled-west", FailBackendLost, -1)
	for range 3 {
		m.ConnectionOpened("tls")
	}
	m.ConnectionClosed("tls")
	m.ConnectionOpened("local")
	m.AuthFailure("tls", AuthFailed)
	m.AuthFailure("tls", AuthFailed)
	m.AuthFailure("tls", AuthTimeout)
	m.Denied("batch", "submit", DenyACL)
	m.Denied("batch", "admin", DenyACL)
	m.Denied("web", "submit", DenyMaxPayload)

	expectLines(t, scrape(t, s),
		`gearproxy_info{version="1.2.3"} 1`,
		`gearproxy_jobs_submitted_total{backend="gearmand-east",function="resize_image",user="web"} 3`,
		`gearproxy_jobs_submitted_total{backend="bundled-west",function="resize_image",user="batch"} 1`,
		`gearproxy_jobs_submitted_total{backend="gearmand-east",function="send_email",user="web"} 1`,
		`gearproxy_jobs_completed_total{backend="gearmand-east",function="resize_image",user="worker"} 2`,
		`gearproxy_jobs_failed_total{backend="gearmand-east",function="resize_image",reason="exception",user="worker"} 1`,
		`gearproxy_jobs_failed_total{backend="gearmand-east",function="send_email",reason="work_fail",user="worker"} 1`,
		`gearproxy_jobs_failed_total{backend="bundled-west",function="resize_image",reason="backend_lost",user="batch"} 1`,
		// Latency: two 3 ms completions and a 2 s exception; the lost
		// job is not observed.
		`gearproxy_job_latency_seconds_bucket{function="resize_image",le="0.001"} 0`,
		`gearproxy_job_latency_seconds_bucket{function="resize_image",le="0.004"} 2`,
		`gearproxy_job_latency_seconds_bucket{function="resize_image",le="1.024"} 2`,
		`gearproxy_job_latency_seconds_bucket{function="resize_image",le="4.096"} 3`,
		`gearproxy_job_latency_seconds_bucket{function="resize_image",le="+Inf"} 3`,
		`gearproxy_job_latency_seconds_count{function="resize_image"} 3`,
		`gearproxy_job_latency_seconds_sum{function="resize_image"} 2.006`,
		`gearproxy_job_latency_seconds_count{function="send_email"} 1`,
		`gearproxy_connections{listener="tls"} 2`,
		`gearproxy_connections_total{listener="tls"} 3`,
		`gearproxy_connections{listener="local"} 1`,
		`gearproxy_auth_failures_total{listener="tls",reason="auth_failed"} 2`,
		`gearproxy_auth_failures_total{listener="tls",reason="timeout"} 1`,
		`gearproxy_denials_total{reason="acl",user="batch",verb="submit"} 1`,
		`gearproxy_denials_total{reason="acl",user="batch",verb="admin"} 1`,
		`gearproxy_denials_total{reason="max_payload",user="web",verb="submit"} 1`,
		// From the Source.
		`gearproxy_status_up 1`,
		`gearproxy_backend_up{address="10.0.0.1:4730",backend="gearmand-east"} 1`,
		`gearproxy_backend_up{address="in-process",backend="bundled-west"} 0`,
		`gearproxy_backend_rtt_seconds{backend="gearmand-east"} 0.0015`,
		`gearproxy_function_queued{function="resize_image"} 7`,
		`gearproxy_function_running{function="resize_image"} 2`,
		`gearproxy_function_workers{function="resize_image"} 3`,
		`gearproxy_function_queued{function="send_email"} 0`,
		`gearproxy_function_workers{function="send_email"} 5`,
		`gearproxy_user_connections{user="web"} 4`,
		`gearproxy_user_connections{user="batch"} 1`,
	)
	// The Go runtime and the process are there too.
	var runtime, process bool
	for l := range scrape(t, s) {
		runtime = runtime || strings.HasPrefix(l, "go_goroutines ")
		process = process || strings.HasPrefix(l, "process_open_fds ")
	}
	if !runtime || !process {
		t.Errorf("go_goroutines %v, process_open_fds %v", runtime, process)
	}
	// A second scrape changes no counter.
	expectLines(t, scrape(t, s), `gearproxy_jobs_submitted_total{backend="gearmand-east",function="resize_image",user="web"} 3`)
}

// A failing Source costs the gauges, not the rest of /metrics.
func TestMetricsSourceError(t *testing.T) {
	m := NewMetrics(MetricsOptions{})
	s := newTestServer(t, &fakeSource{err: errors.New("closed")}, func(o *Options) { o.Metrics = m })
	m.JobSubmitted("f", "u", "b")
	got := scrape(t, s)
	expectLines(t, got, `gearproxy_status_up 0`, `gearproxy_jobs_submitted_total{backend="b",function="f",user="u"} 1`)
	for l := range got {
		if strings.HasPrefix(l, "gearproxy_backend_up") {
			t.Errorf("a gauge without a snapshot: %s", l)
		}
	}
}

// Function names beyond MaxFunctions share one label value, in counters
// and gauges alike.
func TestMetricsFunctionCap(t *testing.T) {
	m := NewMetrics(MetricsOptions{MaxFunctions: 2})
	st := Status{Functions: []FunctionStatus{{Name: "a", Queued: 1}, {Name: "b", Queued: 2}, {Name: "c", Queued: 3}, {Name: "d", Queued: 4}}}
	s := newTestServer(t, &fakeSource{st: st}, func(o *Options) { o.Metrics = m })
	for _, fn := range []string{"a", "b", "x", "y", "a"} {
		m.JobSubmitted(fn, "u", "b1")
	}
	got := scrape(t, s)
	expectLines(t, got,
		`gearproxy_jobs_submitted_total{backend="b1",function="a",user="u"} 2`,
		`gearproxy_jobs_submitted_total{backend="b1",function="b",user="u"} 1`,
		`gearproxy_jobs_submitted_total{backend="b1",function="_other",user="u"} 2`,
		`gearproxy_function_queued{function="a"} 1`,
		`gearproxy_function_queued{function="b"} 2`,
		`gearproxy_function_queued{function="_other"} 7`,
	)
	for l := range got {
		if strings.Contains(l, `function="x"`) || strings.Contains(l, `function="c"`) {
			t.Errorf("a function past the cap has its own series: %s", l)
		}
	}
}

// Two proxies in one process keep their own counts: no global registry.
func TestMetricsPerInstance(t *testing.T) {
	m1, m2 := NewMetrics(MetricsOptions{}), NewMetrics(MetricsOptions{})
	s1 := newTestServer(t, &fakeSource{}, func(o *Options) { o.Metrics = m1 })
	s2 := newTestServer(t, &fakeSource{}, func(o *Options) { o.Metrics = m2 })
	m1.ConnectionOpened("tls")
	m2.ConnectionOpened("tls")
	m2.ConnectionOpened("tls")
	expectLines(t, scrape(t, s1), `gearproxy_connections_total{listener="tls"} 1`)
	expectLines(t, scrape(t, s2), `gearproxy_connections_total{listener="tls"} 2`)
	if _, err := New(Options{Source: &fakeSource{}, Metrics: m1}); err == nil {
		t.Fatal("one Metrics registered by two admin servers")
	}
}

// A proxy without an admin listener passes a nil *Metrics.
func TestNilMetrics(t *testing.T) {
	var m *Metrics
	m.JobSubmitted("f", "u", "b")
	m.JobCompleted("f", "u", "b", time.Second)
	m.JobFailed("f", "u", "b", FailWork, time.Second)
	m.ConnectionOpened("l")
	m.ConnectionClosed("l")
	m.AuthFailure("l", AuthFailed)
	m.Denied("u", "submit", DenyACL)
}
