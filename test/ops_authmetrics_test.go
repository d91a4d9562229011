package test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/protocol"
)

// Authentication failures count by listener and reason, ACL denials by
// user, verb and reason, exactly once each.
func TestOpsAuthMetrics(t *testing.T) {
	t.Parallel()
	sasl := freeAddr(t)
	p := startOpsProxy(t, bundledBackends(1), fmt.Sprintf(`[[listener]]
address = %q
sasl = ["PLAIN"]
insecure_plain = true
[[user]]
name = "bob"
password = %q
[user.allow]
submit = ["ops.allowed"]
`, sasl, verifier(t, "bobs secret")))
	if err := waitForPort(sasl, p.Pid, p.Exited(), 15*time.Second); err != nil {
		t.Fatal(err)
	}
	// That probe hung up before authenticating: not a failure (port
	// probes and balancer checks do that all day).

	// A submit before authenticating: ERROR AUTH_REQUIRED, closed.
	raw := dialRaw(t, sasl)
	raw.Send(protocol.SubmitJob, "ops.allowed", "u", "x")
	if r := raw.Recv(); r.Type != protocol.Error || r.Args[0] != "AUTH_REQUIRED" {
		t.Fatalf("submit before authentication: %s", r)
	}
	raw.WaitClosed()

	// A wrong password, then a hang-up (clients give up after one
	// AUTH_FAILED): a failure, though the connection ended with EOF.
	raw = dialRaw(t, sasl)
	raw.Send(protocol.SASLStart, "PLAIN", "\x00bob\x00wrong")
	if r := raw.Recv(); r.Type != protocol.Error || r.Args[0] != "AUTH_FAILED" {
		t.Fatalf("wrong password: %s", r)
	}
	raw.Close()
	// A mechanism the listener does not offer, then a hang-up.
	raw = dialRaw(t, sasl)
	raw.Send(protocol.SASLStart, "SCRAM-SHA-256", "")
	if r := raw.Recv(); r.Type != protocol.Error || r.Args[0] != "AUTH_MECH_UNSUPPORTED" {
		t.Fatalf("unoffered mechanism: %s", r)
	}
	raw.Close()

	// bob may submit ops.allowed only.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := client.Dial(ctx, client.Config{Addr: sasl, Credentials: &client.Credentials{
		Mechanism: "PLAIN", Username: "bob", Password: "bobs secret", InsecurePlain: true}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	task, err := c.Submit(ctx, client.Job{Function: "ops.forbidden", Data: []byte("x"), Background: true}, nil)
	if err == nil {
		_, err = task.Wait(ctx)
	}
	var se *client.ServerError
	if !errors.As(err, &se) || se.Code != "PERMISSION_DENIED" {
		t.Fatalf("forbidden submit: %v", err)
	}
	task, err = c.Submit(ctx, client.Job{Function: "ops.allowed", Data: []byte("x"), Background: true}, nil)
	if err == nil {
		_, err = task.Wait(ctx)
	}
	if err != nil {
		t.Fatalf("allowed submit: %v", err)
	}

	m := p.metrics(t)
	for _, w := range []struct {
		name  string
		label []string
		want  float64
	}{
		{"gearproxy_auth_failures_total", []string{`listener="` + sasl + `"`, `reason="auth_required"`}, 1},
		{"gearproxy_auth_failures_total", []string{`listener="` + sasl + `"`, `reason="auth_failed"`}, 1},
		{"gearproxy_auth_failures_total", []string{`listener="` + sasl + `"`, `reason="mech_unsupported"`}, 1},
		{"gearproxy_auth_failures_total", nil, 3},
		{"gearproxy_denials_total", []string{`user="bob"`, `verb="submit"`, `reason="acl"`}, 1},
		{"gearproxy_denials_total", nil, 1},
		{"gearproxy_jobs_submitted_total", []string{`user="bob"`, `function="ops.allowed"`}, 1},
		{"gearproxy_user_connections", []string{`user="bob"`}, 1},
	} {
		if got := sum(m, w.name, w.label...); got != w.want {
			t.Errorf("%s%v = %v, want %v", w.name, w.label, got, w.want)
		}
	}
}
