package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	bolterrors "go.etcd.io/bbolt/errors"
)

// Names inside the data directory.
const (
	// FileName is the store's database file.
	FileName = "jobs.db"
	// pidFileName names the process that holds the store, so that a second
	// process can say who it is blocked by.
	pidFileName = "jobs.pid"
)

// Defaults for Options.
const (
	DefaultBatchWindow        = 10 * time.Millisecond
	DefaultLockTimeout        = 200 * time.Millisecond
	DefaultMaxPending         = 1 << 16
	DefaultCheckpointBytes    = 32 << 20
	DefaultCheckpointInterval = 10 * time.Second
)

// formatVersion is the layout of buckets and keys; valueVersion (codec.go)
// is the layout of one job.
const formatVersion = 1

var (
	bucketJobs = []byte("jobs")
	bucketMeta = []byte("meta")
	keyFormat  = []byte("format")
	keyLastID  = []byte("last-id")
)

// ErrClosed is returned by calls on a closed store.
var ErrClosed = errors.New("store: closed")

// Options configure the embedded store.
type Options struct {
	// Sync says when Add returns (see SyncMode). The zero value is
	// SyncAlways.
	Sync SyncMode
	// BatchWindow is how often SyncBatch syncs the log: an operating
	// system crash or power cut loses at most the jobs acknowledged in the
	// last BatchWindow. Zero means DefaultBatchWindow.
	BatchWindow time.Duration
	// CheckpointBytes and CheckpointInterval say when the write-ahead log
	// is applied to the bbolt file and started afresh: once it holds this
	// many bytes, or this long after its first change. They bound the log
	// replayed at Open. Zero means the defaults.
	CheckpointBytes    int64
	CheckpointInterval time.Duration
	// LockTimeout is how long Open waits for another holder of the file
	// before it fails with a *LockedError. Zero means DefaultLockTimeout.
	LockTimeout time.Duration
	// MaxPending bounds the operations queued for the next commit; past it
	// Add and AddAsync wait for the committer. It bounds memory when the
	// disk is slower than the submitters. Zero means DefaultMaxPending.
	MaxPending int
	// Logger receives commit failures and the recovery summary. Nil
	// discards them.
	Logger *slog.Logger

	// beforeCommit, when set by a test, runs in the committer before each
	// log write with the number of ops it carries.
	beforeCommit func(ops int)
}

