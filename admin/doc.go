// Package admin is gearproxy's admin HTTP listener: Prometheus metrics on
// /metrics, liveness on /healthz, readiness on /readyz (at least one
// backend healthy) and a self-refreshing HTML status page on /: backends
// and their health, functions with queued and running jobs and workers,
// and connected users.
//
// The proxy reports events through Metrics (jobs, connections,
// authentication failures, denials) and its state through a Source that
// the page, /readyz and the gauges read at request time. The package
// knows nothing of the proxy's types, so it is tested on its own and the
// proxy wires it in with a few lines.
//
// The listener binds loopback by default: its page names every function
// and user. Elsewhere, give it TLS and basic authentication against the
// user store.
package admin
