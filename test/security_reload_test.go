package test

import (
	"context"
	"crypto/tls"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/protocol"
)

// A reload that would break something is refused as a whole: the running
// users and certificate stay, and the log says why.
func TestSecurityReloadRefused(t *testing.T) {
	t.Parallel()
	sp := startSecureProxy(t, newTestPKI(t, "ca"), "")
	live := sp.rawAuthed(t, "alice")
	works := func(t *testing.T) {
		t.Helper()
		c := sp.rawAuthed(t, "alice")
		c.Send(protocol.EchoReq, "new")
		c.Expect(protocol.EchoRes, "new")
		live.Send(protocol.EchoReq, "live")
		live.Expect(protocol.EchoRes, "live")
	}
	t.Run("broken users file", func(t *testing.T) {
		users := sp.usersText(t)
		broken := strings.Replace(users, `name = "alice"`+"\npassword = ", `name = "alice"`+"\npassword = \"hunter2\"\nx = ", 1)
		sp.writeConfig(t, sp.head+broken)
		line := sp.reload(t)
		if !strings.Contains(line, "reload refused") || !strings.Contains(line, "SCRAM-SHA-256 verifier") {
			t.Fatalf("reload line %q: want a refusal naming the password", line)
		}
		works(t)
	})
	t.Run("users file with an unknown group", func(t *testing.T) {
		sp.writeConfig(t, sp.head+sp.usersText(t)+"\n[[user]]\nname = \"eve\"\ngroups = [\"nope\"]\n")
		if line := sp.reload(t); !strings.Contains(line, "reload refused") || !strings.Contains(line, `group \"nope\"`) {
			t.Fatalf("reload line %q", line)
		}
		works(t)
	})
	t.Run("broken certificate", func(t *testing.T) {
		sp.writeConfig(t, sp.head+sp.usersText(t))
		good, err := os.ReadFile(sp.CertFile)
		if err != nil {
			t.Fatal(err)
		}
		defer os.WriteFile(sp.CertFile, good, 0o600)
		if err := os.WriteFile(sp.CertFile, []byte("-----BEGIN CERTIFICATE-----\nbroken\n-----END CERTIFICATE-----\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		line := sp.reload(t)
		if !strings.Contains(line, "reload refused") || !strings.Contains(line, sp.CertFile) {
			t.Fatalf("reload line %q: want a refusal naming the certificate", line)
		}
		works(t)
	})
}

// A reload that removes or disables a user closes its sessions at once;
// changed rules apply to live sessions from their next packet.
func TestSecurityReloadApplies(t *testing.T) {
	t.Parallel()
	sp := startSecureProxy(t, newTestPKI(t, "ca"), "")
	bob, alice := sp.rawAuthed(t, "bob"), sp.rawAuthed(t, "alice")
	alice.SendLine("status")
	alice.RecvList()

	users := sp.usersText(t)
	changed := strings.Replace(users, `name = "bob"`, `name = "bob"`+"\ndisabled = true", 1)
	changed = strings.Replace(changed, `admin = ["status", "prioritystatus",`, `admin = ["prioritystatus",`, 1)
	if changed == users {
		t.Fatal("users text did not change")
	}
	sp.writeConfig(t, sp.head+changed)
	if line := sp.reload(t); !strings.Contains(line, "reloaded") || !strings.Contains(line, "sessions_closed=1") {
		t.Fatalf("reload line %q", line)
	}
	if got := bob.WaitClosed(); len(got) != 0 {
		t.Fatalf("bob's session got %v before closing", got)
	}
	alice.SendLine("status")
	if r := alice.Recv(); !strings.HasPrefix(r.Line, "ERR PERMISSION_DENIED") {
		t.Fatalf("status after alice lost it: %v", r)
	}
	alice.SendLine("prioritystatus")
	alice.RecvList()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if c, err := client.Dial(ctx, sp.clientConfig("bob", "SCRAM-SHA-256")); err == nil {
		c.Close()
		t.Fatal("disabled bob logged in")
	}

	// A renewed certificate, written in place, is served after SIGHUP
	// (live sessions keep theirs).
	newCert, newKey, _ := sp.pki.issue(t, "gearproxy-renewed", true, time.Now().Add(48*time.Hour))
	for _, f := range [][2]string{{newCert, sp.CertFile}, {newKey, sp.KeyFile}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1], b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if line := sp.reload(t); !strings.Contains(line, "reloaded") {
		t.Fatalf("reload line %q", line)
	}
	c, err := sp.rawTLS(t)
	if err != nil {
		t.Fatal(err)
	}
	if cn := c.conn.(*tls.Conn).ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "gearproxy-renewed" {
		t.Fatalf("served certificate %q after the reload, want the renewed one", cn)
	}
	alice.SendLine("prioritystatus")
	alice.RecvList()
}
