// Package protocol is the Gearman wire format and nothing else: packet types
// 1-42 and the SASL extension's 100-105 with their argument layout, a Reader
// that validates framing before any policy sees a packet, a buffered Writer
// for clients, a bounded Outbox for servers, and the admin text protocol's
// line splitting and reply formatting.
//
// It has no notion of jobs, users or backends. SPEC.md beside this file
// states the format as implemented, including the places where gearmand's
// PROTOCOL file is wrong.
package protocol
