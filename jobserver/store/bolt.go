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
	DefaultBatchWindow = 10 * time.Millisecond
	DefaultLockTimeout = 200 * time.Millisecond
	DefaultMaxPending  = 1 << 16
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
	// BatchWindow is how long SyncBatch lets jobs wait for their commit:
	// a crash loses at most the jobs acknowledged in the last BatchWindow
	// plus the duration of one commit. Zero means DefaultBatchWindow.
	BatchWindow time.Duration
	// LockTimeout is how long Open waits for another holder of the file
	// before it fails with a *LockedError. Zero means DefaultLockTimeout.
	LockTimeout time.Duration
	// MaxPending bounds the operations queued for the next commit; past it
	// Add, AddAsync and Remove wait for the committer. It bounds memory
	// when the disk is slower than the submitters. Zero means
	// DefaultMaxPending.
	MaxPending int
	// Logger receives commit failures and the recovery summary. Nil
	// discards them.
	Logger *slog.Logger

	// beforeCommit, when set by a test, runs in the committer before each
	// commit with the number of ops it carries.
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
	// Commits is the number of write transactions.
	Commits uint64
	// Syncs is the number of commits that reached stable storage (bbolt
	// fdatasyncs twice per commit: data pages, then the meta page).
	Syncs uint64
	// Added and Removed count jobs written and deleted.
	Added, Removed uint64
	// CommitTime is the time spent in commits, syncs included.
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

