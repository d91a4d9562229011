package schedule

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a Clock that moves only when the test says. Each At call
// is reported on waits, so a test knows the Scheduler is waiting before it
// moves the clock: nothing depends on how fast goroutines run.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []fakeWaiter
	waits   chan time.Time
}

type fakeWaiter struct {
	t time.Time
	c chan time.Time
}

func newFakeClock(now time.Time) *fakeClock {
	return &fakeClock{now: now, waits: make(chan time.Time, 1024)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) At(t time.Time) (<-chan time.Time, func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	if !t.After(c.now) {
		ch <- c.now
	} else {
		c.waiters = append(c.waiters, fakeWaiter{t, ch})
	}
	c.waits <- t
	return ch, func() {}
}

// set moves the clock to t and wakes everyone waiting for t or earlier.
func (c *fakeClock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if w.t.After(t) {
			kept = append(kept, w)
		} else {
			w.c <- t
		}
	}
	c.waiters = kept
}

// waitFor returns once some goroutine waits for the clock to reach t.
func (c *fakeClock) waitFor(t *testing.T, want time.Time) {
	t.Helper()
	for {
		select {
		case got := <-c.waits:
			if got.Equal(want) {
				return
			}
		case <-time.After(10 * time.Second): // a hang guard, not a measurement
			t.Fatalf("nobody waits for %s", want)
		}
	}
}

// recorder is a Submitter that records jobs and fails while fail > 0.
type recorder struct {
	mu   sync.Mutex
	jobs []Job
	fail int
	done chan Job
}

func newRecorder() *recorder { return &recorder{done: make(chan Job, 100)} }

func (r *recorder) SubmitBackground(ctx context.Context, j Job) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.fail > 0 {
		r.fail--
		r.done <- Job{}
		return errors.New("backend down")
	}
	r.jobs = append(r.jobs, j)
	r.done <- j
	return nil
}

func (r *recorder) next(t *testing.T) Job {
	t.Helper()
	select {
	case j := <-r.done:
		return j
	case <-time.After(10 * time.Second): // a hang guard
		t.Fatal("no submission")
	}
	return Job{}
}

// run starts s until the test ends.
func run(t *testing.T, s *Scheduler) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

