package schedule

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Priority is the queue a scheduled job joins within its function.
type Priority uint8

const (
	Normal Priority = iota
	High
	Low
)

func (p Priority) String() string {
	switch p {
	case High:
		return "high"
	case Low:
		return "low"
	}
	return "normal"
}

// ParsePriority reads "high", "normal" or "low"; empty means normal.
func ParsePriority(s string) (Priority, error) {
	switch strings.ToLower(s) {
	case "", "normal":
		return Normal, nil
	case "high":
		return High, nil
	case "low":
		return Low, nil
	}
	return Normal, fmt.Errorf("priority %q: want high, normal or low", s)
}

// Schedule is one recurring job, a `[[schedule]]` table in the config.
type Schedule struct {
	// Name identifies the schedule; it is part of every unique, so it
	// must be the same on every gearproxy instance that runs it.
	Name string
	// Cron is when it fires; see Parse.
	Cron string
	// Function, Payload and Priority make the background job.
	Function string
	Payload  []byte
	Priority Priority
	// Location is the time zone the cron fields are read in; nil takes
	// Options.Location. Instances that share a schedule must agree on it.
	Location *time.Location
}

// Job is a background job the Scheduler asks its Submitter to submit.
type Job struct {
	Function string
	Unique   string
	Data     []byte
	Priority Priority
	// Schedule names the schedule and Time is the firing the job is for
	// (not when it was submitted: a retry carries the same Time).
	Schedule string
	Time     time.Time
}

// Submitter submits a background job and returns once the job server has
// accepted it (JOB_CREATED), or why not (an ERROR reply, a backend that is
// down). gearproxy passes its own in-process submit path; another program
// can wrap a client.Client.
type Submitter interface {
	SubmitBackground(ctx context.Context, job Job) error
}

// SubmitterFunc adapts a function to Submitter.
type SubmitterFunc func(ctx context.Context, job Job) error

// SubmitBackground calls f.
func (f SubmitterFunc) SubmitBackground(ctx context.Context, job Job) error { return f(ctx, job) }

// MaxUnique is the longest unique Gearman keeps whole (gearmand truncates
// a 64th byte and refuses more).
const MaxUnique = 63

// uniquePrefix marks scheduled jobs in `show unique jobs`.
const uniquePrefix = "sched:"

// maxName keeps Unique within MaxUnique for firing times up to year
// 5138 (11 digits of Unix seconds).
const maxName = MaxUnique - len(uniquePrefix) - 1 - 11

// Unique returns the unique of the job a schedule submits for the firing
// at t: "sched:<name>:<Unix seconds>". Every instance computes the same
// one for the same firing, so the backend the unique hashes to coalesces
// their submissions into one job while it is queued or running.
func Unique(name string, t time.Time) string {
	return uniquePrefix + name + ":" + strconv.FormatInt(t.Unix(), 10)
}

// Clock tells the Scheduler the time and wakes it up; tests drive a fake
// one so that firings happen exactly when the test says.
type Clock interface {
	Now() time.Time
	// At returns a channel that receives once the clock reaches t, and a
	// function that releases it early. It may also wake up sooner: the
	// Scheduler asks Now again after every wake-up.
	At(t time.Time) (<-chan time.Time, func())
}

// SystemClock is the real clock.
func SystemClock() Clock { return systemClock{} }

type systemClock struct{}

// maxSleep bounds one wait so that a step of the system clock (NTP, a
// resumed virtual machine) delays a firing by at most this much: timers
// run on the monotonic clock, cron on the wall clock.
const maxSleep = time.Minute

func (systemClock) Now() time.Time { return time.Now() }

func (systemClock) At(t time.Time) (<-chan time.Time, func()) {
	d := min(time.Until(t), maxSleep)
	timer := time.NewTimer(d)
	return timer.C, func() { timer.Stop() }
}

// Options configure a Scheduler. Zero values take the defaults.
type Options struct {
	// Clock defaults to SystemClock().
	Clock Clock
	// Location is the time zone of schedules that name none; default
	// time.Local, as crond.
	Location *time.Location
	// MaxLate is how late a firing may still be submitted, after a
	// suspended process or failed submissions; later ones are skipped
	// and logged, because other instances have most likely run them
	// already and the job may have finished, so it would run twice.
	// Default one minute.
	MaxLate time.Duration
	// SubmitTimeout bounds one submission; default 10 s.
	SubmitTimeout time.Duration
	Logger        *slog.Logger
}

// State is what a schedule has done, for the status page.
type State struct {
	Name, Cron, Function string
	// Next is the firing it waits for; zero if it never fires again.
	Next time.Time
	// Last is the last firing submitted or given up, LastError why it
	// was given up ("" when it was submitted).
	Last      time.Time
	LastError string
	// Submitted, Failed and Missed count firings: submitted, given up
	// after retries, and skipped for being later than MaxLate.
	Submitted, Failed, Missed uint64
}

// Scheduler submits each schedule's job at each of its firings.
type Scheduler struct {
	opts    Options
	sub     Submitter
	log     *slog.Logger
	clock   Clock
	entries []*entry
	running atomic.Bool
}

type entry struct {
	Schedule
	spec *Spec

	mu    sync.Mutex
	state State
}