func (o Options) withDefaults() (Options, error) {
	switch o.Sync {
	case SyncAlways, SyncBatch, SyncNone:
	default:
		return o, fmt.Errorf("store: invalid sync mode %d", int(o.Sync))
	}
	if o.BatchWindow <= 0 {
		o.BatchWindow = DefaultBatchWindow
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = DefaultLockTimeout
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.CheckpointBytes <= 0 {
		o.CheckpointBytes = DefaultCheckpointBytes
	}
	if o.CheckpointInterval <= 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// LockedError says that another process (or another Bolt in this one)
// holds the store.
type LockedError struct {
	Path string
	// PID is the holder's process ID, or 0 when it could not be learned.
	PID int
}

func (e *LockedError) Error() string {
	switch {
	case e.PID == 0:
		return fmt.Sprintf("store %s: locked by another process (pid unknown)", e.Path)
	case e.PID == os.Getpid():
		return fmt.Sprintf("store %s: locked by pid %d (this process has it open already)", e.Path, e.PID)
	}
	return fmt.Sprintf("store %s: locked by pid %d", e.Path, e.PID)
}

// Stats counts what the store has done since Open.
type Stats struct {
	// Commits is the number of group writes to the log.
	Commits uint64
	// Syncs is the number of fdatasyncs of the log.
	Syncs uint64
	// Checkpoints is the number of logs applied to the bbolt file (each
	// one transaction, fsynced by bbolt).
	Checkpoints uint64
	// Added counts jobs written; Removed counts removals asked for.
	Added, Removed uint64
	// CommitTime is the time spent writing and syncing the log.
	CommitTime time.Duration
}

type opKind uint8

const (
	opAdd opKind = iota
	opRemove
	opRetries
)

// op is one queued change. Adds arrive encoded, so the work of encoding is
// spread over the submitting goroutines and the committer only copies.
type op struct {
	kind    opKind
	id      uint64
	retries uint32
	val     []byte
	ids     []uint64
	done    func(error)
}

// group is the set of blocking Adds that share one commit.
type group struct {
	done chan struct{}
	err  error
}

// Bolt is the embedded store: a bbolt file holding the jobs as of the last
// checkpoint, and a write-ahead log holding every change since (wal.go).
// One committer goroutine writes everything queued since its last write as
// one frame of the log with one sync: a submitter pays for a sync only
// while the previous one is in flight, so under load each fdatasync
// carries many jobs. A second goroutine applies full logs to bbolt.
type Bolt struct {
	dir     string
	path    string
	pidPath string
	db      *bolt.DB
	opts    Options
	log     *slog.Logger

	mu      sync.Mutex
	room    sync.Cond // signalled when pending shrinks, for MaxPending
	pending []op
	spare   []op
	group   *group
	closed  bool
	wake    chan struct{}
	quit    chan struct{}
	stopped chan struct{}

	// Owned by the committer goroutine.
	wal       *os.File
	walGen    uint64
	walSize   int64
	walBuf    []byte
	unsynced  bool      // written to the log since its last sync
	lastSync  time.Time // of the log, for SyncBatch
	ckptOps   []op      // changes in the logs, not yet in bbolt
	ckptGens  []uint64  // logs whose changes are all in ckptOps
	ckptSince time.Time // when ckptOps got its first change
	broken    error     // a log write or sync failed: nothing more is taken
	clean     bool      // everything reached bbolt before the committer ended
	written   uint64    // frames written to the log since Open
	durable   uint64    // frames known to be synced
	syncing   int       // fdatasyncs in flight
	syncStart uint64    // frames written when the newest sync started
	waiting   []frame   // written frames whose callers are not released yet
	syncDone  chan syncResult

	nextLog  *logFile        // the next log, made ready by the last checkpoint
	ckptReq  chan chan error // Load asks for everything to be in bbolt
	ckptDone chan ckptResult // from the checkpoint goroutine

	lastID  atomic.Uint64
	commits atomic.Uint64
	syncs   atomic.Uint64
	ckpts   atomic.Uint64
	added   atomic.Uint64
	removed atomic.Uint64
	commitT atomic.Int64 // nanoseconds

	closeOnce sync.Once
	closeErr  error
}

var (
	_ Store      = (*Bolt)(nil)
	_ AsyncAdder = (*Bolt)(nil)
	_ LastIDer   = (*Bolt)(nil)
)

// Open opens or creates the store in dir (creating dir if needed). It fails
// with an error naming the file and the cause when the file cannot be
// opened, is not a store, has another format version or is held by another
// process (*LockedError); it never replaces an existing file.
func Open(dir string, opts Options) (*Bolt, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(dir, FileName)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("store %s: create directory: %w", path, err)
	}
	db, err := openBolt(path, opts)
	if errors.Is(err, bolterrors.ErrTimeout) {
		return nil, &LockedError{Path: path, PID: lockHolder(filepath.Join(dir, pidFileName), opts.LockTimeout)}
	}
	if err != nil {
		return nil, fmt.Errorf("store %s: open: %w", path, unwrapPath(err))
	}
	b := &Bolt{
		dir:      dir,
		path:     path,
		pidPath:  filepath.Join(dir, pidFileName),
		db:       db,
		opts:     opts,
		log:      opts.Logger.With("store", path),
		group:    &group{done: make(chan struct{})},
		wake:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		stopped:  make(chan struct{}),
		ckptReq:  make(chan chan error),
		ckptDone: make(chan ckptResult, 1),
		syncDone: make(chan syncResult, maxSyncs),
	}
	b.room.L = &b.mu
	fresh, err := b.init()
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	if err := b.recover(fresh); err != nil {
		_ = db.Close()
		return nil, err
	}
	// The pid file is written only once the lock is ours: it is a label
	// for the error another process prints, not the lock itself.
	if err := os.WriteFile(b.pidPath, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o600); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store %s: write pid file: %w", path, err)
	}
	if b.wal, err = createWAL(dir, b.walGen, initialLogSize); err != nil {
		_ = db.Close()
		removePidFile(b.pidPath)
		return nil, fmt.Errorf("store %s: create write-ahead log: %w", path, unwrapPath(err))
	}
	b.walSize = walHeaderSize
	go b.run()
	return b, nil
}

