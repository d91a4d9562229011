// Package proxy is gearproxy's front end: listeners, the per-connection
// session (handshake, authentication, serving), client-role and worker-role
// packet handling over the backend pool, and admin command aggregation.
package proxy
