// Package auth decides who is connecting and what they may do: TLS
// configuration with reloadable certificates (TLSServer) or automatic
// ones from an ACME CA (ACME, with certmagic; TLS-ALPN-01 is answered on
// the listener itself, and a CA's probe is closed after its handshake,
// never served), the server side of the SASL
// extension (protocol/SPEC.md), the user store, ACL
// evaluation, tenant namespaces and audit events. It never touches a
// backend; the proxy session feeds it packets and acts on its answers.
//
// Passwords are stored only as SCRAM-SHA-256 verifiers in PostgreSQL's
// form (RFC 5802 section 3: salt, iteration count, StoredKey, ServerKey).
// One verifier serves both SCRAM-SHA-256 and PLAIN, and a leaked users file
// yields no password without a PBKDF2 search.
//
// A Conversation is one connection's authentication state machine:
// SASL_MECHS_REQ, SASL_START and SASL_STEP go in, the reply packet and the
// outcome come out. It never reveals whether a user exists: an unknown
// user, a disabled one and a wrong password get the same AUTH_FAILED after
// the same delay, and SCRAM is offered stable made-up credentials for
// names that are not users. Failures are slowed, capped per connection and
// budgeted per source address; a panic in a mechanism becomes AUTH_FAILED.
//
// An ACL answers "may this user submit, work or administer this name?"
// with the rule that decided: deny wins, superuser must be explicit, and
// anything not allowed is denied. Permissions caches a session's decisions.
//
// Everything hangs off values (Users, Authenticator, Listener, TLSServer,
// ACME, Auditor) so that two proxies can run in one process (ACME has its
// own certmagic cache and config, never certmagic.Default); reloads swap whole
// immutable sets behind atomic pointers.
package auth
