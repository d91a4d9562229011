// Package router makes the proxy's pure decisions: which backend a job goes
// to (rendezvous hashing of function and unique ID) and the handle codec that
// turns a backend's job handle into the one clients see and back. It does no
// I/O.
//
// Routing: every healthy backend scores the key hash of (function, unique)
// and the highest score wins, weighted when backends have weights. The same
// unique therefore lands on the same backend from every proxy instance, which
// is what makes coalescing work across a pool (gearmand issue #64). An empty
// unique never coalesces and goes to the least loaded backend; the Perl
// legacy unique "-" hashes the data as well, as gearmand coalesces it.
//
// Handles: see Codec. They name their backend, are at most 63 bytes, are
// derived from configuration and the backend's handle only (so they survive
// proxy restarts and agree between instances), and carry a checksum over
// user, backend and handle so that one backend's or user's handle is never
// taken for another's.
package router