// New checks every schedule (names unique and short enough for the
// unique, cron expressions that fire, a function) and returns a Scheduler
// that runs them once Run is called.
func New(schedules []Schedule, sub Submitter, opts Options) (*Scheduler, error) {
	if sub == nil {
		return nil, errors.New("schedule: no Submitter")
	}
	if opts.Clock == nil {
		opts.Clock = SystemClock()
	}
	if opts.Location == nil {
		opts.Location = time.Local
	}
	if opts.MaxLate <= 0 {
		opts.MaxLate = time.Minute
	}
	if opts.SubmitTimeout <= 0 {
		opts.SubmitTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Scheduler{opts: opts, sub: sub, log: opts.Logger, clock: opts.Clock}
	seen := map[string]bool{}
	for i, sc := range schedules {
		if err := check(sc); err != nil {
			return nil, fmt.Errorf("schedule %d (%q): %w", i+1, sc.Name, err)
		}
		if seen[sc.Name] {
			return nil, fmt.Errorf("schedule %q: defined twice", sc.Name)
		}
		seen[sc.Name] = true
		spec, err := Parse(sc.Cron)
		if err != nil {
			return nil, fmt.Errorf("schedule %q: %w", sc.Name, err)
		}
		if sc.Location == nil {
			sc.Location = opts.Location
		}
		next, ok := spec.Next(opts.Clock.Now().In(sc.Location))
		if !ok {
			return nil, fmt.Errorf("schedule %q: cron %q never fires", sc.Name, sc.Cron)
		}
		e := &entry{Schedule: sc, spec: spec}
		e.state = State{Name: sc.Name, Cron: spec.String(), Function: sc.Function, Next: next}
		s.entries = append(s.entries, e)
	}
	return s, nil
}

func check(sc Schedule) error {
	switch {
	case sc.Name == "":
		return errors.New("name is empty")
	case len(sc.Name) > maxName:
		return fmt.Errorf("name is %d bytes; at most %d fit in a unique", len(sc.Name), maxName)
	case strings.ContainsAny(sc.Name, "\x00 \t\r\n"):
		return errors.New("name holds a NUL or white space")
	case sc.Function == "":
		return errors.New("function is empty")
	case strings.IndexByte(sc.Function, 0) >= 0:
		return errors.New("function holds a NUL")
	case sc.Priority > Low:
		return fmt.Errorf("priority %d unknown", sc.Priority)
	}
	return nil
}

// Run fires the schedules until ctx is done, then returns nil once every
// submission in progress has returned. It may be called once.
func (s *Scheduler) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("schedule: Run called twice")
	}
	var wg sync.WaitGroup
	for _, e := range s.entries {
		wg.Go(func() { s.loop(ctx, e) })
	}
	wg.Wait()
	return nil
}

// States returns each schedule's state, in configuration order.
func (s *Scheduler) States() []State {
	out := make([]State, len(s.entries))
	for i, e := range s.entries {
		e.mu.Lock()
		out[i] = e.state
		e.mu.Unlock()
	}
	return out
}

func (s *Scheduler) loop(ctx context.Context, e *entry) {
	next, ok := e.spec.Next(s.clock.Now().In(e.Location))
	for ok {
		e.update(func(st *State) { st.Next = next })
		if !s.sleepUntil(ctx, next) {
			return
		}
		now := s.clock.Now()
		if late := now.Sub(next); late > s.opts.MaxLate {
			s.log.Warn("schedule: firing skipped, too late", "schedule", e.Name, "firing", next, "late", late)
			e.update(func(st *State) { st.Missed++ })
			next, ok = e.spec.Next(now.In(e.Location))
			continue
		}
		if !s.fire(ctx, e, next) {
			return
		}
		next, ok = e.spec.Next(next)
	}
	e.update(func(st *State) { st.Next = time.Time{} })
	s.log.Warn("schedule: no further firing", "schedule", e.Name, "cron", e.Cron)
}

// sleepUntil waits until the clock reaches t; false if ctx ended first.
func (s *Scheduler) sleepUntil(ctx context.Context, t time.Time) bool {
	for s.clock.Now().Before(t) {
		c, stop := s.clock.At(t)
		select {
		case <-c:
		case <-ctx.Done():
			stop()
			return false
		}
	}
	return ctx.Err() == nil
}

// Retries back off from firstRetry, doubling up to maxRetry, until the
// firing is MaxLate old. The unique makes a retry harmless: if an earlier
// attempt did reach the backend, the retry coalesces with it.
const (
	firstRetry = time.Second
	maxRetry   = 30 * time.Second
)

// fire submits the job for the firing at t, retrying failures; false if
// ctx ended.
func (s *Scheduler) fire(ctx context.Context, e *entry, t time.Time) bool {
	job := Job{Function: e.Function, Unique: Unique(e.Name, t), Data: e.Payload, Priority: e.Priority,
		Schedule: e.Name, Time: t}
	deadline := t.Add(s.opts.MaxLate)
	wait := firstRetry
	for {
		sctx, cancel := context.WithTimeout(ctx, s.opts.SubmitTimeout)
		err := s.sub.SubmitBackground(sctx, job)
		cancel()
		if ctx.Err() != nil {
			return false
		}
		if err == nil {
			s.log.Info("schedule: job submitted", "schedule", e.Name, "function", e.Function, "unique", job.Unique)
			e.update(func(st *State) { st.Last, st.LastError = t, ""; st.Submitted++ })
			return true
		}
		retry := s.clock.Now().Add(wait)
		if retry.After(deadline) {
			s.log.Error("schedule: firing given up", "schedule", e.Name, "unique", job.Unique, "err", err)
			e.update(func(st *State) { st.Last, st.LastError = t, err.Error(); st.Failed++ })
			return true
		}
		s.log.Warn("schedule: submit failed, will retry", "schedule", e.Name, "unique", job.Unique, "in", wait, "err", err)
		if !s.sleepUntil(ctx, retry) {
			return false
		}
		wait = min(wait*2, maxRetry)
	}
}

func (e *entry) update(f func(*State)) {
	e.mu.Lock()
	f(&e.state)
	e.mu.Unlock()
}
