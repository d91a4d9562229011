package schedule

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Spec is a parsed cron expression: the set of values each field allows,
// one bit per value.
type Spec struct {
	second, minute, hour, mday, month, wday uint64
	// mdayStar and wdayStar record a day field that starts with "*".
	// Vixie cron matches a day when either day field matches if both are
	// restricted, and only the restricted one otherwise; "*/2" counts as
	// unrestricted there too, and so it does here.
	mdayStar, wdayStar bool
	text               string
}

// field describes one cron field: its range and, for months and days of
// the week, the names that stand for numbers.
type field struct {
	name     string
	min, max int
	names    []string // names[i] stands for min+i
	// wrapsToMax: min and max are the same day (Sunday is 0 and 7).
	wrapsToMax bool
}

var (
	secondField = field{name: "second", min: 0, max: 59}
	minuteField = field{name: "minute", min: 0, max: 59}
	hourField   = field{name: "hour", min: 0, max: 23}
	mdayField   = field{name: "day of month", min: 1, max: 31}
	monthField  = field{name: "month", min: 1, max: 12,
		names: []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}}
	// 7 is Sunday as well as 0, as in Vixie cron, so "mon-sun" works.
	wdayField = field{name: "day of week", min: 0, max: 7,
		names: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}, wrapsToMax: true}
)

// macros are the @ shorthands of Vixie cron. @reboot has no meaning for a
// fleet of proxies and is refused.
var macros = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

// Parse reads a cron expression: five fields (minute, hour, day of month,
// month, day of week) as in crontab(5), or six with a leading seconds
// field, or one of the @ macros (@hourly, @daily, @weekly, @monthly,
// @yearly). Each field is "*", a number, a range "A-B", either of those
// with a step "/N", or a comma-separated list of them. Months and days of
// the week may be given by their first three letters in any case.
func Parse(expr string) (*Spec, error) {
	text := strings.TrimSpace(expr)
	if strings.HasPrefix(text, "@") {
		m, ok := macros[strings.ToLower(text)]
		if !ok {
			return nil, fmt.Errorf("cron %q: unknown macro", expr)
		}
		text = m
	}
	fields := strings.Fields(text)
	var second string
	switch len(fields) {
	case 5:
	case 6:
		second, fields = fields[0], fields[1:]
	default:
		return nil, fmt.Errorf("cron %q: want 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first, got %d", expr, len(fields))
	}
	s, err := parseFields(second, fields)
	if err != nil {
		return nil, fmt.Errorf("cron %q: %w", expr, err)
	}
	return s, nil
}

// ParseFields is Parse for the five fields of a cron expression given
// separately (minute, hour, day of month, month, day of week), as
// SUBMIT_JOB_SCHED carries them. Each field has Parse's syntax; spaces
// around a field are ignored, an empty field is an error. The spec fires
// at second 0 of every matching minute.
func ParseFields(minute, hour, dayOfMonth, month, dayOfWeek string) (*Spec, error) {
	fields := []string{minute, hour, dayOfMonth, month, dayOfWeek}
	for i := range fields {
		fields[i] = strings.TrimSpace(fields[i])
	}
	s, err := parseFields("", fields)
	if err != nil {
		return nil, fmt.Errorf("cron %q: %w", strings.Join(fields, " "), err)
	}
	return s, nil
}

// parseFields builds a Spec from an optional seconds field ("" for none:
// second 0 only) and the five fields from minute to day of week.
func parseFields(second string, fields []string) (*Spec, error) {
	text := strings.Join(fields, " ")
	s := &Spec{second: 1, text: text}
	if second != "" {
		v, err := secondField.parse(second)
		if err != nil {
			return nil, err
		}
		s.second = v
		s.text = second + " " + text
	}
	for i, dst := range []*uint64{&s.minute, &s.hour, &s.mday, &s.month, &s.wday} {
		f := [...]field{minuteField, hourField, mdayField, monthField, wdayField}[i]
		v, err := f.parse(fields[i])
		if err != nil {
			return nil, err
		}
		*dst = v
	}
	if s.wday&(1<<7) != 0 {
		s.wday |= 1
	}
	s.mdayStar = strings.HasPrefix(fields[2], "*")
	s.wdayStar = strings.HasPrefix(fields[4], "*")
	return s, nil
}

// String returns the expression in its canonical five- or six-field form.
func (s *Spec) String() string { return s.text }

