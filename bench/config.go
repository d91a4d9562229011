package bench

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// Mode is the workload a run drives.
type Mode string

const (
	// Foreground submits SUBMIT_JOB and waits for WORK_COMPLETE.
	Foreground Mode = "fg"
	// Background queues SUBMIT_JOB_BG, then drains the queue with workers.
	Background Mode = "bg"
	// Echo sends ECHO_REQ and waits for ECHO_RES.
	Echo Mode = "echo"
)

// UniqueMode says which unique ID each submitted job carries.
type UniqueMode string

const (
	// UniqueRandom gives every job its own unique, as libgearman does by
	// default (it generates a UUID), so nothing coalesces.
	UniqueRandom UniqueMode = "random"
	// UniqueNone sends an empty unique, which never coalesces.
	UniqueNone UniqueMode = "none"
	// UniqueDuplicated makes every client submit the same sequence of
	// uniques with the same payloads, so the server coalesces concurrent
	// submits of a unique into one job. It needs two clients or more to
	// coalesce anything.
	UniqueDuplicated UniqueMode = "duplicated"
)

// Priority is a job priority by name, as the flags spell it.
type Priority string

const (
	PriorityHigh   Priority = "high"
	PriorityNormal Priority = "normal"
	PriorityLow    Priority = "low"
)

// Dialer opens one connection to a job server, ready for Gearman packets.
// A TLS or SASL dialer does its handshake and authentication here, so the
// load logic only ever sees an established stream.
type Dialer func(ctx context.Context, addr string) (net.Conn, error)

// DialTCP is the default Dialer: plain TCP (Go sets TCP_NODELAY, which a
// request/response benchmark needs).
func DialTCP(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// MinPayload is the smallest payload a job carries: its header names the run
// and the job so that every result can be checked. Smaller sizes are raised
// to it.
const MinPayload = headerSize

// Config describes one run. The zero value of a field means its default.
type Config struct {
	// Servers are the job servers' host:port addresses. Client i connects
	// to Servers[i % len(Servers)]; every worker connects to each server,
	// one independent connection per server.
	Servers []string
	// Mode is the workload; default fg.
	Mode Mode
	// Clients is the number of client connections; default 8.
	Clients int
	// Workers is the number of workers; default 4 in fg and bg. In bg,
	// -1 means none: the jobs stay queued (to measure a server's memory
	// per queued job). Echo uses no workers.
	Workers int
	// Pipeline is how many requests each client keeps in flight:
	// unfinished jobs in fg, unacknowledged submits in bg, echoes in echo.
	// Default 8.
	Pipeline int
	// Payload is the job data size in bytes, at least MinPayload;
	// default 100.
	Payload int
	// Jobs is the total number of jobs (or echoes), split evenly over the
	// clients. When neither Jobs nor Duration is set, Jobs is 100000.
	Jobs int
	// Duration bounds a fg or echo run by time instead of by Jobs: clients
	// stop submitting when it passes and wait for what is in flight.
	Duration time.Duration
	// Unique picks the unique IDs; default random.
	Unique UniqueMode
	// Priority picks SUBMIT_JOB, _HIGH or _LOW (and their _BG forms);
	// default normal. (A name, not protocol.Priority, whose zero value is
	// High.)
	Priority Priority
	// Function is the function name; default "gearproxy_bench".
	Function string
	// Timeout ends the run when no job makes progress for this long; the
	// jobs still in flight then count as lost. Dials share it too.
	// Default 10s.
	Timeout time.Duration
	// Dial opens connections; default DialTCP.
	Dial Dialer
}

// Validate reports the first invalid field of c, as Run would, so that a
// command can tell a usage error from a failed run.
func (c Config) Validate() error {
	_, err := c.withDefaults()
	return err
}

// withDefaults returns c with every zero field set to its default, or an
// error naming the first invalid field.
func (c Config) withDefaults() (Config, error) {
	if len(c.Servers) == 0 {
		return c, errors.New("bench: no server address")
	}
	if c.Mode == "" {
		c.Mode = Foreground
	}
	if c.Clients == 0 {
		c.Clients = 8
	}
	if c.Workers == 0 {
		c.Workers = 4
	}
	if c.Pipeline == 0 {
		c.Pipeline = 8
	}
	if c.Payload == 0 {
		c.Payload = 100
	}
	if c.Payload < MinPayload {
		c.Payload = MinPayload
	}
	if c.Jobs == 0 && c.Duration == 0 {
		c.Jobs = 100000
	}
	if c.Unique == "" {
		c.Unique = UniqueRandom
	}
	if c.Priority == "" {
		c.Priority = PriorityNormal
	}
	if c.Function == "" {
		c.Function = "gearproxy_bench"
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
	if c.Dial == nil {
		c.Dial = DialTCP
	}
	switch {
	case c.Mode != Foreground && c.Mode != Background && c.Mode != Echo:
		return c, fmt.Errorf("bench: unknown mode %q (want fg, bg or echo)", c.Mode)
	case c.Unique != UniqueRandom && c.Unique != UniqueNone && c.Unique != UniqueDuplicated:
		return c, fmt.Errorf("bench: unknown unique mode %q (want random, none or duplicated)", c.Unique)
	case c.Priority != PriorityHigh && c.Priority != PriorityNormal && c.Priority != PriorityLow:
		return c, fmt.Errorf("bench: unknown priority %q (want high, normal or low)", c.Priority)
	case c.Clients < 0 || c.Pipeline < 0 || c.Jobs < 0 || c.Duration < 0 || c.Timeout < 0:
		return c, errors.New("bench: clients, pipeline, jobs, duration and timeout must not be negative")
	case c.Workers < -1:
		return c, errors.New("bench: workers must be -1 (none), 0 (default) or more")
	case c.Workers == -1 && c.Mode != Background:
		return c, errors.New("bench: running without workers is only meaningful in bg mode")
	case c.Mode == Background && c.Jobs == 0:
		return c, errors.New("bench: bg mode needs a job count, not a duration")
	case c.Payload > protocol.DefaultMaxData-len(c.Function)-maxUnique-2:
		return c, fmt.Errorf("bench: payload %d bytes is over the packet limit", c.Payload)
	case len(c.Function) > protocol.MaxArg:
		return c, fmt.Errorf("bench: function name is over %d bytes", protocol.MaxArg)
	}
	if c.Jobs > 0 && c.Jobs < c.Clients {
		// Never open a client that has nothing to do.
		c.Clients = c.Jobs
	}
	return c, nil
}

// submitType is the packet a client submits jobs with.
func submitType(m Mode, p Priority) protocol.Type {
	if m == Background {
		switch p {
		case PriorityHigh:
			return protocol.SubmitJobHighBg
		case PriorityLow:
			return protocol.SubmitJobLowBg
		}
		return protocol.SubmitJobBg
	}
	switch p {
	case PriorityHigh:
		return protocol.SubmitJobHigh
	case PriorityLow:
		return protocol.SubmitJobLow
	}
	return protocol.SubmitJob
}
