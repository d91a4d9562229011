package auth

import (
	"context"
	"testing"

	"github.com/gearproxy/gearproxy/protocol"
	"github.com/xdg-go/scram"
)

// BenchmarkAuthenticate measures one complete authentication on the server
// side (SCRAM includes the client's work, which a real server does not
// pay). The failure cases run with the delay switched off, so they compare
// the work done for an unknown user with that for a wrong password: the
// two must cost the same for timing to reveal nothing.
func BenchmarkAuthenticate(b *testing.B) {
	f := newFixture(b, saslUsers(b), nil)
	l := f.listener(b, ListenerConfig{Mechanisms: []string{MechSCRAM, MechPlain}, MaxAuthFailures: 1 << 30})
	ctx := context.Background()
	tlsConn := connState(nil)
	plain := func(user, pass string, wantOK bool) func(*testing.B) {
		return func(b *testing.B) {
			msg := start(MechPlain, "\x00"+user+"\x00"+pass)
			for b.Loop() {
				c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: tlsConn})
				if r := c.Handle(ctx, msg); (r.User != nil) != wantOK {
					b.Fatalf("got %q", r.Packet)
				}
			}
		}
	}
	scramRun := func(user, pass string, wantOK bool) func(*testing.B) {
		return func(b *testing.B) {
			cl, _ := scram.SHA256.NewClient(user, pass, "")
			for b.Loop() {
				c := l.NewConversation(ConnInfo{Remote: testAddr})
				conv := cl.NewConversation()
				first, _ := conv.Step("")
				r := c.Handle(ctx, start(MechSCRAM, first))
				p := decode(b, r.Packet)
				final, _ := conv.Step(string(p.Arg(0)))
				r = c.Handle(ctx, stepPkt(final))
				if (decode(b, r.Packet).Type == protocol.SASLOK) != wantOK {
					b.Fatalf("got %q", r.Packet)
				}
			}
		}
	}
	// The per-source budget would lock the benchmark's one address out.
	f.auth.sources.budget = 1 << 30
	b.Run("PLAIN", plain("alice", "s3cret", true))
	b.Run("PLAIN-wrong-password", plain("alice", "wrong", false))
	b.Run("PLAIN-unknown-user", plain("mallory", "s3cret", false))
	b.Run("SCRAM", scramRun("alice", "s3cret", true))
	b.Run("SCRAM-wrong-password", scramRun("alice", "wrong", false))
	b.Run("SCRAM-unknown-user", scramRun("mallory", "s3cret", false))
}
