// Package proxy is gearproxy's front end: listeners, the per-connection
// session (handshake, authentication, serving), client-role and worker-role
// packet handling over the backend pool, and admin command aggregation.
//
// # Sessions
//
// A session has one reader goroutine, which reads and dispatches packets in
// order, and one writer (a protocol.Outbox) that sends whatever is queued in
// one write. On a plain socket the reader writes what it queued during a
// burst of requests itself before it reads again, and a worker's reader
// likewise sends its packets to its own backend links, saving a goroutine
// switch each; what backend link readers queue leaves through the writer
// goroutine, so no backend waits on a client's socket. A session that has been quiet for a while gives its 64 KiB read
// buffer back and waits for its next byte with a one-byte read, so idle
// connections cost a few KiB. Worker links are opened only when a session
// first acts as a worker.
//
// Every request that gearmand answers (SUBMIT_JOB*, GET_STATUS*, OPTION_REQ,
// ECHO_REQ, GRAB_JOB*, admin lines) takes a reply slot in arrival order; a
// reply produced early (by another backend) waits until every earlier slot is
// answered, because libgearman pairs JOB_CREATED and ERROR with its submits
// by order alone. Packets that answer nothing (WORK_*, NOOP) are sent at once
// unless replies are owed, in which case they queue behind them, so that no
// WORK_* can overtake its job's JOB_CREATED.
//
// # Client role
//
// A submit goes to the backend the router picks (rendezvous hash of function
// and unique over healthy backends, least loaded for an empty unique) over one
// of its shared links. Foreground submits of the same (function, unique) are
// coalesced in the proxy onto one backend submit: a shared link attached twice
// to a job would receive its results twice. WORK_* from a backend are fanned
// out to every session attached to the job, with each session's own handle;
// WORK_EXCEPTION becomes a clean WORK_FAIL for sessions without the
// exceptions option. GET_STATUS is routed by the handle; GET_STATUS_UNIQUE,
// which names no function, asks every backend and answers with the first
// answer that knows the unique. ECHO_REQ and OPTION_REQ are answered by
// the proxy.
//
// # Worker role
//
// A worker session holds a link to every healthy backend; CAN_DO*, CANT_DO,
// RESET_ABILITIES and SET_CLIENT_ID go to all of them and are replayed on a
// backend that comes back. PRE_SLEEP goes to all; the first NOOP back wakes
// the worker and later ones only mark their backend as having work. A grab
// asks first the backends known to hold a job for the worker, highest
// priority then oldest first (a queue view of the jobs submitted through
// this proxy, so that the pool hands out jobs in the order one gearmand
// would), then those that signalled work, in the order they did, then the
// others in rotation; it answers the worker exactly once. A backend that
// answers NO_JOB is put back to sleep at once so it signals new work. WORK_*
// from the worker go to the backend its handle names; a result for a job
// whose backend died is dropped (its clients already had WORK_FAIL).
//
// What a pool cannot do like one server: maxqueue counts per backend; the
// results of different jobs on different backends may reach a client in
// either order; a foreground job whose clients all left still runs,
// since the proxy's shared link stays attached to it; and GET_STATUS_UNIQUE
// for a unique in several functions may answer for another of its jobs
// than the newest.
//
// # Identity
//
// Each listener has an Authenticator that yields an Identity before the
// session serves anything; FixedUser is the listener that does not
// authenticate. The identity's user is bound into every handle the session
// is given (see router.Codec), and its Access decides submit, work and admin
// for users who are not superusers. Gate is the Authenticator over the auth
// package (TLS, client certificates, SASL, max_connections); LiveUsers lets
// a reload close a removed user's sessions and reset everyone's ACL cache.
// A user's Namespace is added to function names and unique IDs on the way
// to a backend and stripped on the way back (tenant.go), so tenants neither
// see, coalesce with, nor query each other's jobs; admin listings show only
// what the user may submit or work.
//
// # Failure
//
// When a backend goes down it leaves routing at once; submits not yet
// answered get ERROR, and every foreground job attached there gets WORK_FAIL.
// Workers keep their links to the other backends.
package proxy
