package schedule

import (
	"strings"
	"testing"
	"time"
)

// utc parses "2006-01-02 15:04:05" in UTC.
func utc(t *testing.T, s string) time.Time {
	t.Helper()
	v, err := time.ParseInLocation(time.DateTime, s, time.UTC)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestNext(t *testing.T) {
	// 2026-11-28 is a Saturday.
	for _, c := range []struct {
		cron, from string
		want       []string // the next firings in order
	}{
		{"* * * * *", "2026-11-28 01:21:30", []string{"2026-11-28 01:22:00", "2026-11-28 01:23:00"}},
		{"*/5 * * * *", "2026-11-28 01:21:30", []string{"2026-11-28 01:25:00", "2026-11-28 01:30:00"}},
		{"*/5 * * * *", "2026-11-28 01:25:00", []string{"2026-11-28 01:30:00"}}, // strictly after
		{"0 3 * * *", "2026-11-28 01:21:00", []string{"2026-11-28 03:00:00", "2026-11-29 03:00:00"}},
		{"15,45 9-10 * * *", "2026-11-28 09:50:00", []string{"2026-11-28 10:15:00", "2026-11-28 10:45:00", "2026-11-29 09:15:00"}},
		{"0 0 1-10/3 * *", "2026-11-28 00:00:00", []string{"2026-12-01 00:00:00", "2026-12-04 00:00:00", "2026-12-07 00:00:00", "2026-12-10 00:00:00", "2027-01-01 00:00:00"}},
		{"30 12 * jan,JUL *", "2026-11-28 00:00:00", []string{"2027-01-01 12:30:00"}},
		{"0 9 * * mon-fri", "2026-11-28 00:00:00", []string{"2026-11-30 09:00:00", "2026-12-01 09:00:00"}},
		{"0 9 * * 7", "2026-11-28 00:00:00", []string{"2026-11-29 09:00:00", "2026-12-06 09:00:00"}}, // 7 is Sunday
		{"0 9 * * sat-sun", "2026-11-28 10:00:00", []string{"2026-11-29 09:00:00", "2026-12-05 09:00:00"}},
		// Both day fields restricted: either may match (Vixie cron).
		{"0 0 1 * mon", "2026-11-28 00:00:00", []string{"2026-11-30 00:00:00", "2026-12-01 00:00:00", "2026-12-07 00:00:00"}},
		// One starts with "*": both must match, so "*/2" restricts days
		// of the month to odd ones that are also Mondays.
		{"0 0 */2 * mon", "2026-11-28 00:00:00", []string{"2026-12-07 00:00:00", "2026-12-21 00:00:00"}},
		{"0 0 13 * fri", "2026-11-28 00:00:00", []string{"2026-12-04 00:00:00", "2026-12-11 00:00:00", "2026-12-13 00:00:00"}},
		{"0 0 29 2 *", "2026-11-28 00:00:00", []string{"2028-02-29 00:00:00", "2032-02-29 00:00:00"}},
		{"0 0 31 * *", "2026-11-28 00:00:00", []string{"2026-12-31 00:00:00", "2027-01-31 00:00:00", "2027-03-31 00:00:00"}},
		{"5/20 * * * *", "2026-11-28 01:00:00", []string{"2026-11-28 01:05:00", "2026-11-28 01:25:00", "2026-11-28 01:45:00", "2026-11-28 02:05:00"}},
		{"@hourly", "2026-11-28 01:21:00", []string{"2026-11-28 02:00:00"}},
		{"@daily", "2026-11-28 01:21:00", []string{"2026-11-29 00:00:00"}},
		{"@weekly", "2026-11-28 01:21:00", []string{"2026-11-29 00:00:00"}},
		{"@monthly", "2026-11-28 01:21:00", []string{"2026-12-01 00:00:00"}},
		{"@YEARLY", "2026-11-28 01:21:00", []string{"2027-01-01 00:00:00"}},
		// Six fields: seconds first.
		{"* * * * * *", "2026-11-28 01:21:30", []string{"2026-11-28 01:21:31", "2026-11-28 01:21:32"}},
		{"*/20 * * * * *", "2026-11-28 01:21:59", []string{"2026-11-28 01:22:00", "2026-11-28 01:22:20"}},
		{"10 0 0 * * *", "2026-12-31 23:59:59", []string{"2027-01-01 00:00:10", "2027-01-02 00:00:10"}},
	} {
		spec, err := Parse(c.cron)
		if err != nil {
			t.Errorf("Parse(%q): %v", c.cron, err)
			continue
		}
		at := utc(t, c.from)
		for i, w := range c.want {
			next, ok := spec.Next(at)
			if !ok || next.Format(time.DateTime) != w {
				t.Errorf("%q firing %d after %s: got %s %v, want %s", c.cron, i+1, c.from, next.Format(time.DateTime), ok, w)
				break
			}
			at = next
		}
	}
}

// The fractional part of the starting time does not make Next return a
// time that is not a whole second, nor the starting second itself.
func TestNextFromFraction(t *testing.T) {
	spec, _ := Parse("* * * * * *")
	from := utc(t, "2026-11-28 01:21:30").Add(400 * time.Millisecond)
	next, _ := spec.Next(from)
	if want := utc(t, "2026-11-28 01:21:31"); !next.Equal(want) {
		t.Fatalf("got %s, want %s", next, want)
	}
}

func TestNextNever(t *testing.T) {
	spec, err := Parse("0 0 30 2 *")
	if err != nil {
		t.Fatal(err)
	}
	if next, ok := spec.Next(utc(t, "2026-11-28 00:00:00")); ok {
		t.Fatalf("February 30 fired at %s", next)
	}
}

// Across daylight-saving changes Next keeps moving forward: a skipped
// wall-clock time does not fire, a repeated one fires once.
func TestNextDaylightSaving(t *testing.T) {
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Skip("no time zone database:", err)
	}
	for _, c := range []struct {
		cron string
		from time.Time
		want []string // in local time with zone abbreviation
	}{
		// 2026-03-08 02:00 EST jumps to 03:00 EDT.
		{"30 2 * * *", time.Date(2026, 3, 7, 12, 0, 0, 0, ny), []string{"2026-03-09 02:30 EDT"}},
		{"*/30 * * * *", time.Date(2026, 3, 8, 1, 0, 0, 0, ny), []string{"2026-03-08 01:30 EST", "2026-03-08 03:00 EDT"}},
		// 2026-11-01 02:00 EDT falls back to 01:00 EST.
		{"30 1 * * *", time.Date(2026, 10, 31, 12, 0, 0, 0, ny), []string{"2026-11-01 01:30 EDT", "2026-11-02 01:30 EST"}},
		{"0 * * * *", time.Date(2026, 11, 1, 0, 30, 0, 0, ny), []string{"2026-11-01 01:00 EDT", "2026-11-01 02:00 EST", "2026-11-01 03:00 EST"}},
	} {
		spec, err := Parse(c.cron)
		if err != nil {
			t.Fatal(err)
		}
		at := c.from
		for i, w := range c.want {
			next, ok := spec.Next(at)
			if got := next.Format("2006-01-02 15:04 MST"); !ok || got != w {
				t.Errorf("%q firing %d after %s: got %s, want %s", c.cron, i+1, c.from, got, w)
				break
			}
			at = next
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ cron, want string }{
		{"", "want 5 fields"},
		{"* * * *", "got 4"},
		{"* * * * * * *", "got 7"},
		{"60 * * * *", "minute field \"60\": 60 is out of range 0-59"},
		{"* 24 * * *", "hour field"},
		{"* * 0 * *", "day of month field \"0\": 0 is out of range 1-31"},
		{"* * * 13 *", "month field"},
		{"* * * * 8", "day of week field"},
		{"* * * foo *", "\"foo\" is neither a number nor a name"},
		{"* * * * monday", "neither a number nor a name"},
		{"*/0 * * * *", "bad step"},
		{"*/x * * * *", "bad step"},
		{"30-10 * * * *", "runs backwards"},
		{"1,,2 * * * *", "\"\" is not a number"},
		{"1- * * * *", "is not a number"},
		{"@reboot", "unknown macro"},
		{"60 * * * * *", "second field"},
	} {
		_, err := Parse(c.cron)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("Parse(%q) = %v, want an error containing %q", c.cron, err, c.want)
		}
	}
}

