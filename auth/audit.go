package auth

import (
	"context"
	"log/slog"
	"sync"
	"time"
	"unicode/utf8"
)

// AuditOptions configure an Auditor.
type AuditOptions struct {
	// Rate is how many events per second may be written on average;
	// default 50.
	Rate float64
	// Burst is how many events may be written at once after a quiet
	// spell; default 200.
	Burst int
	// Now is the clock, for tests; default time.Now.
	Now func() time.Time
}

// Auditor writes one structured event per authentication success or
// failure and per ACL denial. A token bucket bounds the rate, so a client
// hammering wrong passwords or forbidden functions cannot fill the disk;
// the events it drops are counted and the count is reported with the next
// event that gets through.
//
// A nil *Auditor discards everything, so callers need no checks.
type Auditor struct {
	log  *slog.Logger
	rate float64
	max  float64
	now  func() time.Time

	mu      sync.Mutex
	tokens  float64
	last    time.Time
	dropped uint64
}

// NewAuditor returns an Auditor that writes to l.
func NewAuditor(l *slog.Logger, o AuditOptions) *Auditor {
	if o.Rate <= 0 {
		o.Rate = 50
	}
	if o.Burst <= 0 {
		o.Burst = 200
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Auditor{log: l, rate: o.Rate, max: float64(o.Burst), now: o.Now, tokens: float64(o.Burst)}
}

// admit takes a token, and returns how many events were dropped since the
// last one admitted.
func (a *Auditor) admit() (ok bool, dropped uint64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	now := a.now()
	if !a.last.IsZero() {
		a.tokens += now.Sub(a.last).Seconds() * a.rate
		if a.tokens > a.max {
			a.tokens = a.max
		}
	}
	a.last = now
	if a.tokens < 1 {
		a.dropped++
		return false, 0
	}
	a.tokens--
	dropped, a.dropped = a.dropped, 0
	return true, dropped
}

func (a *Auditor) emit(level slog.Level, msg string, attrs ...slog.Attr) {
	if a == nil || a.log == nil {
		return
	}
	ok, dropped := a.admit()
	if !ok {
		return
	}
	if dropped > 0 {
		attrs = append(attrs, slog.Uint64("dropped_before", dropped))
	}
	a.log.LogAttrs(context.Background(), level, msg, attrs...)
}

// AuthSuccess records a successful authentication.
func (a *Auditor) AuthSuccess(user, source, listener, mechanism string) {
	a.emit(slog.LevelInfo, "auth success",
		slog.String("event", "auth.success"),
		slog.String("user", user),
		slog.String("source", source),
		slog.String("listener", listener),
		slog.String("mechanism", mechanism))
}

// AuthFailure records a failed authentication. attempted is the name the
// peer claimed (it may not exist; it is logged so an operator can see a
// guessing attack, truncated so it cannot bloat the log).
func (a *Auditor) AuthFailure(attempted, source, listener, mechanism, reason string) {
	a.emit(slog.LevelWarn, "auth failure",
		slog.String("event", "auth.failure"),
		slog.String("user", clip(attempted)),
		slog.String("source", source),
		slog.String("listener", listener),
		slog.String("mechanism", clip(mechanism)),
		slog.String("reason", reason))
}

// Denied records an ACL denial: who, from where, which verb on which name
// (as the user sent it), and the rule that decided.
func (a *Auditor) Denied(user, source string, v Verb, name string, d Decision) {
	a.emit(slog.LevelWarn, "permission denied",
		slog.String("event", "acl.deny"),
		slog.String("user", user),
		slog.String("source", source),
		slog.String("verb", v.String()),
		slog.String("function", clip(name)),
		slog.String("rule", d.Rule))
}

// clip shortens peer-supplied text for a log line and makes it valid UTF-8.
func clip(s string) string {
	const max = 128
	if len(s) > max {
		s = s[:max] + "..."
	}
	if !utf8.ValidString(s) {
		s = string([]rune(s)) // invalid bytes become U+FFFD
	}
	return s
}
