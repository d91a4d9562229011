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
// Bolt keeps one bbolt file per server, DIR/jobs.db, and in front of it a
// write-ahead log, DIR/jobs.wal.<generation> (format in wal.go). Keys in
// bbolt are job IDs in big-endian, so a cursor walks them in submit order
// and Load hands jobs back FIFO; values are a small versioned binary
// encoding with a CRC-32C (codec.go), because bbolt checksums only its meta
// pages.
//
// All writes go through one committer goroutine. Callers queue their change
// (Adds arrive already encoded) and the committer appends everything queued
// since its last write to the log as one frame, then starts an fdatasync
// that covers it; callers are released, in order, once a sync that began
// after their frame was written has returned. Up to two syncs are in
// flight, so frames written during one sync do not wait for it to end
// before their own begins; under load each sync carries many jobs.
//
// Every 32 MiB, or 10 seconds after its first change, a checkpoint applies
// the log to bbolt in one transaction; a job that was added and ended
// within one log never reaches bbolt. The applied log file is then reused
// for a later generation: overwriting allocated blocks makes each sync
// flush only data. If checkpoints fall a whole log behind, log writes wait
// for them, so the log a crash leaves stays within about 64 MiB.
//
// Why a log and not bbolt alone: a bbolt commit costs two fdatasyncs (data
// pages, then the meta page) plus a rewritten path of pages per change, and
// a pipelining submitter waits for one and a half commits on average; the
// log's frame costs one. Measured with 8 submitters keeping 8 jobs each in
// flight, the log commits in a half to a third of bbolt's time on the same
// disk (BenchmarkAddAsyncParallel). Opening bbolt with NoSync and calling
// Sync once per commit would be as cheap but is not safe: without the sync
// between data and meta page, a power cut can leave a meta page that points
// at pages never written, and the whole file is lost, not its last jobs.
// Here bbolt is only ever written by checkpoints with both syncs.
//
// # Sync modes and what a crash can lose
//
// In every mode Add returns only after the job is written to the log, so a
// crash of the process alone (SIGKILL, OOM, panic) loses nothing that was
// acknowledged. The modes differ in what survives the operating system:
//
//   - SyncAlways (default): the log is fdatasynced before Add returns.
//     Nothing acknowledged is lost, even by a power cut.
//   - SyncBatch: the log is fdatasynced at most every BatchWindow (10 ms by
//     default). An operating-system crash or power cut loses at most the
//     jobs acknowledged in the last BatchWindow.
//   - SyncNone: the log is never synced by the committer; the operating
//     system writes it back when it likes (typically within 30 s on Linux).
//     Checkpoints still sync bbolt, so the file stays intact.
//
// Removals and retry counts never wait: losing one runs a job again, it
// never loses one. Jobs that were running at a crash are still stored and
// are queued again by Load.
//
// # Recovery
//
// Open replays the logs a crash left, in order, into bbolt and deletes
// them; a torn last frame (never acknowledged) and the older frames
// further into a reused file are ignored. Replay applies
// every change, so a log that a checkpoint had already applied before the
// crash is harmless. Load then reads bbolt in chunks of 4096 jobs per read
// transaction, so the server may call Add or Remove from its callback.
//
// # Failure
//
// A file that cannot be opened or read (damaged, another format version,
// not a job store, a log without its store file, no permission) gives an
// error that names the file and the cause; nothing is created over it. A
// failed log write or sync makes the store refuse every later Add (the log
// could hold a torn frame before later ones): the server answers with an
// ERROR instead of a JOB_CREATED it cannot keep. A second process gets a
// *LockedError, "store DIR/jobs.db: locked by pid N": bbolt's flock on
// jobs.db is the lock, and DIR/jobs.pid, written once the lock is held,
// names the holder.
package store