// parse turns one field into its bit set.
func (f field) parse(text string) (uint64, error) {
	var set uint64
	for _, part := range strings.Split(text, ",") {
		lo, hi, step := f.min, f.max, 1
		rng := part
		if r, st, ok := strings.Cut(part, "/"); ok {
			n, err := strconv.Atoi(st)
			if err != nil || n <= 0 || n > f.max {
				return 0, fmt.Errorf("%s field %q: bad step %q", f.name, text, st)
			}
			rng, step = r, n
		}
		if rng != "*" {
			a, b, isRange := strings.Cut(rng, "-")
			var err error
			if lo, err = f.value(a); err != nil {
				return 0, fmt.Errorf("%s field %q: %w", f.name, text, err)
			}
			hi = lo
			if isRange {
				if hi, err = f.value(b); err != nil {
					return 0, fmt.Errorf("%s field %q: %w", f.name, text, err)
				}
				if f.wrapsToMax && hi == f.min && lo > hi {
					hi = f.max // "fri-sun": Sunday as 7 ends the week
				}
			} else if step > 1 {
				// "N/S" means N, N+S, ... up to the end, as in most crons.
				hi = f.max
			}
			if lo > hi {
				return 0, fmt.Errorf("%s field %q: range %d-%d runs backwards", f.name, text, lo, hi)
			}
		}
		for v := lo; v <= hi; v += step {
			set |= 1 << uint(v)
		}
	}
	return set, nil
}

// value reads one number or name and checks its range.
func (f field) value(s string) (int, error) {
	for i, n := range f.names {
		if strings.EqualFold(s, n) {
			return f.min + i, nil
		}
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		if f.names != nil {
			return 0, fmt.Errorf("%q is neither a number nor a name (%s)", s, strings.Join(f.names, ","))
		}
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if v < f.min || v > f.max {
		return 0, fmt.Errorf("%d is out of range %d-%d", v, f.min, f.max)
	}
	return v, nil
}

// horizon bounds the search for the next firing: long enough for a
// February 29 schedule across a century year that is not a leap year.
const horizon = 9 // years

// Next returns the first time strictly after t that the spec matches, in
// t's location, and false when nothing matches within nine years (such
// as "0 0 30 2 *"). Wall-clock times that a daylight-saving change skips
// do not fire; those it repeats fire the first time only.
func (s *Spec) Next(t time.Time) (time.Time, bool) {
	loc := t.Location()
	// Start at the next whole second; time.Date drops the monotonic
	// reading, so comparisons below are on the wall clock.
	t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), 0, loc).Add(time.Second)
	limit := t.AddDate(horizon, 0, 0)
	for t.Before(limit) {
		switch {
		case s.month&(1<<uint(t.Month())) == 0:
			t = later(t, time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, loc))
		case !s.dayMatches(t):
			t = later(t, time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, loc))
		case s.hour&(1<<uint(t.Hour())) == 0:
			t = later(t, time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, loc))
		case s.minute&(1<<uint(t.Minute())) == 0:
			// Absolute steps from here on: wall-clock arithmetic inside a
			// repeated hour may land earlier than t.
			t = t.Add(time.Duration(60-t.Second()) * time.Second)
		case s.second&(1<<uint(t.Second())) == 0:
			t = t.Add(time.Second)
		default:
			if end, ok := repeated(t); ok {
				t = end
				continue
			}
			return t, true
		}
	}
	return time.Time{}, false
}

// later returns next, or, when a daylight-saving change made wall-clock
// arithmetic go backwards, the next whole hour after t: the search must
// always move forward.
func later(t, next time.Time) time.Time {
	if next.After(t) {
		return next
	}
	return t.Add(time.Hour - time.Duration(t.Minute())*time.Minute - time.Duration(t.Second())*time.Second)
}

// repeated reports whether t's wall-clock time already occurred earlier,
// in the hour that clocks set back for the end of daylight saving time,
// and returns the first instant after that repeated stretch. A firing
// happens once per wall-clock time, so a daily 01:30 job runs once that
// night, not twice.
func repeated(t time.Time) (time.Time, bool) {
	start, _ := t.ZoneBounds()
	if start.IsZero() {
		return t, false
	}
	_, before := start.Add(-time.Second).Zone()
	_, now := t.Zone()
	back := time.Duration(before-now) * time.Second
	if back > 0 && t.Sub(start) < back {
		return start.Add(back), true
	}
	return t, false
}

func (s *Spec) dayMatches(t time.Time) bool {
	md := s.mday&(1<<uint(t.Day())) != 0
	wd := s.wday&(1<<uint(t.Weekday())) != 0
	if s.mdayStar || s.wdayStar {
		return md && wd
	}
	return md || wd
}
