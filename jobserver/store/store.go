package store

import (
	"errors"

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

// ErrNotImplemented is returned until the embedded store lands.
var ErrNotImplemented = errors.New("store: not implemented yet")
