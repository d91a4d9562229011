package auth

import (
	"context"
	"testing"

	"github.com/gearproxy/gearproxy/protocol"
)

// FuzzConversation feeds arbitrary sequences of SASL packets to one
// conversation. Whatever arrives, every reply is one well-formed packet of
// a type the extension allows, and an identity, once established, never
// changes.
func FuzzConversation(f *testing.F) {
	f.Add([]byte("\x02PLAIN\x00\x00alice\x00s3cret"))
	f.Add([]byte("\x02SCRAM-SHA-256\x00n,,n=alice,r=abc\x01c=biws,r=abc,p=AAAA"))
	f.Add([]byte("\x01x\x02EXTERNAL\x00\x02ANONYMOUS\x00trace\x00"))
	f.Add([]byte("\x00\x02SCRAM-SHA-256-PLUS\x00p=tls-exporter,,n=alice,r=x"))
	fx := newFixture(f, saslUsers(f), nil)
	l := fx.listener(f, ListenerConfig{Mechanisms: allMechs(), AnonymousUser: "guest", MaxAuthFailures: 1 << 20})
	fx.auth.sources.budget = 1 << 30
	ca := newCA(f, "ca")
	leaf := ca.issue(leafOpts{cn: "alice-worker"}).Leaf
	f.Fuzz(func(t *testing.T, script []byte) {
		c := l.NewConversation(ConnInfo{Remote: testAddr, TLS: connState(leaf)})
		var user *User
		// Packets are separated by a byte 0-2 choosing the type:
		// SASL_MECHS_REQ, SASL_STEP, SASL_START ("mech\0data").
		for len(script) > 0 {
			kind := script[0] % 3
			script = script[1:]
			end := 0
			for end < len(script) && script[end] > 2 || (end < len(script) && kind == 2 && script[end] == 0) {
				end++
			}
			body := script[:end]
			script = script[end:]
			p := &protocol.Packet{Magic: protocol.Req}
			switch kind {
			case 0:
				p.Type = protocol.SASLMechsReq
			case 1:
				p.Type, p.Args = protocol.SASLStep, [][]byte{body}
			case 2:
				p.Type = protocol.SASLStart
				mech, data := body, []byte(nil)
				for i, b := range body {
					if b == 0 {
						mech, data = body[:i], body[i+1:]
						break
					}
				}
				p.Args = [][]byte{mech, data}
			}
			r := c.Handle(context.Background(), p)
			reply := decode(t, r.Packet)
			switch reply.Type {
			case protocol.SASLMechsRes, protocol.SASLChallenge, protocol.SASLOK, protocol.Error:
			default:
				t.Fatalf("reply type %s", reply.Type)
			}
			if r.User != nil {
				if user != nil {
					t.Fatalf("second login as %s after %s", r.User.Name, user.Name)
				}
				user = r.User
			}
			if c.User() != user {
				t.Fatalf("identity changed to %v", c.User())
			}
		}
	})
}
