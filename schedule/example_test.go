package schedule_test

import (
	"context"
	"fmt"
	"time"

	"github.com/gearproxy/gearproxy/schedule"
)

func ExampleParse() {
	spec, err := schedule.Parse("30 9 * * mon-fri")
	if err != nil {
		panic(err)
	}
	t := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC) // a Saturday
	for range 3 {
		t, _ = spec.Next(t)
		fmt.Println(t.Format("Mon 2006-01-02 15:04"))
	}
	// Output:
	// Mon 2026-11-30 09:30
	// Tue 2026-12-01 09:30
	// Wed 2026-12-02 09:30
}

// Every instance derives the same unique for the same firing, so the
// backend coalesces their submissions.
func ExampleUnique() {
	fmt.Println(schedule.Unique("nightly-report", time.Date(2026, 11, 29, 3, 0, 0, 0, time.UTC)))
	// Output: sched:nightly-report:1795921200
}

// A Scheduler needs the schedules and a Submitter: gearproxy's own submit
// path, or a client connection.
func ExampleNew() {
	submit := schedule.SubmitterFunc(func(ctx context.Context, job schedule.Job) error {
		fmt.Println("submit", job.Function, job.Unique)
		return nil
	})
	s, err := schedule.New([]schedule.Schedule{{
		Name: "nightly-report", Cron: "0 3 * * *", Function: "reports.build", Payload: []byte("daily"),
	}}, submit, schedule.Options{Location: time.UTC})
	if err != nil {
		panic(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // a real caller runs it until shutdown
	s.Run(ctx)
	fmt.Println(s.States()[0].Cron)
	// Output: 0 3 * * *
}