// openBolt opens the file. bbolt panics on some kinds of damage instead of
// returning an error; a damaged file must become an error that names it.
func openBolt(path string, opts Options) (db *bolt.DB, err error) {
	defer func() {
		if p := recover(); p != nil {
			db, err = nil, fmt.Errorf("damaged file: %v", p)
		}
	}()
	return bolt.Open(path, 0o600, &bolt.Options{
		Timeout: opts.LockTimeout,
		// Map a large range up front: bbolt otherwise remaps as the file
		// grows, copying every node of the transaction out of the old
		// mapping (a third of a large checkpoint's time, measured). It is
		// address space, not memory.
		InitialMmapSize: initialMmapSize,
		// Every job is deleted soon after it is written, so the file
		// fragments; the hashmap freelist stays fast where the array one
		// degrades (bbolt's own advice).
		FreelistType: bolt.FreelistMapType,
	})
}

// unwrapPath drops the *fs.PathError wrapper, whose path our message
// already carries.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Op, pe.Err)
	}
	return err
}

// init checks that an existing file is a store this build can read, or
// creates the buckets of a new one. Checking writes nothing, so a store
// that then fails to load is left exactly as it was found.
func (b *Bolt) init() (fresh bool, err error) {
	empty := false
	err = b.db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			var other []string
			_ = tx.ForEach(func(name []byte, _ *bolt.Bucket) error {
				other = append(other, string(name))
				return nil
			})
			if len(other) > 0 {
				return fmt.Errorf("not a gearproxy job store (it has buckets %q and no %q)", other, bucketMeta)
			}
			empty = true
			return nil
		}
		v := meta.Get(keyFormat)
		if len(v) != 4 {
			return fmt.Errorf("not a gearproxy job store (format key is %d bytes)", len(v))
		}
		if f := binary.BigEndian.Uint32(v); f != formatVersion {
			return fmt.Errorf("store format version %d, this build reads version %d", f, formatVersion)
		}
		if tx.Bucket(bucketJobs) == nil {
			return fmt.Errorf("damaged store: bucket %q is missing", bucketJobs)
		}
		if v := meta.Get(keyLastID); len(v) == 8 {
			b.lastID.Store(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	if err != nil || !empty {
		return false, err
	}
	return true, b.db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucket(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucket(bucketJobs); err != nil {
			return err
		}
		return meta.Put(keyFormat, binary.BigEndian.AppendUint32(nil, formatVersion))
	})
}

// recover applies the logs a crash left behind to bbolt, deletes them, and
// picks the next log generation. A store file that was just created cannot
// have logs: they would extend a file that is gone.
func (b *Bolt) recover(fresh bool) error {
	gens, err := listWAL(b.dir)
	if err != nil {
		return fmt.Errorf("store %s: %w", b.path, err)
	}
	if len(gens) == 0 {
		b.walGen = 1
		return nil
	}
	if fresh {
		return fmt.Errorf("store %s: the file is missing but its write-ahead log %s is there: refusing to start without the jobs it extends",
			b.path, walPath(b.dir, gens[0]))
	}
	var ops []op
	for _, gen := range gens {
		path := walPath(b.dir, gen)
		got, end, err := readWAL(path, gen)
		if err != nil {
			return fmt.Errorf("store %s: %w", path, unwrapPath(err))
		}
		b.log.Info("replaying write-ahead log", "log", path, "changes", len(got), "bytes", end)
		ops = append(ops, got...)
	}
	// No cancelling here: a log may already be partly in bbolt (the crash
	// came between a checkpoint and the deletion of its log), and only
	// replaying every change in order is right in both cases.
	if err := b.apply(ops, false); err != nil {
		return fmt.Errorf("store %s: replay write-ahead log: %w", b.path, err)
	}
	for _, gen := range gens {
		if err := os.Remove(walPath(b.dir, gen)); err != nil {
			return fmt.Errorf("store %s: %w", b.path, err)
		}
	}
	if err := syncDir(b.dir); err != nil {
		return fmt.Errorf("store %s: sync directory: %w", b.path, err)
	}
	b.log.Info("replayed write-ahead log", "logs", len(gens), "changes", len(ops))
	b.walGen = gens[len(gens)-1] + 1
	return nil
}

// Path returns the database file.
func (b *Bolt) Path() string { return b.path }

// LastID returns the largest job ID ever added to this file.
func (b *Bolt) LastID() uint64 { return b.lastID.Load() }

// Stats returns counters since Open.
func (b *Bolt) Stats() Stats {
	return Stats{Commits: b.commits.Load(), Syncs: b.syncs.Load(), Checkpoints: b.ckpts.Load(),
		Added: b.added.Load(), Removed: b.removed.Load(), CommitTime: time.Duration(b.commitT.Load())}
}

