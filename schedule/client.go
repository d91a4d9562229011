package schedule

import (
	"context"

	"github.com/gearproxy/gearproxy/client"
)

// ClientSubmitter submits through a Go client connection: for schedules
// run against a job server from outside the proxy, and for tests.
type ClientSubmitter struct{ Client *client.Client }

// SubmitBackground sends the job and waits for JOB_CREATED or an ERROR.
func (c ClientSubmitter) SubmitBackground(ctx context.Context, job Job) error {
	prio := client.Normal
	switch job.Priority {
	case High:
		prio = client.High
	case Low:
		prio = client.Low
	}
	t, err := c.Client.Submit(ctx, client.Job{Function: job.Function, Unique: job.Unique, Data: job.Data,
		Priority: prio, Background: true}, nil)
	if err != nil {
		return err
	}
	_, err = t.Wait(ctx)
	return err
}
