package jobserver

import (
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

func TestCronNext(t *testing.T) {
	base := time.Date(2026, 3, 14, 10, 30, 20, 0, time.UTC) // a Saturday
	tests := []struct {
		fields [5]string
		want   time.Time
	}{
		{[5]string{"*", "*", "*", "*", "*"}, time.Date(2026, 3, 14, 10, 31, 0, 0, time.UTC)},
		{[5]string{"30", "10", "*", "*", "*"}, time.Date(2026, 3, 15, 10, 30, 0, 0, time.UTC)},
		{[5]string{"0", "*", "*", "*", "*"}, time.Date(2026, 3, 14, 11, 0, 0, 0, time.UTC)},
		{[5]string{"*/15", "*", "*", "*", "*"}, time.Date(2026, 3, 14, 10, 45, 0, 0, time.UTC)},
		{[5]string{"0", "9-17", "*", "*", "1-5"}, time.Date(2026, 3, 16, 9, 0, 0, 0, time.UTC)},
		{[5]string{"0", "0", "1", "1", "*"}, time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)},
		{[5]string{"0", "0", "29", "2", "*"}, time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC)},
		{[5]string{"0", "12", "", "", "7"}, time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC)},  // 7 = Sunday
		{[5]string{"0", "0", "13", "*", "5"}, time.Date(2026, 3, 20, 0, 0, 0, 0, time.UTC)}, // day 13 or Friday
		{[5]string{"5,10", "11", "*", "*", "*"}, time.Date(2026, 3, 14, 11, 5, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		got, err := schedNext(bytesOf(tt.fields), base)
		if err != nil || got != tt.want.Unix() {
			t.Errorf("%q: got %v (%v), want %v", tt.fields, time.Unix(got, 0).UTC(), err, tt.want)
		}
	}
	for _, bad := range [][5]string{{"60", "*", "*", "*", "*"}, {"x", "*", "*", "*", "*"}, {"*", "*", "0", "*", "*"}, {"*/0", "*", "*", "*", "*"}, {"5-1", "*", "*", "*", "*"}} {
		if _, err := schedNext(bytesOf(bad), base); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := schedNext(bytesOf([5]string{"0", "0", "31", "2", "*"}), base); err == nil {
		t.Error("February 31st matched")
	}
	// Beyond the fields gearmand-era clients sent: names, and spaces
	// around a field.
	if got, err := schedNext(bytesOf([5]string{" 0 ", "12", "*", "mar", "sun"}), base); err != nil || got != time.Date(2026, 3, 15, 12, 0, 0, 0, time.UTC).Unix() {
		t.Errorf("names: got %v (%v)", time.Unix(got, 0).UTC(), err)
	}
}

func bytesOf(fields [5]string) [][]byte {
	var fs [][]byte
	for _, f := range fields {
		fs = append(fs, []byte(f))
	}
	return fs
}

// fakeClock is a settable clock for epoch and SCHED jobs.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// An epoch or SCHED job that falls due wakes sleeping workers (gearmand
// sends no NOOP, so its workers can sleep through it).
func TestDelayedJobsWakeWorkers(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 3, 14, 10, 30, 20, 0, time.Local)}
	s, addr := testServer(t, Options{Now: clock.Now})
	a, c, w := dial(t, addr), dial(t, addr), dial(t, addr)
	due := clock.Now().Add(time.Hour).Unix()
	c.send(protocol.SubmitJobEpoch, "f", "e", itoa64(due), "epoch")
	c.expect(protocol.JobCreated, "H:test:1")
	c.send(protocol.SubmitJobSched, "f", "s", "0", "11", "*", "*", "*", "sched") // 11:00
	c.expect(protocol.JobCreated, "H:test:2")
	c.send(protocol.SubmitJobEpoch, "f", "past", "1", "past")
	c.expect(protocol.JobCreated, "H:test:3")
	c.send(protocol.SubmitJobSched, "f", "bad", "99", "*", "*", "*", "*", "x")
	c.expect(protocol.Error, "INVALID_ARGUMENT")
	if got := a.admin("status", true); got != "f\t3\t0\t0\n.\n" {
		t.Fatalf("status: %q", got)
	}
	w.canDo("f")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign, "H:test:3", "f", "past")
	w.send(protocol.WorkComplete, "H:test:3", "")
	w.send(protocol.GrabJob)
	w.expect(protocol.NoJob)
	w.send(protocol.PreSleep)
	w.sync()

	clock.advance(30 * time.Minute) // 11:00:20: the SCHED job is due
	s.releaseDue()
	w.expect(protocol.Noop)
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign, "H:test:2", "f", "sched")
	w.send(protocol.GrabJob)
	w.expect(protocol.NoJob)
	w.send(protocol.PreSleep)
	w.sync()
	clock.advance(time.Hour)
	s.releaseDue()
	w.expect(protocol.Noop)
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign, "H:test:1", "f", "epoch")
}

func itoa64(n int64) string { return strconv.FormatInt(n, 10) }
