package test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/protocol"
)

// A worker logged in with SCRAM-SHA-256 and a client with PLAIN, both over
// TLS through `gearproxy run`: the job goes round, and the worker sees the
// function and unique as the client named them, without alice's namespace.
func TestSecurityTLSRoundTrip(t *testing.T) {
	t.Parallel()
	sp := startSecureProxy(t, newTestPKI(t, "ca"), "")
	sp.startWorker(t, "alice", "img.resize")
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-256-PLUS"} {
		c := sp.dial(t, "alice", mech)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, err := c.Do(ctx, client.Job{Function: "img.resize", Unique: "u-" + mech, Data: []byte("cat.png")})
		cancel()
		if err != nil {
			t.Fatalf("%s: %v", mech, err)
		}
		if want := "alice:img.resize:u-" + mech + ":cat.png"; string(out) != want {
			t.Fatalf("%s: result %q, want %q", mech, out, want)
		}
	}
	sp.waitLog(t, "auth.success", "user=alice", "mechanism=SCRAM-SHA-256")
	sp.waitLog(t, "auth.success", "user=alice", "mechanism=SCRAM-SHA-256-PLUS")
}

// A wrong password and an unknown user get the same refusal; the audit log
// says which it was.
func TestSecurityWrongPasswordAndUnknownUser(t *testing.T) {
	t.Parallel()
	sp := startSecureProxy(t, newTestPKI(t, "ca"), "")
	refusal := func(user, password, mech string) *client.AuthError {
		cfg := sp.clientConfig(user, mech)
		cfg.Credentials.Password = password
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, err := client.Dial(ctx, cfg)
		if err == nil {
			c.Close()
			t.Fatalf("%s/%s with %s: logged in", user, password, mech)
		}
		var ae *client.AuthError
		if !errors.As(err, &ae) {
			t.Fatalf("%s with %s: %v, want an AuthError", user, mech, err)
		}
		return ae
	}
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256"} {
		wrong := refusal("alice", "not-alice", mech)
		unknown := refusal("mallory", "mallory", mech)
		if wrong.Code != "AUTH_FAILED" || *wrong != *unknown {
			t.Fatalf("%s: wrong password %+v, unknown user %+v: want the same AUTH_FAILED", mech, wrong, unknown)
		}
	}
	// Timing: reported for a reader to compare, never asserted (a
	// shared machine's noise would make any bound flaky). Each refusal
	// takes at least the failure delay from the packet that failed.
	for _, mech := range []string{"PLAIN", "SCRAM-SHA-256"} {
		var wrong, unknown []time.Duration
		for range 4 {
			start := time.Now()
			refusal("alice", "not-alice", mech)
			wrong = append(wrong, time.Since(start))
			start = time.Now()
			refusal("mallory", "mallory", mech)
			unknown = append(unknown, time.Since(start))
		}
		slices.Sort(wrong)
		slices.Sort(unknown)
		t.Logf("%s refusals, sorted: wrong password %v; unknown user %v", mech, wrong, unknown)
	}
	sp.waitLog(t, "auth.failure", "user=mallory")
	sp.waitLog(t, "auth.failure", "user=alice")
	// Others are unaffected.
	sp.startWorker(t, "bob", "img.x")
	if out, err := sp.dial(t, "bob", "").Do(context.Background(), client.Job{Function: "img.x", Data: []byte("d")}); err != nil || !strings.HasPrefix(string(out), "bob:img.x") {
		t.Fatalf("bob after the failures: %q %v", out, err)
	}
}

// PLAIN without TLS only where the listener says the network is trusted;
// ANONYMOUS only where it names the user it logs in as.
func TestSecurityPlaintextMechanisms(t *testing.T) {
	t.Parallel()
	sp := startSecureProxy(t, newTestPKI(t, "ca"), "")
	c := dialRaw(t, sp.PlainAddr)
	c.Send(protocol.SASLStart, "PLAIN", "\x00carol\x00carol")
	if r := c.Recv(); errorCode(r) != "AUTH_MECH_UNSUPPORTED" {
		t.Fatalf("PLAIN in clear text on the SCRAM-only listener: %v", r)
	}
	c.Send(protocol.SASLMechsReq)
	if r := c.Recv(); r.Type != protocol.SASLMechsRes || r.Args[0] != "SCRAM-SHA-256" {
		t.Fatalf("mechanisms of the plaintext listener: %v", r)
	}

	trusted := dialRaw(t, sp.TrustedAddr)
	trusted.Send(protocol.SASLStart, "PLAIN", "\x00carol\x00carol")
	if r := trusted.Recv(); r.Type != protocol.SASLOK {
		t.Fatalf("PLAIN on the insecure_plain listener: %v", r)
	}
	anon := dialRaw(t, sp.TrustedAddr)
	anon.Send(protocol.SASLStart, "ANONYMOUS", "trace")
	if r := anon.Recv(); r.Type != protocol.SASLOK || !strings.HasPrefix(r.Args[0], "carol") {
		t.Fatalf("ANONYMOUS: %v, want logged in as carol", r)
	}
	anon.Send(protocol.SubmitJobBg, "shared.anon", "", "x")
	anon.Send(protocol.SubmitJobBg, "img.anon", "", "x")
	if r := anon.Recv(); r.Type != protocol.JobCreated {
		t.Fatalf("anonymous submit within carol's rights: %v", r)
	}
	if r := anon.Recv(); errorCode(r) != "PERMISSION_DENIED" {
		t.Fatalf("anonymous submit outside carol's rights: %v", r)
	}
}
