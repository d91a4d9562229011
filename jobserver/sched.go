package jobserver

import (
	"errors"
	"strings"
	"time"

	"github.com/gearproxy/gearproxy/schedule"
)

// SUBMIT_JOB_SCHED's five cron fields are parsed by package schedule, the
// parser of the [[schedule]] config entries. gearmand 1.1.20 never
// implemented SCHED; we run the job once, at the first minute after
// submission that matches, in the server's time zone.

var errNoMatch = errors.New("no time in the next nine years matches")

// schedNext returns the Unix time of the first whole minute after now that
// matches the five cron fields of a SUBMIT_JOB_SCHED (minute, hour, day of
// month, month, day of week), in now's location. An empty field means "*".
func schedNext(fields [][]byte, now time.Time) (int64, error) {
	var f [5]string
	for i, b := range fields[:5] {
		if f[i] = string(b); strings.TrimSpace(f[i]) == "" {
			f[i] = "*"
		}
	}
	spec, err := schedule.ParseFields(f[0], f[1], f[2], f[3], f[4])
	if err != nil {
		return 0, err
	}
	next, ok := spec.Next(now)
	if !ok {
		return 0, errNoMatch
	}
	return next.Unix(), nil
}
