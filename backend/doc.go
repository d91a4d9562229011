// Package backend is the proxy's pool of job servers: one Backend per
// configured server (bundled in process, or gearmand over TCP), with dialing,
// health checks, shared multiplexed client links and per-worker links.
package backend
