package admin

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Reasons a job failed, the reason label of gearproxy_jobs_failed_total.
const (
	FailWork        = "work_fail"    // the worker sent WORK_FAIL
	FailException   = "exception"    // the worker sent WORK_EXCEPTION
	FailBackendLost = "backend_lost" // the backend went away with the job
)

// Reasons an authentication failed, the reason label of
// gearproxy_auth_failures_total. The proxy maps its errors onto these so
// that the label keeps a handful of values.
const (
	AuthFailed          = "auth_failed"          // wrong password, unknown user, rejected certificate
	AuthRequired        = "auth_required"        // a packet other than SASL before authenticating
	AuthMechUnsupported = "mech_unsupported"     // a mechanism the listener does not offer
	AuthSequence        = "sequence"             // SASL packets out of order
	AuthTimeout         = "timeout"              // auth_timeout passed
	AuthTLS             = "tls_handshake"        // the TLS handshake failed
	AuthTooMany         = "too_many_connections" // the user's max_connections was reached
	AuthAdminHTTP       = "admin_basic_auth"     // bad basic-auth credentials on the admin listener
)

// Reasons a request was denied, the reason label of
// gearproxy_denials_total.
const (
	DenyACL        = "acl"         // no allow rule, or a deny rule, matched
	DenyMaxPayload = "max_payload" // the job's data exceeds the user's max_payload
)

// otherFunction is the label that functions past MetricsOptions.MaxFunctions
// share, so that a client inventing function names cannot grow the
// metrics without bound.
const otherFunction = "_other"

// MetricsOptions configure NewMetrics.
type MetricsOptions struct {
	// Version is exported as gearproxy_info{version="..."}.
	Version string
	// MaxFunctions caps how many function names get their own label
	// value; later ones are counted as "_other". Default 1000.
	MaxFunctions int
	// LatencyBuckets are the upper bounds, in seconds, of the job
	// latency histogram; default 1 ms to about 5 min.
	LatencyBuckets []float64
}

// Metrics are gearproxy's Prometheus metrics, on a registry of their own
// (never the global default one, so two proxies in one process each
// export their own). The proxy calls its methods as packets pass; a nil
// *Metrics accepts every call and does nothing, for a proxy without an
// admin listener.
//
// Labels: function is as the backends see it (namespaced); user is the
// submitting user on submissions and the worker's user on results, since
// each is counted where the proxy sees it for every job, foreground or
// background.
type Metrics struct {
	reg *prometheus.Registry

	submitted  *prometheus.CounterVec
	completed  *prometheus.CounterVec
	failed     *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	conns      *prometheus.GaugeVec
	connsTotal *prometheus.CounterVec
	authFails  *prometheus.CounterVec
	denials    *prometheus.CounterVec

	functions labelSet
}