// Bolt is the embedded store: one bbolt file, written by a single committer
// goroutine that turns everything queued since its last commit into one
// transaction and one sync. A submitter pays for the sync only while the
// previous commit is in flight, so under load each fsync carries many jobs.
type Bolt struct {
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

	lastID  atomic.Uint64
	commits atomic.Uint64
	syncs   atomic.Uint64
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
		path:    path,
		pidPath: filepath.Join(dir, pidFileName),
		db:      db,
		opts:    opts,
		log:     opts.Logger.With("store", path),
		group:   &group{done: make(chan struct{})},
		wake:    make(chan struct{}, 1),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
	}
	b.room.L = &b.mu
	if err := b.init(); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	// The pid file is written only once the lock is ours: it is a label
	// for the error another process prints, not the lock itself.
	if err := os.WriteFile(b.pidPath, fmt.Appendf(nil, "%d\n", os.Getpid()), 0o600); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("store %s: write pid file: %w", path, err)
	}
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
		// Every job is deleted soon after it is written, so the file
		// fragments; the hashmap freelist stays fast where the array one
		// degrades (bbolt's own advice).
		FreelistType: bolt.FreelistMapType,
		NoSync:       opts.Sync == SyncNone,
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
func (b *Bolt) init() error {
	empty := false
	err := b.db.View(func(tx *bolt.Tx) error {
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
		return err
	}
	return b.db.Update(func(tx *bolt.Tx) error {
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

// Path returns the database file.
func (b *Bolt) Path() string { return b.path }

// LastID returns the largest job ID ever added to this file.
func (b *Bolt) LastID() uint64 { return b.lastID.Load() }

// Stats returns counters since Open.
func (b *Bolt) Stats() Stats {
	return Stats{Commits: b.commits.Load(), Syncs: b.syncs.Load(), Added: b.added.Load(), Removed: b.removed.Load(),
		CommitTime: time.Duration(b.commitT.Load())}
}

// enqueue queues o and returns the group it commits with. It waits while
// MaxPending ops are queued.
func (b *Bolt) enqueue(o op) (*group, error) {
	b.mu.Lock()
	for len(b.pending) >= b.opts.MaxPending && !b.closed {
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

// Add queues job and, with SyncAlways or SyncNone, waits for the commit
// that writes it (with SyncNone that commit reaches the operating system
// but not the disk). With SyncBatch it returns at once.
func (b *Bolt) Add(job *Job) error {
	g, err := b.enqueue(op{kind: opAdd, id: job.ID, val: appendValue(make([]byte, 0, valueSize(job)), job)})
	if err != nil || b.opts.Sync == SyncBatch {
		return err
	}
	<-g.done
	return g.err
}

// AddAsync is Add without the wait; see AsyncAdder.
func (b *Bolt) AddAsync(job *Job, done func(error)) {
	o := op{kind: opAdd, id: job.ID, val: appendValue(make([]byte, 0, valueSize(job)), job)}
	if b.opts.Sync != SyncBatch {
		o.done = done
	}
	if _, err := b.enqueue(o); err != nil || b.opts.Sync == SyncBatch {
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

// run is the committer: the only goroutine that writes the file.
func (b *Bolt) run() {
	defer close(b.stopped)
	lastCommit := time.Now()
	for {
		b.mu.Lock()
		for len(b.pending) == 0 && !b.closed {
			b.mu.Unlock()
			<-b.wake
			b.mu.Lock()
		}
		closing := b.closed
		if len(b.pending) == 0 {
			b.mu.Unlock()
			return // closed with nothing left to write
		}
		b.mu.Unlock()
		if b.opts.Sync == SyncBatch && !closing {
			// Let the window fill: one sync per BatchWindow at most.
			if wait := time.Until(lastCommit.Add(b.opts.BatchWindow)); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-b.quit:
					t.Stop()
				}
			}
		}
		b.mu.Lock()
		ops, g := b.pending, b.group
		b.pending, b.spare = b.spare[:0], nil
		b.group = &group{done: make(chan struct{})}
		closing = b.closed
		b.room.Broadcast()
		b.mu.Unlock()

		if b.opts.beforeCommit != nil {
			b.opts.beforeCommit(len(ops))
		}
		lastCommit = time.Now()
		err := b.commit(ops)
		b.commitT.Add(int64(time.Since(lastCommit)))
		g.err = err
		close(g.done)
		for i := range ops {
			if ops[i].done != nil {
				ops[i].done(err)
			}
		}
		if err != nil {
			b.log.Error("commit failed", "ops", len(ops), "err", err)
			b.requeue(ops, closing)
		}
		clear(ops)
		b.mu.Lock()
		if b.spare == nil && cap(ops) <= 4*b.opts.MaxPending {
			b.spare = ops[:0]
		}
		done := b.closed && len(b.pending) == 0
		b.mu.Unlock()
		if done || (closing && err != nil) {
			return
		}
	}
}

// requeue puts back the removals and retry counts of a failed commit: the
// next commit tries them again. Adds are not retried; their callers got
// the error and told their clients.
func (b *Bolt) requeue(ops []op, closing bool) {
	if closing {
		return
	}
	var keep []op
	for _, o := range ops {
		if o.kind != opAdd {
			keep = append(keep, o)
		}
	}
	b.mu.Lock()
	b.pending = append(keep, b.pending...)
	b.mu.Unlock()
	// A failing disk fails again at once; do not spin on it.
	select {
	case <-time.After(100 * time.Millisecond):
	case <-b.quit:
	}
}

// commit writes ops in order in one transaction.
func (b *Bolt) commit(ops []op) error {
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
	var added, removed uint64
	last := b.lastID.Load()
	err := b.db.Update(func(tx *bolt.Tx) error {
		jobs := tx.Bucket(bucketJobs)
		// IDs grow, so new jobs land at the right edge of the tree; full
		// pages on the left make the file smaller and Load faster.
		jobs.FillPercent = 0.9
		for i := range ops {
			o := &ops[i]
			switch o.kind {
			case opAdd:
				if err := jobs.Put(key(o.id), o.val); err != nil {
					return fmt.Errorf("job %d: %w", o.id, err)
				}
				added++
				last = max(last, o.id)
			case opRemove:
				for _, id := range o.ids {
					k := key(id)
					if jobs.Get(k) == nil {
						continue
					}
					if err := jobs.Delete(k); err != nil {
						return fmt.Errorf("job %d: %w", id, err)
					}
					removed++
				}
			case opRetries:
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
		if last != b.lastID.Load() {
			return tx.Bucket(bucketMeta).Put(keyLastID, binary.BigEndian.AppendUint64(nil, last))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("store %s: commit: %w", b.path, err)
	}
	b.lastID.Store(last)
	b.commits.Add(1)
	if b.opts.Sync != SyncNone {
		b.syncs.Add(1)
	}
	b.added.Add(added)
	b.removed.Add(removed)
	return nil
}

// loadChunk is how many jobs Load decodes per read transaction. fn runs
// outside the transaction, so it may call Add or Remove: bbolt's writer
// can need to remap the file, which waits for every open read transaction.
const loadChunk = 4096

// Load calls fn for every stored job in ascending ID order. Each *Job is
// new and belongs to fn. A job that cannot be decoded stops the load with
// an error naming the file and the job.
func (b *Bolt) Load(fn func(*Job) error) error {
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
	if b.opts.Sync == SyncNone {
		if err := b.db.Sync(); err != nil {
			errs = append(errs, fmt.Errorf("store %s: sync: %w", b.path, err))
		}
	}
	if err := b.db.Close(); err != nil {
		errs = append(errs, fmt.Errorf("store %s: close: %w", b.path, err))
	}
	removePidFile(b.pidPath)
	b.closeErr = errors.Join(errs...)
}
