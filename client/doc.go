// Package client is a Go Gearman client and worker library that speaks TLS
// and the SASL extension of gearproxy (protocol/SPEC.md),
// and plain Gearman to any gearmand.
//
// A Client keeps one connection, opened on first use and reopened with
// exponential backoff after it breaks. Submit pipelines any number of jobs
// on it: gearmand answers a connection's requests strictly in order, so
// the Client pairs each JOB_CREATED, ERROR, STATUS_RES or ECHO_RES with the
// oldest request still waiting, and routes WORK_* packets to tasks by job
// handle. Each Task reports through Handlers (callbacks and an optional
// event channel), its Created and Done channels, and Wait. The Client asks
// for the "exceptions" option on every connection, so WORK_EXCEPTION
// arrives as such instead of gearmand's malformed WORK_FAIL.
//
// A Worker registers functions (CAN_DO, or CAN_DO_TIMEOUT with a timeout)
// and runs a GRAB_JOB_UNIQ / PRE_SLEEP loop on Config.Concurrency
// connections. A handler's job can send WORK_DATA, WORK_WARNING and
// WORK_STATUS; its return value becomes WORK_COMPLETE, WORK_EXCEPTION (a
// *JobException) or WORK_FAIL. A panicking handler fails its job, not the
// process.
//
// Authentication runs right after the TLS handshake when Config.Credentials
// is set: PLAIN (RFC 4616, refused without TLS unless InsecurePlain),
// SCRAM-SHA-256 (RFC 5802/7677, which also verifies the server),
// SCRAM-SHA-256-PLUS with tls-exporter channel binding (RFC 9266), and
// EXTERNAL (RFC 4422 appendix A, the TLS client certificate). Authenticate
// runs the same exchange on a bare connection for relays.
package client