// enqueue queues o and returns the group it commits with. An Add waits
// while MaxPending ops are queued; removals and retry counts never wait,
// because a server may well remove a job from the done callback of
// another, which runs on the committer: waiting there for the committer
// would never end.
func (b *Bolt) enqueue(o op) (*group, error) {
	b.mu.Lock()
	for o.kind == opAdd && len(b.pending) >= b.opts.MaxPending && !b.closed {
		b.room.Wait()
	}
	if b.closed {
		b.mu.Unlock()
		return nil, ErrClosed
	}
	b.pending = append(b.pending, o)
	g := b.group
	first := len(b.pending) == 1
	b.mu.Unlock()
	if first {
		select {
		case b.wake <- struct{}{}:
		default:
		}
	}
	return g, nil
}

// Add queues job and waits until the log holds it: written and synced
// with SyncAlways, written to the operating system with SyncBatch and
// SyncNone.
func (b *Bolt) Add(job *Job) error {
	g, err := b.enqueue(op{kind: opAdd, id: job.ID, val: appendValue(make([]byte, 0, valueSize(job)), job)})
	if err != nil {
		return err
	}
	<-g.done
	return g.err
}

// AddAsync is Add without the wait; see AsyncAdder.
func (b *Bolt) AddAsync(job *Job, done func(error)) {
	o := op{kind: opAdd, id: job.ID, val: appendValue(make([]byte, 0, valueSize(job)), job), done: done}
	if _, err := b.enqueue(o); err != nil {
		done(err)
	}
}

// Remove queues the deletion of jobs and returns without waiting: a removal
// lost in a crash only runs the job again.
func (b *Bolt) Remove(ids ...uint64) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := b.enqueue(op{kind: opRemove, ids: append([]uint64(nil), ids...)})
	return err
}

// SetRetries queues an update of a job's retry count, without waiting. A
// job that is no longer stored is ignored.
func (b *Bolt) SetRetries(id uint64, retries uint32) error {
	_, err := b.enqueue(op{kind: opRetries, id: id, retries: retries})
	return err
}

// initialLogSize is how much of a new log is preallocated; later logs are
// recycled ones and have the size their predecessors grew to.
const initialLogSize = 4 << 20

// ckptResult is what the checkpoint goroutine reports back.
type ckptResult struct {
	ops   []op
	gens  []uint64
	err   error
	spare *logFile // the next log, or nil
}

