package test

import (
	"fmt"
	"strings"
	"testing"
)

// TestProxyDiff runs the differential table through gearproxy in front of
// (a) three bundled backends and (b) two real gearmand processes, next to
// a direct gearmand whose transcripts are the reference.
func TestProxyDiff(t *testing.T) {
	runDifferential(t, gearmandTarget(t, ServerOptions{}), proxyBundledTarget(t, ServerOptions{}), proxyGearmandTarget(t, ServerOptions{}))
}

// proxyDifferences are the scenarios a sharded pool cannot answer like a
// single server, by design.
var proxyDifferences = map[string]string{
	// maxqueue is set on every backend and counts that backend's jobs.
	"raw_maxqueue":              "maxqueue counts per backend",
	"raw_maxqueue_per_priority": "maxqueue counts per backend",
	// Results of different jobs travel through different backends: each
	// job's packets keep their order, but not the jobs among themselves.
	"php_tasks_every_callback": "order of different jobs' results across backends",
	"perl_taskset_callbacks":   "order of different jobs' results across backends",
	// Jobs without a unique go to the least loaded backend, and the
	// load comes from every scenario sharing the pool; a worker's jobs
	// requeued after it disconnects keep each backend's order only.
	"raw_worker_disconnect_two_jobs":     "requeue order across backends",
	"raw_abilities_change_while_running": "requeue order across backends",
	// Epoch jobs without a unique spread by load over the backends, and
	// each backend releases its own due jobs: their grab order across
	// backends varies with the other scenarios' load.
	"raw_epoch_odd_values": "order of jobs without a unique across backends",
	// A foreground job stays attached to the proxy's shared link until it
	// ends, so the backend runs it even when all its clients left (their
	// results are dropped); gearmand discards it at grab.
	"raw_fg_client_gone_while_queued": "a foreground job outlives its clients on a shared link",
	// GET_STATUS_UNIQUE names no function; gearmand answers for its
	// newest job with that unique. With the unique in three functions on
	// different backends, each backend answers for its own and nothing
	// in the answers says which job is the newest.
	"raw_get_status_unique_three_functions": "newest job with a unique across backends",
}

func proxySkip(extra map[string]string) func(string) string {
	return func(scenario string) string {
		if r := proxyDifferences[scenario]; r != "" {
			return "deliberate difference of a sharded pool: " + r
		}
		return extra[scenario]
	}
}

// proxyBundledTarget has no Fresh: the bundled backends' job retries are
// not configurable yet, so those scenarios skip.
func proxyBundledTarget(t testing.TB, _ ServerOptions) Target {
	s := startProxyRun(t, bundledBackends(3), "")
	return Target{Name: "proxy-bundled", Addr: s.Addr, Flavor: FlavorGearproxy, Pid: s.Pid, Skip: proxySkip(nil)}
}

func proxyGearmandTarget(t testing.TB, o ServerOptions) Target {
	var bs []proxyBackend
	for i := range 2 {
		var extra []string
		if o.JobRetries > 0 {
			extra = append(extra, fmt.Sprintf("--job-retries=%d", o.JobRetries))
		}
		g := startGearmand(t, extra...)
		bs = append(bs, proxyBackend{Name: fmt.Sprintf("gm%d", i+1), Addr: g.Addr})
	}
	s := startProxyRun(t, bs, "")
	// The bundled server's own deliberate differences are answered by
	// the gearmand backends the gearmand way; the proxy's own (clean
	// WORK_FAIL, unique and framing limits) still apply.
	backendOwn := proxySkip(map[string]string{
		"raw_cancel_job":                         "gearmand answers OK to a second cancel and keeps the cancelled job known",
		"raw_can_do_timeout_two_jobs_one_worker": "gearmand keeps one CAN_DO_TIMEOUT timer per connection",
		"raw_epoch_wakes_worker":                 "gearmand sends no NOOP when an epoch job falls due",
		"raw_drop_function_queued":               "gearmand drops a function with queued jobs; the bundled server refuses",
		"admin_drop_function_queued":             "gearmand drops a function with queued jobs; the bundled server refuses",
	})
	skip := func(scenario string) string {
		if strings.HasPrefix(scenario, "raw_submit_job_sched") {
			return "gearmand 1.1.20 never implemented SUBMIT_JOB_SCHED"
		}
		return backendOwn(scenario)
	}
	return Target{Name: "proxy-gearmand", Addr: s.Addr, Flavor: FlavorGearproxy, Pid: s.Pid, Fresh: proxyGearmandTarget, Skip: skip}
}
