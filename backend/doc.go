// Package backend is the proxy's pool of job servers: one Backend per
// configured server (bundled in process, or gearmand over TCP), with dialing,
// health checks, shared multiplexed client links and per-worker links.
//
// A Backend keeps a few shared client links open while its server is
// reachable. Sessions multiplex their client requests over them; since
// gearmand answers each connection's requests strictly in order (JOB_CREATED,
// ERROR, STATUS_RES, STATUS_RES_UNIQUE, OPTION_RES, ECHO_RES), a Link pairs
// every reply with its request by order alone: the reply callback is queued
// under the same lock as the request's bytes. WORK_* packets, which answer no
// request, go to Options.OnWork. Each shared link asks for the exceptions
// option once, so WORK_EXCEPTION always reaches the proxy, which decides per
// session what its client sees.
//
// Health: an ECHO_REQ every HealthInterval must come back within
// HealthTimeout; a link that breaks (a killed gearmand resets it at once) or
// a check that times out takes the backend down: every link is closed, every
// owed reply is answered with nil, OnState(false) runs, and reconnect attempts
// follow with exponential backoff up to MaxBackoff. Worker links (one per
// worker session, OpenWorker) belong to the generation they were opened in
// and close with it.
//
// Admin commands use a short-lived connection of their own, since a text
// reply cannot be framed on a binary link.
//
// A bundled job server is reached over DirectDialer: a link's writes are
// handled by the job server in the writing goroutine (jobserver's
// ServeDirect), and its replies come back over a buffered in-memory Pipe
// whose writes are whole, so that it only ever holds whole packets. The
// link's goroutine dispatches them when woken; a session's reader that
// has just sent requests takes them itself first (Link.Pump), holding no
// lock, so that its replies leave with the rest of its burst. Requests
// thus cost no goroutine hand-off, while the job server, which holds its
// own lock while it sends, never calls into the proxy. PipeDialer serves
// each connection as a socket instead (ServeConn over a Pipe).
package backend