// run is the committer: the only goroutine that writes the log, and the
// one that decides when a checkpoint runs. It loops: write what is queued,
// sync if the mode says so, start a checkpoint if one is due, then sleep
// until something is queued, a checkpoint ends or a deadline passes.
func (b *Bolt) run() {
	defer close(b.stopped)
	// Before the log is closed: its syncs in flight use the descriptor.
	defer b.drainSyncs()
	var (
		busy    bool         // a checkpoint is running
		waiters []chan error // Load calls waiting for everything in bbolt
		retryAt time.Time    // no checkpoint before this, after one failed
		timer   = time.NewTimer(time.Hour)
	)
	defer timer.Stop()
	b.lastSync, b.ckptSince = time.Now(), time.Now()
	for {
		if busy && b.walSize >= b.opts.CheckpointBytes {
			// The checkpoint is behind the submitters: wait for it
			// before writing more, so that the logs a crash leaves, and
			// the replay at Open, stay within about two CheckpointBytes.
			busy = false
			if !b.checkpointed(<-b.ckptDone, &waiters) {
				retryAt = time.Now().Add(time.Second)
				b.mu.Lock()
				closing := b.closed
				b.mu.Unlock()
				if closing {
					return
				}
			}
		}
		b.mu.Lock()
		ops, g := b.pending, b.group
		if len(ops) > 0 {
			b.pending, b.spare = b.spare[:0], nil
			b.group = &group{done: make(chan struct{})}
			b.room.Broadcast()
		}
		closing := b.closed
		b.mu.Unlock()

		if len(ops) > 0 {
			err := b.write(ops, g)
			b.written++
			b.waiting = append(b.waiting, frame{seq: b.written, g: g, ops: ops, err: err})
			switch {
			case b.opts.Sync == SyncAlways && err == nil && !hasAdd(ops) && b.durable == b.written-1:
				// Only removals and retry counts, behind nothing that
				// waits for a sync: nobody waits on them (a removal lost
				// in a crash runs a job again, it never loses one), so
				// they ride on the next sync instead of costing one
				// each; a drain would otherwise fdatasync every frame.
				// Close syncs them (unsynced is set by write).
				b.durable = b.written
				b.release()
			case b.opts.Sync == SyncAlways && err == nil:
				b.startSync()
			default:
				// Batch and none wait for the write only.
				b.durable = b.written
				b.release()
			}
		}
		now := time.Now()
		if b.unsynced && b.broken == nil && b.syncing == 0 && (closing || now.Sub(b.lastSync) >= b.opts.BatchWindow && b.opts.Sync == SyncBatch) {
			b.syncLog()
			b.release()
		}
		if !busy && len(b.ckptOps) > 0 && b.broken == nil && (closing || !now.Before(retryAt)) &&
			(closing || len(waiters) > 0 || b.walSize >= b.opts.CheckpointBytes || now.Sub(b.ckptSince) >= b.opts.CheckpointInterval) {
			b.drainSyncs() // rotate closes the log they sync
			if err := b.rotate(); err != nil {
				b.log.Error("checkpoint: cannot start a new write-ahead log", "err", err)
				retryAt = now.Add(time.Second)
				for _, w := range waiters {
					w <- err
				}
				waiters = nil
				if closing {
					return
				}
			} else {
				busy = true
				ops, gens := b.ckptOps, b.ckptGens
				b.ckptOps, b.ckptGens, b.ckptSince = nil, nil, now
				// The checkpoint also turns the log it applied into the
				// log after the one just started, so that the next
				// rotation finds its blocks allocated.
				next := b.walGen + 1
				if closing {
					next = 0
				}
				go func() { b.ckptDone <- b.checkpoint(ops, gens, next) }()
			}
		}
		if !busy && (len(b.ckptOps) == 0 || b.broken != nil) {
			// Everything is in bbolt, or nothing more will be: a broken
			// log takes no checkpoint, and Load must not wait for one.
			for _, w := range waiters {
				w <- b.broken
			}
			waiters = nil
		}
		if closing && !busy {
			b.mu.Lock()
			idle := len(b.pending) == 0
			b.mu.Unlock()
			if idle && (len(b.ckptOps) == 0 || b.broken != nil) {
				b.clean = len(b.ckptOps) == 0 && len(b.ckptGens) == 0 && b.broken == nil
				return
			}
		}

		// Sleep until the next thing to do.
		wait := time.Hour
		if b.unsynced && b.opts.Sync == SyncBatch {
			wait = min(wait, time.Until(b.lastSync.Add(b.opts.BatchWindow)))
		}
		if len(b.ckptOps) > 0 && !busy && b.broken == nil {
			due := b.ckptSince.Add(b.opts.CheckpointInterval)
			if retryAt.After(due) {
				due = retryAt
			}
			wait = min(wait, time.Until(due))
		}
		if wait <= 0 {
			continue
		}
		timer.Reset(wait)
		quit := b.quit
		if closing {
			quit = nil // closed: it would fire forever
		}
		select {
		case <-b.wake:
		case <-quit:
		case <-timer.C:
		case w := <-b.ckptReq:
			waiters = append(waiters, w)
		case r := <-b.syncDone:
			b.synced(r)
			b.startSync()
		case r := <-b.ckptDone:
			busy = false
			if !b.checkpointed(r, &waiters) {
				if closing {
					return
				}
				retryAt = time.Now().Add(time.Second)
			}
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}

// checkpointed takes the result of a checkpoint and reports whether it
// succeeded. A failed one leaves its changes in their logs; they are kept,
// in order, for the next try, and Load calls waiting on it get the error.
func (b *Bolt) checkpointed(r ckptResult, waiters *[]chan error) bool {
	b.nextLog = r.spare
	if r.err == nil {
		b.ckpts.Add(1)
		return true
	}
	b.log.Error("checkpoint failed; the write-ahead log keeps the jobs", "err", r.err)
	b.ckptOps = append(r.ops, b.ckptOps...)
	b.ckptGens = append(r.gens, b.ckptGens...)
	for _, w := range *waiters {
		w <- r.err
	}
	*waiters = nil
	return false
}

// write appends ops to the log as one frame; the caller syncs it and
// releases its callers. After a failed write or sync the log cannot be
// trusted (a later frame could follow a torn one), so the store refuses
// every later change.
func (b *Bolt) write(ops []op, g *group) error {
	if b.opts.beforeCommit != nil {
		b.opts.beforeCommit(len(ops))
	}
	start := time.Now()
	err := b.broken
	if err == nil {
		b.walBuf = appendFrame(b.walBuf[:0], b.walGen, ops)
		size := int64(len(b.walBuf))
		// WriteAt: the file is preallocated, its size is not the end.
		if _, err = b.wal.WriteAt(b.walBuf, b.walSize); err == nil {
			b.walSize += size
			b.unsynced = true
		}
		if err != nil && b.broken == nil {
			b.broken = fmt.Errorf("store %s: write-ahead log: %w", walPath(b.dir, b.walGen), err)
		}
		err = b.broken
		if cap(b.walBuf) > 4<<20 {
			b.walBuf = nil // one burst of big jobs should not pin the memory
		}
	}
	if err == nil {
		if len(b.ckptOps) == 0 {
			b.ckptSince = start
		}
		var last uint64
		var added, removed uint64
		for i := range ops {
			o := ops[i]
			o.done = nil
			b.ckptOps = append(b.ckptOps, o)
			switch o.kind {
			case opAdd:
				added++
				last = max(last, o.id)
			case opRemove:
				removed += uint64(len(o.ids))
			}
		}
		b.raiseLastID(last)
		b.added.Add(added)
		b.removed.Add(removed)
		b.commits.Add(1)
	} else {
		b.log.Error("write-ahead log failed; refusing new jobs", "err", err)
	}
	b.commitT.Add(int64(time.Since(start)))
	return err
}

// maxSyncs is how many fdatasyncs of the log may be in flight. A sync
// covers every frame written before it started; with two, the frames
// written while one is in flight need not wait for it to end before their
// own starts. On a busy shared disk two overlap well (measured: a sync
// every 150 µs instead of 400 µs); on an idle one they cost nothing.
const maxSyncs = 2

// frame is a written frame whose callers wait for it to be durable.
type frame struct {
	seq uint64
	g   *group
	ops []op
	err error
}

type syncResult struct {
	seq  uint64 // frames written when the sync started: all now durable
	err  error
	took time.Duration
}

// hasAdd reports whether a frame holds an Add, the only change a caller
// waits to be durable.
func hasAdd(ops []op) bool {
	for i := range ops {
		if ops[i].kind == opAdd {
			return true
		}
	}
	return false
}

// startSync starts an fdatasync of the log if frames wait for one and
// fewer than maxSyncs are in flight.
func (b *Bolt) startSync() {
	if b.syncing >= maxSyncs || b.syncStart >= b.written || b.broken != nil {
		return
	}
	b.syncing++
	b.syncStart = b.written
	seq, f := b.written, b.wal
	go func() {
		start := time.Now()
		err := fdatasync(f)
		b.syncDone <- syncResult{seq: seq, err: err, took: time.Since(start)}
	}()
}

// synced takes the result of a sync and releases the frames it made
// durable, or fails every frame not yet durable.
func (b *Bolt) synced(r syncResult) {
	b.syncing--
	b.commitT.Add(int64(r.took))
	if r.err != nil {
		if b.broken == nil {
			b.broken = fmt.Errorf("store %s: sync write-ahead log: %w", walPath(b.dir, b.walGen), r.err)
			b.log.Error("write-ahead log failed; refusing new jobs", "err", b.broken)
		}
		for i := range b.waiting {
			if b.waiting[i].seq > b.durable {
				b.waiting[i].err = b.broken
			}
		}
	} else {
		b.syncs.Add(1)
		b.lastSync = time.Now()
		b.durable = max(b.durable, r.seq)
		b.unsynced = b.durable < b.written
	}
	b.release()
}

// release answers, in order, the callers of every frame that is durable or
// failed.
func (b *Bolt) release() {
	n := 0
	for _, f := range b.waiting {
		if f.seq > b.durable && f.err == nil {
			break
		}
		f.g.err = f.err
		close(f.g.done)
		for i := range f.ops {
			if f.ops[i].done != nil {
				f.ops[i].done(f.err)
			}
		}
		clear(f.ops)
		b.mu.Lock()
		if b.spare == nil && cap(f.ops) <= 4*b.opts.MaxPending {
			b.spare = f.ops[:0]
		}
		b.mu.Unlock()
		n++
	}
	b.waiting = append(b.waiting[:0], b.waiting[n:]...)
}

// drainSyncs waits for the syncs in flight, then syncs what they did not
// cover, and releases every waiting frame.
func (b *Bolt) drainSyncs() {
	for b.syncing > 0 {
		b.synced(<-b.syncDone)
	}
	if b.unsynced && b.broken == nil {
		b.syncLog()
	}
	if b.broken != nil {
		for i := range b.waiting {
			if b.waiting[i].seq > b.durable {
				b.waiting[i].err = b.broken
			}
		}
	}
	b.release()
}

// syncLog fdatasyncs the log.
func (b *Bolt) syncLog() error {
	err := fdatasync(b.wal)
	b.lastSync = time.Now()
	if err != nil {
		if b.broken == nil {
			b.broken = fmt.Errorf("store %s: sync write-ahead log: %w", walPath(b.dir, b.walGen), err)
		}
		return b.broken
	}
	b.unsynced = false
	b.durable = b.written
	b.syncs.Add(1)
	return nil
}

// rotate closes the current log, after a sync, and starts the next one;
// the closed log's changes are then what a checkpoint applies.
func (b *Bolt) rotate() error {
	if b.unsynced {
		// The checkpoint deletes the log once bbolt has its changes,
		// but until then it is their only copy.
		if err := b.syncLog(); err != nil {
			return err
		}
	}
	var f *os.File
	if sp := b.nextLog; sp != nil && sp.gen == b.walGen+1 {
		f, b.nextLog = sp.f, nil
	} else {
		var err error
		if f, err = createWAL(b.dir, b.walGen+1, initialLogSize); err != nil {
			return err
		}
	}
	if err := b.wal.Close(); err != nil {
		b.log.Warn("closing a write-ahead log", "err", err)
	}
	b.ckptGens = append(b.ckptGens, b.walGen)
	b.wal, b.walGen, b.walSize = f, b.walGen+1, walHeaderSize
	return nil
}

// checkpoint applies ops to bbolt, then recycles the last log that held
// them as generation next (unless next is 0) and deletes the others.
func (b *Bolt) checkpoint(ops []op, gens []uint64, next uint64) ckptResult {
	r := ckptResult{ops: ops, gens: gens, err: b.apply(ops, true)}
	if r.err != nil {
		return r
	}
	last := len(gens) - 1
	if next != 0 {
		if f, err := recycleWAL(b.dir, gens[last], next); err == nil {
			r.spare = &logFile{f: f, gen: next}
			gens = gens[:last]
		} else {
			b.log.Warn("checkpoint: cannot recycle an applied log", "err", err)
		}
	}
	for _, gen := range gens {
		if err := os.Remove(walPath(b.dir, gen)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// bbolt has the changes; replaying them is harmless.
			b.log.Warn("checkpoint: cannot delete an applied log", "err", err)
		}
	}
	return r
}

// checkpointAll returns once every change made so far is in bbolt.
func (b *Bolt) checkpointAll() error {
	w := make(chan error, 1)
	select {
	case b.ckptReq <- w:
		return <-w
	case <-b.stopped:
		return ErrClosed
	}
}

// apply writes ops, in order, to bbolt in one transaction. With cancel,
// a job added and removed within ops is skipped altogether, which is most
// jobs of a busy queue; replay at Open must not cancel (see recover).
func (b *Bolt) apply(ops []op, cancel bool) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("damaged file: %v", p)
		}
	}()
	var gone map[uint64]bool
	if cancel {
		added := map[uint64]bool{}
		gone = map[uint64]bool{}
		for i := range ops {
			switch o := &ops[i]; o.kind {
			case opAdd:
				added[o.id] = true
			case opRemove:
				for _, id := range o.ids {
					if added[id] {
						gone[id] = true
					}
				}
			}
		}
	}
	nkeys := 0
	for i := range ops {
		if ops[i].kind == opRemove {
			nkeys += len(ops[i].ids)
		} else {
			nkeys++
		}
	}
	// bbolt keeps the key slices until the commit: they cannot share one
	// scratch buffer, so they are cut from one allocation.
	keys := make([]byte, 0, 8*nkeys)
	key := func(id uint64) []byte {
		keys = appendKey(keys, id)
		return keys[len(keys)-8:]
	}
	var last uint64
	err = b.db.Update(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		// IDs grow, so new jobs land at the right edge of the tree; full
		// pages on the left make the file smaller and Load faster.
		jobs.FillPercent = 0.9
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyLastID); len(v) == 8 {
			last = binary.BigEndian.Uint64(v)
		}
		stored := last
		for i := range ops {
			o := &ops[i]
			switch o.kind {
			case opAdd:
				last = max(last, o.id)
				if gone[o.id] {
					continue
				}
				if err := jobs.Put(key(o.id), o.val); err != nil {
					return fmt.Errorf("job %d: %w", o.id, err)
				}
			case opRemove:
				for _, id := range o.ids {
					if gone[id] {
						continue
					}
					k := key(id)
					if jobs.Get(k) == nil {
						continue
					}
					if err := jobs.Delete(k); err != nil {
						return fmt.Errorf("job %d: %w", id, err)
					}
				}
			case opRetries:
				if gone[o.id] {
					continue
				}
				k := key(o.id)
				v := jobs.Get(k)
				if len(v) < headerSize {
					continue
				}
				nv := append([]byte(nil), v...)
				setRetries(nv, o.retries)
				if err := jobs.Put(k, nv); err != nil {
					return fmt.Errorf("job %d: %w", o.id, err)
				}
			}
		}
		if last != stored {
			return meta.Put(keyLastID, binary.BigEndian.AppendUint64(nil, last))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store %s: commit: %w", b.path, err)
	}
	b.raiseLastID(last)
	return nil
}

