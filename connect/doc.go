// Package connect is the local sidecar behind `gearproxy connect`: it lets
// unmodified Gearman clients and workers (PHP's extension, the gearman and
// gearadmin CLIs, Perl, Python) reach a gearproxy that demands TLS and SASL,
// which none of them speak.
//
// A Sidecar listens on a loopback address. For every local connection it
// dials one upstream connection, verifies the server certificate, runs the
// SASL exchange of protocol/SPEC.md with the configured
// credentials (client.Authenticate), and then relays bytes both ways
// unchanged: after authentication the upstream is an ordinary Gearman
// server, so the local peer's packets need no rewriting.
//
// While the upstream is being authenticated the local peer is already
// talking (PHP's addServer sends OPTION_REQ at once and waits). Its first
// bytes are held back and sent upstream after authentication. When the
// upstream cannot be reached or refuses the credentials, the first request
// that expects a reply is answered with an ERROR packet (or an ERR line for
// an admin command), so that the local client fails with the cause instead
// of a bare disconnect; the cause is logged once, not once per connection.
//
// A Sidecar holds no package-level state: two can run in one process.
package connect
