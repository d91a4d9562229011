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