// raiseLastID sets lastID to id unless it is already larger: the committer
// and the checkpoint goroutine both raise it.
func (b *Bolt) raiseLastID(id uint64) {
	for {
		cur := b.lastID.Load()
		if id <= cur || b.lastID.CompareAndSwap(cur, id) {
			return
		}
	}
}

// loadChunk is how many jobs Load decodes per read transaction. fn runs
// outside the transaction, so it may call Add or Remove: bbolt's writer
// can need to remap the file, which waits for every open read transaction.
const loadChunk = 4096

// Load calls fn for every stored job in ascending ID order. Each *Job is
// new and belongs to fn. A job that cannot be decoded stops the load with
// an error naming the file and the job.
func (b *Bolt) Load(fn func(*Job) error) error {
	if err := b.checkpointAll(); err != nil {
		return err
	}
	in := interner{}
	var (
		next  []byte
		batch = make([]Job, 0, loadChunk)
		total int
		start = time.Now()
	)
	for {
		more, err := b.readChunk(next, &batch, in)
		if err != nil {
			return err
		}
		// One backing array per chunk: fn owns each *Job, and the chunk
		// is not reused, so this is one allocation instead of 4096.
		chunk := batch
		for i := range chunk {
			if err := fn(&chunk[i]); err != nil {
				return err
			}
		}
		total += len(chunk)
		if !more {
			break
		}
		next = appendKey(nil, chunk[len(chunk)-1].ID+1)
		batch = make([]Job, 0, loadChunk)
	}
	b.log.Info("store loaded", "jobs", total, "elapsed", time.Since(start))
	return nil
}