// NewMetrics builds the metrics and their registry, with the Go runtime
// and process collectors.
func NewMetrics(opts MetricsOptions) *Metrics {
	if opts.MaxFunctions <= 0 {
		opts.MaxFunctions = 1000
	}
	if opts.LatencyBuckets == nil {
		opts.LatencyBuckets = prometheus.ExponentialBuckets(0.001, 4, 10) // 1 ms .. 262 s
	}
	jobLabels := []string{"function", "user", "backend"}
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		submitted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gearproxy_jobs_submitted_total",
			Help: "Jobs the backends accepted (JOB_CREATED), by function, submitting user and backend.",
		}, jobLabels),
		completed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gearproxy_jobs_completed_total",
			Help: "Jobs a worker completed (WORK_COMPLETE), by function, worker's user and backend.",
		}, jobLabels),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gearproxy_jobs_failed_total",
			Help: "Jobs that failed, by function, user, backend and reason (work_fail, exception, backend_lost).",
		}, append(jobLabels, "reason")),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gearproxy_job_latency_seconds",
			Help:    "Time from JOB_ASSIGN to the job's result (WORK_COMPLETE, WORK_FAIL or WORK_EXCEPTION), by function.",
			Buckets: opts.LatencyBuckets,
		}, []string{"function"}),
		conns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gearproxy_connections",
			Help: "Open client and worker connections, by listener.",
		}, []string{"listener"}),
		connsTotal: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gearproxy_connections_total",
			Help: "Connections accepted, by listener.",
		}, []string{"listener"}),
		authFails: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gearproxy_auth_failures_total",
			Help: "Failed authentications, by listener and reason. No user label: unknown user names would grow it without bound.",
		}, []string{"listener", "reason"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gearproxy_denials_total",
			Help: "Requests refused to an authenticated user, by user, verb (submit, work, admin) and reason.",
		}, []string{"user", "verb", "reason"}),
		functions: labelSet{max: opts.MaxFunctions},
	}
	info := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "gearproxy_info",
		Help:        "Always 1; the version label says which gearproxy runs.",
		ConstLabels: prometheus.Labels{"version": opts.Version},
	})
	info.Set(1)
	m.reg.MustRegister(m.submitted, m.completed, m.failed, m.latency, m.conns, m.connsTotal, m.authFails, m.denials, info,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry is where the metrics live, for the /metrics handler and for
// callers that add their own collectors.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// JobSubmitted counts a job a backend accepted: call it at JOB_CREATED (or
// at the JOB_CREATED of a coalesced submission: it counts submissions,
// not distinct jobs).
func (m *Metrics) JobSubmitted(function, user, backend string) {
	if m == nil {
		return
	}
	m.submitted.WithLabelValues(m.functions.label(function), user, backend).Inc()
}

// JobCompleted counts a WORK_COMPLETE a worker sent and observes d, the
// time since the worker's JOB_ASSIGN, in the latency histogram.
func (m *Metrics) JobCompleted(function, user, backend string, d time.Duration) {
	if m == nil {
		return
	}
	fn := m.functions.label(function)
	m.completed.WithLabelValues(fn, user, backend).Inc()
	m.latency.WithLabelValues(fn).Observe(d.Seconds())
}

// JobFailed counts a failed job: reason is FailWork or FailException with
// d since JOB_ASSIGN, or FailBackendLost with d < 0, which is not
// observed (no worker result ended it).
func (m *Metrics) JobFailed(function, user, backend, reason string, d time.Duration) {
	if m == nil {
		return
	}
	fn := m.functions.label(function)
	m.failed.WithLabelValues(fn, user, backend, reason).Inc()
	if d >= 0 {
		m.latency.WithLabelValues(fn).Observe(d.Seconds())
	}
}

// ConnectionOpened counts a connection accepted on listener; call
// ConnectionClosed when it ends, whatever the reason.
func (m *Metrics) ConnectionOpened(listener string) {
	if m == nil {
		return
	}
	m.conns.WithLabelValues(listener).Inc()
	m.connsTotal.WithLabelValues(listener).Inc()
}

// ConnectionClosed balances ConnectionOpened.
func (m *Metrics) ConnectionClosed(listener string) {
	if m == nil {
		return
	}
	m.conns.WithLabelValues(listener).Dec()
}

// AuthFailure counts a failed authentication; reason is one of the Auth*
// constants.
func (m *Metrics) AuthFailure(listener, reason string) {
	if m == nil {
		return
	}
	m.authFails.WithLabelValues(listener, reason).Inc()
}

// Denied counts a request refused to an authenticated user; verb is
// "submit", "work" or "admin" and reason one of the Deny* constants.
func (m *Metrics) Denied(user, verb, reason string) {
	if m == nil {
		return
	}
	m.denials.WithLabelValues(user, verb, reason).Inc()
}

// labelSet admits the first max distinct values and maps the rest to
// otherFunction.
type labelSet struct {
	max  int
	mu   sync.RWMutex
	seen map[string]struct{}
}

func (s *labelSet) label(v string) string {
	s.mu.RLock()
	_, ok := s.seen[v]
	n := len(s.seen)
	s.mu.RUnlock()
	if ok {
		return v
	}
	if n >= s.max {
		return otherFunction
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.seen[v]; ok {
		return v
	}
	if len(s.seen) >= s.max {
		return otherFunction
	}
	if s.seen == nil {
		s.seen = map[string]struct{}{}
	}
	s.seen[v] = struct{}{}
	return v
}

// snapshotCollector turns a Source's Snapshot into gauges at scrape time,
// so they are as fresh as the scrape and cost nothing between scrapes.
type snapshotCollector struct {
	src       Source
	timeout   time.Duration
	functions *labelSet
	onError   func(error)

	up, backendUp, backendRTT, queued, running, workers, userConns *prometheus.Desc
}

func newSnapshotCollector(src Source, m *Metrics, timeout time.Duration, onError func(error)) *snapshotCollector {
	return &snapshotCollector{
		src: src, timeout: timeout, functions: &m.functions, onError: onError,
		up: prometheus.NewDesc("gearproxy_status_up",
			"1 if the last status snapshot (backends, functions, users) succeeded.", nil, nil),
		backendUp: prometheus.NewDesc("gearproxy_backend_up",
			"1 if the backend is healthy.", []string{"backend", "address"}, nil),
		backendRTT: prometheus.NewDesc("gearproxy_backend_rtt_seconds",
			"Round-trip time of the backend's last health check.", []string{"backend"}, nil),
		queued: prometheus.NewDesc("gearproxy_function_queued",
			"Jobs waiting for a worker, over all backends.", []string{"function"}, nil),
		running: prometheus.NewDesc("gearproxy_function_running",
			"Jobs a worker is running, over all backends.", []string{"function"}, nil),
		workers: prometheus.NewDesc("gearproxy_function_workers",
			"Workers that can do the function.", []string{"function"}, nil),
		userConns: prometheus.NewDesc("gearproxy_user_connections",
			"Open connections by authenticated user.", []string{"user"}, nil),
	}
}

func (c *snapshotCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.up, c.backendUp, c.backendRTT, c.queued, c.running, c.workers, c.userConns} {
		ch <- d
	}
}

func (c *snapshotCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	st, err := c.src.Snapshot(ctx)
	if err != nil {
		// The rest of /metrics stays useful; status_up says what is
		// missing.
		c.onError(err)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	backends := map[string]bool{}
	for _, b := range st.Backends {
		if backends[b.Name] {
			continue // a Source bug must not fail the whole scrape
		}
		backends[b.Name] = true
		ch <- prometheus.MustNewConstMetric(c.backendUp, prometheus.GaugeValue, boolValue(b.Healthy), b.Name, b.Address)
		if b.Healthy {
			ch <- prometheus.MustNewConstMetric(c.backendRTT, prometheus.GaugeValue, b.RTT.Seconds(), b.Name)
		}
	}
	// Functions past the label cap are summed into one series (the
	// registry refuses two series with the same labels); so are rows a
	// Source repeats, though it should give one per function.
	type counts struct{ queued, running, workers float64 }
	byLabel := map[string]*counts{}
	var order []string
	for _, f := range st.Functions {
		l := c.functions.label(f.Name)
		n := byLabel[l]
		if n == nil {
			n = &counts{}
			byLabel[l] = n
			order = append(order, l)
		}
		n.queued += float64(f.Queued)
		n.running += float64(f.Running)
		n.workers += float64(f.Workers)
	}
	for _, l := range order {
		n := byLabel[l]
		ch <- prometheus.MustNewConstMetric(c.queued, prometheus.GaugeValue, n.queued, l)
		ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, n.running, l)
		ch <- prometheus.MustNewConstMetric(c.workers, prometheus.GaugeValue, n.workers, l)
	}
	users := map[string]bool{}
	for _, u := range st.Users {
		if users[u.Name] {
			continue // a Source bug must not fail the whole scrape
		}
		users[u.Name] = true
		ch <- prometheus.MustNewConstMetric(c.userConns, prometheus.GaugeValue, float64(u.Connections), u.Name)
	}
}

func boolValue(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
