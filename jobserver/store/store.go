package store

import (
	"fmt"

	"github.com/gearproxy/gearproxy/protocol"
)

// Job is a background job as persisted: everything needed to queue it again
// after a restart exactly as it was.
type Job struct {
	// ID is the server's job number. It orders jobs (FIFO within a
	// priority after recovery) and is the counter inside the job's handle,
	// so a restarted server continues numbering after the largest ID.
	ID       uint64
	Function string
	Unique   string
	Data     []byte
	Priority protocol.Priority
	// Reducer is the reducer function of a reduce job, or empty.
	Reducer string
	// When is the Unix time (seconds) an epoch or SCHED job falls due, or
	// zero for a job that runs as soon as a worker asks.
	When int64
	// Sched holds a SCHED job's five cron fields ("min hour mday mon wday"),
	// or is empty.
	Sched string
	// Retries counts how often the job was handed to a worker that
	// disconnected or timed out.
	Retries uint32
}

// Store keeps background jobs durable. The job server calls Add before it
// sends JOB_CREATED, Remove when a job ends (WORK_COMPLETE, WORK_FAIL,
// WORK_EXCEPTION, cancel job, retry limit) and Load once at start.
// Implementations must be safe for concurrent use; concurrent Adds should
// share one commit.
type Store interface {
	// Add returns once the job is as durable as the store's sync mode
	// promises.
	Add(job *Job) error
	// Remove forgets ended jobs. It may return before the removal is on
	// disk: losing a removal re-runs a job, it never loses one.
	Remove(ids ...uint64) error
	// SetRetries records a job's retry count when it is requeued.
	SetRetries(id uint64, retries uint32) error
	// Load calls fn for every stored job in ascending ID order.
	Load(fn func(*Job) error) error
	// Close flushes and releases the store.
	Close() error
}

// SyncMode says when Add's data reaches stable storage.
type SyncMode int

const (
	// SyncAlways makes Add return only after an fsync (shared by
	// concurrent Adds).
	SyncAlways SyncMode = iota
	// SyncBatch fsyncs at most every BatchWindow; a crash may lose the
	// jobs acknowledged in the last window.
	SyncBatch
	// SyncNone leaves flushing to the operating system.
	SyncNone
)

// String returns the mode as written in configuration: always, batch, none.
func (m SyncMode) String() string {
	switch m {
	case SyncAlways:
		return "always"
	case SyncBatch:
		return "batch"
	case SyncNone:
		return "none"
	}
	return fmt.Sprintf("SyncMode(%d)", int(m))
}

// ParseSyncMode reads a sync mode as written in configuration or on the
// command line (-sync always|batch|none).
func ParseSyncMode(s string) (SyncMode, error) {
	switch s {
	case "always", "":
		return SyncAlways, nil
	case "batch":
		return SyncBatch, nil
	case "none":
		return SyncNone, nil
	}
	return 0, fmt.Errorf("store: unknown sync mode %q (want always, batch or none)", s)
}

// AsyncAdder is an optional extension of Store for a server that pipelines:
// it hands a job over without waiting and keeps reading the connection,
// then sends JOB_CREATED from done. A server with only blocking Adds can
// have at most one job per connection in each commit; with AddAsync a
// pipelining client fills a commit on its own.
type AsyncAdder interface {
	// AddAsync queues job and calls done once the job is as durable as Add
	// would have made it, with Add's error. Calls to done come in the
	// order of the AddAsync calls, from a goroutine of the store (or from
	// AddAsync itself, before it returns, when the store is closed); done
	// must not block or call Add, but may call Remove and SetRetries. The
	// store does not keep job after AddAsync returns.
	AddAsync(job *Job, done func(error))
}

// LastIDer is an optional extension of Store: the largest job ID ever
// added, persisted, so that a restarted server never reuses a handle even
// when every job had ended before the restart.
type LastIDer interface {
	LastID() uint64
}
