package connect

import (
	"log/slog"
	"sync"
	"time"
)

// failureLog logs each upstream failure cause once per window: a flood of
// local connections (a PHP pool retrying, a worker reconnecting) against a
// wrong password must leave one line naming the cause, not thousands.
type failureLog struct {
	log    *slog.Logger
	window time.Duration

	mu         sync.Mutex
	cause      string
	loggedAt   time.Time
	suppressed int
}

func newFailureLog(log *slog.Logger, window time.Duration) *failureLog {
	return &failureLog{log: log, window: window}
}

// failed logs msg with cause unless the same cause was logged within the
// window.
func (f *failureLog) failed(msg, cause string, attrs ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if cause == f.cause && now.Sub(f.loggedAt) < f.window {
		f.suppressed++
		return
	}
	if f.suppressed > 0 {
		attrs = append(attrs, "repeated_since_last_line", f.suppressed)
	}
	f.log.Error(msg, append([]any{"cause", cause}, attrs...)...)
	f.cause, f.loggedAt, f.suppressed = cause, now, 0
}

// recovered notes a working relay after failures, so that the log shows
// when the cause went away.
func (f *failureLog) recovered() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cause == "" {
		return
	}
	f.log.Info("upstream works again", "previous_cause", f.cause, "repeated_since_last_line", f.suppressed)
	f.cause, f.suppressed = "", 0
}

// refusalGate remembers that the upstream refused our credentials, so that
// local connections are refused with that cause until a backoff passes
// instead of each trying a login that will fail the same way.
type refusalGate struct {
	min, max time.Duration

	mu      sync.Mutex
	cause   error
	until   time.Time
	backoff time.Duration
}

// closed returns the remembered refusal while its backoff runs.
func (g *refusalGate) closed() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.cause != nil && time.Now().Before(g.until) {
		return g.cause
	}
	return nil
}

// refused notes a refusal by the upstream and doubles the backoff.
func (g *refusalGate) refused(cause error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.backoff = min(max(2*g.backoff, g.min), g.max)
	g.cause, g.until = cause, time.Now().Add(g.backoff)
}

// accepted clears the backoff after a successful login.
func (g *refusalGate) accepted() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cause, g.backoff = nil, 0
}
