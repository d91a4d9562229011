// Package router makes the proxy's pure decisions: which backend a job goes
// to (rendezvous hashing of function and unique ID) and the handle codec that
// turns a backend's job handle into the one clients see and back. It does no
// I/O.
package router
