package auth

import (
	"bytes"
	"strings"
	"testing"

	"github.com/gearproxy/gearproxy/protocol"
	"github.com/xdg-go/scram"
)

func TestVerifierRoundTrip(t *testing.T) {
	v, err := NewVerifier("s3cret", 0)
	if err != nil {
		t.Fatal(err)
	}
	s := v.String()
	if !strings.HasPrefix(s, "SCRAM-SHA-256$4096:") {
		t.Fatalf("got %s", s)
	}
	back, err := ParseVerifier(s)
	if err != nil {
		t.Fatal(err)
	}
	if back.String() != s {
		t.Fatalf("round trip changed %s to %s", s, back)
	}
	if !back.CheckPassword("s3cret") || back.CheckPassword("s3cret ") || back.CheckPassword("") {
		t.Fatal("CheckPassword")
	}
	w, _ := NewVerifier("s3cret", 0)
	if bytes.Equal(w.Salt, v.Salt) {
		t.Fatal("two verifiers share a salt")
	}
}

// TestVerifierMatchesSCRAMClient checks our derivation against the SCRAM
// client's own (RFC 5802 section 3), so that a verifier made by `gearproxy
// passwd` serves SCRAM clients.
func TestVerifierMatchesSCRAMClient(t *testing.T) {
	for _, pw := range []string{"s3cret", "pässwörd", "I\u00ADX"} { // the last: SASLprep removes a soft hyphen
		v, err := NewVerifier(pw, 4096)
		if err != nil {
			t.Fatal(err)
		}
		cl, err := scram.SHA256.NewClient("u", pw, "")
		if err != nil {
			t.Fatal(err)
		}
		sc := cl.GetStoredCredentials(scram.KeyFactors{Salt: string(v.Salt), Iters: v.Iterations})
		if !bytes.Equal(sc.StoredKey, v.StoredKey) || !bytes.Equal(sc.ServerKey, v.ServerKey) {
			t.Fatalf("%q: keys differ from the SCRAM client's", pw)
		}
	}
	v, _ := NewVerifier("I\u00ADX", 0)
	if !v.CheckPassword("IX") {
		t.Fatal("SASLprep not applied to PLAIN passwords")
	}
}

// TestPostgresVerifier uses a verifier that PostgreSQL 15 made for the
// password "pencil" (SET password_encryption = 'scram-sha-256'; CREATE
// ROLE ... PASSWORD 'pencil'; SELECT rolpassword FROM pg_authid): it parses,
// formats back unchanged, checks the password and serves a SCRAM login.
func TestPostgresVerifier(t *testing.T) {
	const pg = "SCRAM-SHA-256$4096:bfouWuVpmID1JLhHiiTfSw==$PonCbU4UJ+eWIYIN09/jkOGtE7atkQb2AYWbkq5t7uA=:ObaHRq0yNfzFFEE3tbnN9qlwkNB228gCminHFs6Fn8A="
	v, err := ParseVerifier(pg)
	if err != nil {
		t.Fatal(err)
	}
	if v.String() != pg {
		t.Fatalf("reformatted as %s", v)
	}
	if !v.CheckPassword("pencil") || v.CheckPassword("Pencil") {
		t.Fatal("CheckPassword disagrees with PostgreSQL")
	}
	f := newFixture(t, []UserConfig{{Name: "pg", Password: pg}}, nil)
	c := f.listener(t, ListenerConfig{Mechanisms: []string{MechSCRAM}}).NewConversation(ConnInfo{Remote: testAddr})
	if reply := scramExchange(t, c, "pg", "pencil", nil); decode(t, reply).Type != protocol.SASLOK {
		t.Fatalf("SCRAM with a PostgreSQL verifier: %q", reply)
	}
}

func TestParseVerifierErrors(t *testing.T) {
	good, _ := NewVerifier("x", 0)
	parts := strings.Split(good.String(), "$")
	tests := map[string]string{
		"clear text":         "s3cret",
		"md5 hash":           "md5a3556571e93b0d20722ba62be61e8c2d",
		"other scheme":       "SCRAM-SHA-1$4096:" + strings.Join(parts[1:], "$")[5:],
		"missing keys":       "SCRAM-SHA-256$4096:c2FsdA==",
		"missing server key": "SCRAM-SHA-256$" + parts[1] + "$" + strings.Split(parts[2], ":")[0],
		"bad iterations":     "SCRAM-SHA-256$x:" + strings.SplitN(parts[1], ":", 2)[1] + "$" + parts[2],
		"too few iterations": "SCRAM-SHA-256$1000:" + strings.SplitN(parts[1], ":", 2)[1] + "$" + parts[2],
		"too many":           "SCRAM-SHA-256$100000000:" + strings.SplitN(parts[1], ":", 2)[1] + "$" + parts[2],
		"bad base64":         "SCRAM-SHA-256$4096:!!$" + parts[2],
		"short key":          "SCRAM-SHA-256$" + parts[1] + "$AAAA:" + strings.Split(parts[2], ":")[1],
		"empty salt":         "SCRAM-SHA-256$4096:$" + parts[2],
	}
	for name, s := range tests {
		if _, err := ParseVerifier(s); err == nil {
			t.Errorf("%s: %q accepted", name, s)
		}
	}
	if _, err := NewVerifier("x", 100); err == nil {
		t.Error("NewVerifier accepted 100 iterations")
	}
}
