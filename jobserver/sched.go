package jobserver

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// cronSpec is the schedule of a SUBMIT_JOB_SCHED job: minute, hour, day of
// month, month and day of week, each a bit set of the values it allows.
// gearmand 1.1.20 never implemented SCHED; we run the job once, at the
// first minute after submission that matches, in the server's time zone.
type cronSpec struct {
	minute, hour, mday, month, wday uint64
	// mdayAny and wdayAny record "*": cron matches either day field when
	// both are restricted, and only the restricted one otherwise.
	mdayAny, wdayAny bool
}

var cronFields = [5]struct {
	name     string
	min, max int
}{
	{"minute", 0, 59}, {"hour", 0, 23}, {"day of month", 1, 31}, {"month", 1, 12}, {"day of week", 0, 7},
}

// parseCron parses the five fields: "*", "N", "A-B", any of those with
// "/STEP", and comma-separated lists of them. An empty field means "*".
func parseCron(fields [][]byte) (cronSpec, error) {
	var spec cronSpec
	sets := [5]*uint64{&spec.minute, &spec.hour, &spec.mday, &spec.month, &spec.wday}
	for i, raw := range fields {
		f := cronFields[i]
		text := strings.TrimSpace(string(raw))
		if text == "" {
			text = "*"
		}
		if i == 2 {
			spec.mdayAny = text == "*"
		}
		if i == 4 {
			spec.wdayAny = text == "*"
		}
		for _, part := range strings.Split(text, ",") {
			lo, hi, step := f.min, f.max, 1
			rng := part
			if r, s, ok := strings.Cut(part, "/"); ok {
				n, err := strconv.Atoi(s)
				if err != nil || n <= 0 {
					return spec, fmt.Errorf("%s field %q: bad step", f.name, text)
				}
				rng, step = r, n
			}
			if rng != "*" {
				a, b, isRange := strings.Cut(rng, "-")
				var err error
				if lo, err = strconv.Atoi(a); err != nil {
					return spec, fmt.Errorf("%s field %q: not a number", f.name, text)
				}
				hi = lo
				if isRange {
					if hi, err = strconv.Atoi(b); err != nil {
						return spec, fmt.Errorf("%s field %q: not a number", f.name, text)
					}
				} else if step > 1 {
					hi = f.max
				}
				if lo < f.min || hi > f.max || lo > hi {
					return spec, fmt.Errorf("%s field %q: out of range %d-%d", f.name, text, f.min, f.max)
				}
			}
			for v := lo; v <= hi; v += step {
				*sets[i] |= 1 << uint(v)
			}
		}
	}
	if spec.wday&(1<<7) != 0 { // 7 is Sunday too
		spec.wday |= 1
	}
	return spec, nil
}

var errNoMatch = errors.New("no time in the next five years matches")

// next returns the Unix time of the first whole minute after now that
// matches the spec.
func (c cronSpec) next(now time.Time) (int64, error) {
	t := now.Truncate(time.Minute).Add(time.Minute)
	limit := now.AddDate(5, 0, 0)
	for t.Before(limit) {
		switch {
		case c.month&(1<<uint(t.Month())) == 0:
			t = time.Date(t.Year(), t.Month()+1, 1, 0, 0, 0, 0, t.Location())
		case !c.dayMatches(t):
			t = time.Date(t.Year(), t.Month(), t.Day()+1, 0, 0, 0, 0, t.Location())
		case c.hour&(1<<uint(t.Hour())) == 0:
			t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour()+1, 0, 0, 0, t.Location())
		case c.minute&(1<<uint(t.Minute())) == 0:
			t = t.Add(time.Minute)
		default:
			return t.Unix(), nil
		}
	}
	return 0, errNoMatch
}

func (c cronSpec) dayMatches(t time.Time) bool {
	md := c.mday&(1<<uint(t.Day())) != 0
	wd := c.wday&(1<<uint(t.Weekday())) != 0
	switch {
	case c.mdayAny && c.wdayAny:
		return true
	case c.mdayAny:
		return wd
	case c.wdayAny:
		return md
	}
	return md || wd
}