func TestSpecString(t *testing.T) {
	for in, want := range map[string]string{
		"  */5   *  * * * ": "*/5 * * * *",
		"@daily":            "0 0 * * *",
		"* * * * * *":       "* * * * * *",
	} {
		s, err := Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if s.String() != want {
			t.Errorf("Parse(%q).String() = %q, want %q", in, s.String(), want)
		}
	}
}

// ParseFields agrees with Parse on the same five fields, trims each one,
// and refuses an empty field and one holding two values.
func TestParseFields(t *testing.T) {
	from := utc(t, "2026-11-28 01:21:30")
	for _, f := range [][5]string{
		{"*", "*", "*", "*", "*"},
		{" 30 ", "10", "*", "*", "*"},
		{"0", "9-17", "*", "*", "mon-fri"},
		{"0", "0", "13", "*", "5"},
		{"0", "0", "*/2", "*", "mon"},
		{"*/20", "*", "29", "feb", "*"},
	} {
		got, err := ParseFields(f[0], f[1], f[2], f[3], f[4])
		if err != nil {
			t.Fatalf("ParseFields(%q): %v", f, err)
		}
		want, err := Parse(strings.Join(f[:], " "))
		if err != nil {
			t.Fatal(err)
		}
		if got.String() != want.String() {
			t.Errorf("ParseFields(%q).String() = %q, want %q", f, got.String(), want.String())
		}
		gn, _ := got.Next(from)
		wn, _ := want.Next(from)
		if !gn.Equal(wn) {
			t.Errorf("ParseFields(%q) next %s, Parse next %s", f, gn, wn)
		}
	}
	for _, f := range [][5]string{
		{"", "*", "*", "*", "*"},
		{"1 2", "*", "*", "*", "*"},
		{"60", "*", "*", "*", "*"},
		{"*", "*", "*", "*", "8"},
	} {
		if _, err := ParseFields(f[0], f[1], f[2], f[3], f[4]); err == nil {
			t.Errorf("ParseFields(%q) accepted", f)
		}
	}
}

// Whatever the expression, Parse does not panic, and a spec it accepts
// finds its next firing strictly later, on a whole second, that matches
// again when asked from one second before.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"* * * * *", "*/5 1-3,7 1 jan-mar mon-fri", "0 0 30 2 *", "@daily", "*/7 * * * * *", "5/20 * * * sun"} {
		f.Add(s)
	}
	from := time.Date(2026, 11, 28, 1, 21, 30, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr string) {
		spec, err := Parse(expr)
		if err != nil {
			return
		}
		next, ok := spec.Next(from)
		if !ok {
			return
		}
		if !next.After(from) || next.Nanosecond() != 0 {
			t.Fatalf("%q: next after %s is %s", expr, from, next)
		}
		if again, _ := spec.Next(next.Add(-time.Second)); !again.Equal(next) {
			t.Fatalf("%q: from %s next is %s, from a second earlier %s", expr, from, next, again)
		}
	})
}