func TestSchedulerFiresEachFiring(t *testing.T) {
	start := utc(t, "2026-11-28 01:21:30")
	clock := newFakeClock(start)
	rec := newRecorder()
	s, err := New([]Schedule{{Name: "report", Cron: "*/5 * * * *", Function: "reports.build", Payload: []byte("weekly"), Priority: High}},
		rec, Options{Clock: clock, Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	for _, at := range []string{"2026-11-28 01:25:00", "2026-11-28 01:30:00", "2026-11-28 01:35:00"} {
		firing := utc(t, at)
		clock.waitFor(t, firing)
		clock.set(firing)
		j := rec.next(t)
		want := Job{Function: "reports.build", Unique: "sched:report:" + strconv.FormatInt(firing.Unix(), 10), Data: []byte("weekly"),
			Priority: High, Schedule: "report", Time: firing}
		if j.Function != want.Function || j.Unique != want.Unique || string(j.Data) != "weekly" ||
			j.Priority != High || j.Schedule != "report" || !j.Time.Equal(firing) {
			t.Fatalf("submitted %+v, want %+v", j, want)
		}
	}
	clock.waitFor(t, utc(t, "2026-11-28 01:40:00"))
	st := s.States()[0]
	if st.Submitted != 3 || st.Failed != 0 || st.Missed != 0 || !st.Last.Equal(utc(t, "2026-11-28 01:35:00")) ||
		!st.Next.Equal(utc(t, "2026-11-28 01:40:00")) || st.Cron != "*/5 * * * *" {
		t.Fatalf("state %+v", st)
	}
}

// A failed submission is retried with the same unique, 1 s then 2 s
// later, until it is accepted.
func TestSchedulerRetries(t *testing.T) {
	start := utc(t, "2026-11-28 01:21:59")
	clock := newFakeClock(start)
	rec := newRecorder()
	rec.fail = 2
	s, err := New([]Schedule{{Name: "tick", Cron: "* * * * *", Function: "f"}}, rec, Options{Clock: clock, Location: time.UTC})
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	firing := utc(t, "2026-11-28 01:22:00")
	clock.waitFor(t, firing)
	clock.set(firing)
	rec.next(t) // failure 1
	clock.waitFor(t, firing.Add(time.Second))
	clock.set(firing.Add(time.Second))
	rec.next(t) // failure 2
	clock.waitFor(t, firing.Add(3*time.Second))
	clock.set(firing.Add(3 * time.Second))
	if j := rec.next(t); j.Unique != Unique("tick", firing) {
		t.Fatalf("retry submitted %q, want the firing's unique", j.Unique)
	}
	// The next firing is still on time.
	clock.waitFor(t, utc(t, "2026-11-28 01:23:00"))
	if st := s.States()[0]; st.Submitted != 1 || st.Failed != 0 || st.LastError != "" {
		t.Fatalf("state %+v", st)
	}
}

// Submissions that keep failing are given up once the firing is MaxLate
// old, and the error is kept for the status page.
func TestSchedulerGivesUp(t *testing.T) {
	clock := newFakeClock(utc(t, "2026-11-28 01:21:59"))
	rec := newRecorder()
	rec.fail = 1000
	s, _ := New([]Schedule{{Name: "tick", Cron: "* * * * *", Function: "f"}}, rec,
		Options{Clock: clock, Location: time.UTC, MaxLate: 10 * time.Second})
	run(t, s)
	firing := utc(t, "2026-11-28 01:22:00")
	at := firing
	for _, wait := range []time.Duration{0, time.Second, 2 * time.Second, 4 * time.Second} {
		at = at.Add(wait)
		clock.waitFor(t, at)
		clock.set(at)
		rec.next(t)
	}
	// 1+2+4 s have passed; the next retry (8 s) would be 15 s late.
	clock.waitFor(t, utc(t, "2026-11-28 01:23:00"))
	st := s.States()[0]
	if st.Failed != 1 || st.Submitted != 0 || st.LastError != "backend down" || !st.Last.Equal(firing) {
		t.Fatalf("state %+v", st)
	}
}

// A firing noticed later than MaxLate (a suspended process) is skipped
// rather than submitted, and the schedule goes on from the present.
func TestSchedulerSkipsLateFiring(t *testing.T) {
	clock := newFakeClock(utc(t, "2026-11-28 01:21:30"))
	rec := newRecorder()
	s, _ := New([]Schedule{{Name: "tick", Cron: "* * * * *", Function: "f"}}, rec,
		Options{Clock: clock, Location: time.UTC, MaxLate: time.Minute})
	run(t, s)
	clock.waitFor(t, utc(t, "2026-11-28 01:22:00"))
	clock.set(utc(t, "2026-11-28 01:25:30"))
	clock.waitFor(t, utc(t, "2026-11-28 01:26:00"))
	clock.set(utc(t, "2026-11-28 01:26:00"))
	if j := rec.next(t); !j.Time.Equal(utc(t, "2026-11-28 01:26:00")) {
		t.Fatalf("submitted the firing of %s", j.Time)
	}
	// Once it waits for the next firing, the state is up to date.
	clock.waitFor(t, utc(t, "2026-11-28 01:27:00"))
	if st := s.States()[0]; st.Missed != 1 || st.Submitted != 1 {
		t.Fatalf("state %+v", st)
	}
}

// The cron fields are read in the schedule's time zone.
func TestSchedulerLocation(t *testing.T) {
	tokyo := time.FixedZone("JST", 9*3600)
	clock := newFakeClock(utc(t, "2026-11-28 01:21:30"))
	rec := newRecorder()
	s, _ := New([]Schedule{{Name: "noon", Cron: "0 12 * * *", Function: "f", Location: tokyo}}, rec,
		Options{Clock: clock, Location: time.UTC})
	run(t, s)
	firing := utc(t, "2026-11-28 03:00:00") // 12:00 JST
	clock.waitFor(t, firing)
	clock.set(firing)
	if j := rec.next(t); j.Unique != Unique("noon", firing) {
		t.Fatalf("unique %q", j.Unique)
	}
}

func TestNewErrors(t *testing.T) {
	ok := Schedule{Name: "a", Cron: "* * * * *", Function: "f"}
	with := func(f func(*Schedule)) Schedule { s := ok; f(&s); return s }
	for _, c := range []struct {
		scheds []Schedule
		want   string
	}{
		{[]Schedule{with(func(s *Schedule) { s.Name = "" })}, "name is empty"},
		{[]Schedule{with(func(s *Schedule) { s.Name = strings.Repeat("n", 46) })}, "at most 45"},
		{[]Schedule{with(func(s *Schedule) { s.Name = "a b" })}, "white space"},
		{[]Schedule{with(func(s *Schedule) { s.Function = "" })}, "function is empty"},
		{[]Schedule{with(func(s *Schedule) { s.Cron = "* * *" })}, "want 5 fields"},
		{[]Schedule{with(func(s *Schedule) { s.Cron = "0 0 30 2 *" })}, "never fires"},
		{[]Schedule{with(func(s *Schedule) { s.Priority = 7 })}, "priority 7"},
		{[]Schedule{ok, ok}, `schedule "a": defined twice`},
	} {
		_, err := New(c.scheds, newRecorder(), Options{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", c.scheds, err, c.want)
		}
	}
	if _, err := New([]Schedule{ok}, nil, Options{}); err == nil {
		t.Error("New without a Submitter succeeded")
	}
	long := strings.Repeat("n", maxName)
	if u := Unique(long, time.Date(5000, 1, 1, 0, 0, 0, 0, time.UTC)); len(u) > MaxUnique {
		t.Errorf("unique of a %d-byte name is %d bytes", len(long), len(u))
	}
}

func TestParsePriority(t *testing.T) {
	for in, want := range map[string]Priority{"": Normal, "normal": Normal, "HIGH": High, "low": Low} {
		if p, err := ParsePriority(in); err != nil || p != want {
			t.Errorf("ParsePriority(%q) = %v, %v", in, p, err)
		}
	}
	if _, err := ParsePriority("urgent"); err == nil {
		t.Error("urgent accepted")
	}
}
