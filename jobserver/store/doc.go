// Package store persists the bundled job server's background jobs, so that a
// job whose JOB_CREATED reached its client survives a crash or restart.
//
// Store is the contract with the job server: Add before JOB_CREATED, Remove
// when a job ends, SetRetries when it is requeued, Load once at start. A
// networked store (PostgreSQL, say) implements the same interface; the
// optional AsyncAdder and LastIDer let a server pipeline submits and keep
// handles unique across restarts when a store offers them.
//
// # The embedded store
//
// Bolt keeps one bbolt file per server, DIR/jobs.db. Keys are job IDs in
// big-endian, so a cursor walks them in submit order and Load hands jobs
// back FIFO; values are a small versioned binary encoding with a CRC-32C
// (codec.go), because bbolt checksums only its meta pages.
//
// All writes go through one committer goroutine. Callers queue their
// change (Adds arrive already encoded) and the committer turns everything
// queued since its last commit into one bbolt transaction: while one commit
// and its fsyncs are in flight, the next one fills. Under load a single
// sync carries hundreds of jobs, and nobody waits longer than one commit
// plus the one before it. This is safer than opening bbolt with NoSync and
// calling Sync ourselves: without bbolt's own fdatasync between the data
// pages and the meta page, a power cut can leave a meta page that points at
// pages never written, and the file is lost, not just its last jobs.
//
// # Sync modes and what a crash can lose
//
//   - SyncAlways (default): Add returns after the commit holding the job is
//     fsynced. Neither a process crash nor a power cut loses an
//     acknowledged job.
//   - SyncBatch: Add returns at once; the committer commits, fsynced, at
//     most once per BatchWindow. Any crash, even of the process alone,
//     loses the jobs acknowledged in the last BatchWindow plus the time of
//     one commit; the file itself stays intact.
//   - SyncNone: Add returns once its commit is written to the operating
//     system, never fsynced. A process crash loses nothing acknowledged; an
//     operating-system crash or power cut can lose anything since the
//     kernel last wrote back, and can leave the file unreadable (Open then
//     refuses it; it is never silently replaced).
//
// Removals and retry counts never wait: losing one runs a job again, it
// never loses one. Jobs that were running at a crash are simply still in
// the file and are queued again by Load.
//
// # Failure
//
// A file that cannot be opened or read (damaged, another format version,
// not a job store, no permission) gives an error that names the file and
// the cause; nothing is created over it. A second process gets a
// *LockedError, "store DIR/jobs.db: locked by pid N": bbolt's flock is the
// lock, and DIR/jobs.pid, written once the lock is held, names the holder.
package store
