package auth

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestAuditRateLimit(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(0, 0)
	a := NewAuditor(slog.New(slog.NewJSONHandler(&buf, nil)), AuditOptions{Rate: 10, Burst: 5, Now: func() time.Time { return now }})
	for i := 0; i < 1000; i++ {
		a.AuthFailure("mallory", "192.0.2.1:1", "l", MechPlain, "bad credentials")
	}
	if n := strings.Count(buf.String(), "\n"); n != 5 {
		t.Fatalf("%d events written during a flood, want the burst of 5", n)
	}
	now = now.Add(time.Second) // refills 10 tokens, capped at the burst
	buf.Reset()
	a.Denied("alice", "192.0.2.1:1", Submit, "img.secret", Decision{Rule: `user alice deny submit "img.*"`})
	var ev map[string]any
	if err := json.Unmarshal(buf.Bytes(), &ev); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"event": "acl.deny", "user": "alice", "verb": "submit", "function": "img.secret",
		"rule": `user alice deny submit "img.*"`, "dropped_before": float64(995)}
	for k, v := range want {
		if ev[k] != v {
			t.Errorf("%s = %v, want %v", k, ev[k], v)
		}
	}
	var nilAuditor *Auditor
	nilAuditor.AuthSuccess("a", "b", "c", "d") // must not panic
}

func TestClip(t *testing.T) {
	if got := clip(strings.Repeat("x", 500)); len(got) != 131 {
		t.Fatalf("len %d", len(got))
	}
	if got := clip("a\xffb"); got != "a\uFFFDb" {
		t.Fatalf("got %q", got)
	}
}