// readChunk decodes up to loadChunk jobs from the key from on (nil: the
// first) and reports whether more may follow.
func (b *Bolt) readChunk(from []byte, batch *[]Job, in interner) (more bool, err error) {
	defer func() {
		if p := recover(); p != nil {
			more, err = false, fmt.Errorf("store %s: read: damaged file: %v", b.path, p)
		}
	}()
	err = b.db.View(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		if jobs == nil {
			return fmt.Errorf("store %s: read: damaged store: bucket %q is missing", b.path, bucketJobs)
		}
		c := jobs.Cursor()
		var k, v []byte
		if from == nil {
			k, v = c.First()
		} else {
			k, v = c.Seek(from)
		}
		for ; k != nil; k, v = c.Next() {
			if len(*batch) == loadChunk {
				more = true
				return nil
			}
			*batch = append(*batch, Job{})
			if err := decodeJob(&(*batch)[len(*batch)-1], k, v, in); err != nil {
				return fmt.Errorf("store %s: read: %w", b.path, err)
			}
		}
		return nil
	})
	return more, err
}

// Close commits everything queued, syncs, and releases the file. Calls
// after the first return its result.
func (b *Bolt) Close() error {
	b.closeOnce.Do(b.close)
	return b.closeErr
}

func (b *Bolt) close() {
	b.mu.Lock()
	b.closed = true
	close(b.quit)
	b.room.Broadcast()
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
	<-b.stopped
	var errs []error
	if err := b.wal.Close(); err != nil {
		errs = append(errs, fmt.Errorf("store %s: close write-ahead log: %w", b.path, err))
	}
	if b.nextLog != nil {
		// Never written to: nothing in it to keep.
		b.nextLog.f.Close()
		os.Remove(walPath(b.dir, b.nextLog.gen))
	}
	if b.clean {
		// Everything is in bbolt: the empty log would only be replayed.
		if err := os.Remove(walPath(b.dir, b.walGen)); err != nil {
			errs = append(errs, fmt.Errorf("store %s: %w", b.path, err))
		}
	} else if b.broken != nil {
		errs = append(errs, b.broken)
	}
	if err := b.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("store %s: close: %w", b.path, err))
	}
	removePidFile(b.pidPath)
	b.closeErr = errors.Join(errs...)
}
