package jobserver

import (
	"strconv"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// jobState is where a job is in its life.
type jobState uint8

const (
	// stPersisting: waiting for Store.Add; not runnable, but visible to
	// coalescing so that a concurrent submit of the same unique attaches.
	stPersisting jobState = iota
	// stDelayed: an epoch or SCHED job waiting for its time.
	stDelayed
	// stQueued: in its function's queue for its priority.
	stQueued
	// stRunning: assigned to a worker.
	stRunning
	// stDone: removed from every index; late references must ignore it.
	stDone
)

// Job flags.
const (
	flagBackground uint8 = 1 << iota
	// flagPersisted: the job is in the Store and must be removed from it
	// when it ends.
	flagPersisted
	// flagIgnore: a foreground job whose every client went away
	// (gearmand's ignore_job): dropped when a worker would get it, results
	// go nowhere while it runs.
	flagIgnore
	// flagDataUnique: submitted with unique "-", coalesced on its data.
	flagDataUnique
	// flagIndexed: the job is in its function's unique index.
	flagIndexed
)

// job is one queued or running job. It is kept small because a queue may
// hold millions of them: the unique ID and the data share one string, the
// handle is the ID formatted on demand, and rarely used fields live in ext.
type job struct {
	id uint64
	fn *function
	// text is the unique ID followed by the data; ulen is the unique's
	// length.
	text string
	// next and prev link the job into its function's queue for its
	// priority.
	next, prev *job
	worker     *conn
	// client is the first attached foreground client; more are in ext.
	client  *conn
	ext     *jobExt
	retries uint32
	ulen    uint8
	prio    protocol.Priority
	state   jobState
	flags   uint8
}

// jobExt holds what most jobs never need.
type jobExt struct {
	clients     []*conn // attached foreground clients beyond job.client
	reducer     string
	when        int64  // epoch or SCHED due time, Unix seconds
	sched       string // SCHED cron fields
	numerator   string // last WORK_STATUS
	denominator string
	timer       *time.Timer // CAN_DO_TIMEOUT
	assignSeq   uint64      // which assignment the timer belongs to
	waiters     []*replySlot
	heapIndex   int
}

func (j *job) unique() string { return j.text[:j.ulen] }
func (j *job) data() string   { return j.text[j.ulen:] }

func (j *job) x() *jobExt {
	if j.ext == nil {
		j.ext = &jobExt{heapIndex: -1}
	}
	return j.ext
}

func (j *job) background() bool { return j.flags&flagBackground != 0 }

func (j *job) reducer() string {
	if j.ext == nil {
		return ""
	}
	return j.ext.reducer
}

func (j *job) when() int64 {
	if j.ext == nil {
		return 0
	}
	return j.ext.when
}

// hasClients reports whether any foreground client waits on the job.
func (j *job) hasClients() bool {
	return j.client != nil || (j.ext != nil && len(j.ext.clients) > 0)
}

// eachClient calls fn for every attached foreground client.
func (j *job) eachClient(fn func(c *conn)) {
	if j.client != nil {
		fn(j.client)
	}
	if j.ext != nil {
		for _, c := range j.ext.clients {
			fn(c)
		}
	}
}

func (j *job) clientCount() int {
	n := 0
	if j.client != nil {
		n++
	}
	if j.ext != nil {
		n += len(j.ext.clients)
	}
	return n
}

func (j *job) attach(c *conn) {
	if j.client == nil {
		j.client = c
	} else {
		x := j.x()
		x.clients = append(x.clients, c)
	}
}

// detach removes one attachment of c and reports whether it was attached.
func (j *job) detach(c *conn) bool {
	if j.client == c {
		j.client = nil
		if j.ext != nil && len(j.ext.clients) > 0 {
			j.client = j.ext.clients[0]
			j.ext.clients = j.ext.clients[1:]
			if len(j.ext.clients) == 0 {
				j.ext.clients = nil
			}
		}
		return true
	}
	if j.ext != nil {
		for i, o := range j.ext.clients {
			if o == c {
				j.ext.clients = append(j.ext.clients[:i], j.ext.clients[i+1:]...)
				return true
			}
		}
	}
	return false
}

// clearClients detaches every client, returning them.
func (j *job) clearClients() []*conn {
	var out []*conn
	j.eachClient(func(c *conn) { out = append(out, c) })
	j.client = nil
	if j.ext != nil {
		j.ext.clients = nil
	}
	return out
}

// jobQueue is an intrusive FIFO of jobs.
type jobQueue struct {
	head, tail *job
	n          int
}

func (q *jobQueue) push(j *job) {
	j.next, j.prev = nil, q.tail
	if q.tail == nil {
		q.head = j
	} else {
		q.tail.next = j
	}
	q.tail = j
	q.n++
}

func (q *jobQueue) remove(j *job) {
	if j.prev == nil {
		q.head = j.next
	} else {
		j.prev.next = j.next
	}
	if j.next == nil {
		q.tail = j.prev
	} else {
		j.next.prev = j.prev
	}
	j.next, j.prev = nil, nil
	q.n--
}

// function is everything the server knows about one function name.
type function struct {
	name  string
	queue [3]jobQueue // by priority: high, normal, low
	// total counts every job of the function: queued, delayed,
	// persisting and running (gearmand's job_total, which maxqueue
	// compares against).
	total   int
	running int
	// delayed counts epoch/SCHED jobs not yet due; gearmand keeps them in
	// the normal queue, so status and prioritystatus count them there.
	delayed [3]int
	// workers lists every registration (CAN_DO twice counts twice), in
	// registration order.
	workers  []*conn
	maxQueue [3]int // 0 = unlimited
	// uniques maps a unique ID to its job, for coalescing. Jobs submitted
	// with unique "-" are keyed by "-" + data in dataUniques.
	uniques     map[string]*job
	dataUniques map[string]*job
}

func (f *function) queuedCount(p protocol.Priority) int { return f.queue[p].n + f.delayed[p] }

// appendHandle appends the handle of job id: "<prefix>:<id>".
func appendHandle(dst []byte, prefix string, id uint64) []byte {
	dst = append(dst, prefix...)
	dst = append(dst, ':')
	return strconv.AppendUint(dst, id, 10)
}

// parseHandle returns the job ID inside a handle issued by this server.
func parseHandle(prefix string, h []byte) (uint64, bool) {
	if len(h) <= len(prefix)+1 || string(h[:len(prefix)]) != prefix || h[len(prefix)] != ':' {
		return 0, false
	}
	digits := h[len(prefix)+1:]
	if len(digits) > 19 || (len(digits) > 1 && digits[0] == '0') {
		return 0, false
	}
	var id uint64
	for _, c := range digits {
		if c < '0' || c > '9' {
			return 0, false
		}
		id = id*10 + uint64(c-'0')
	}
	return id, true
}
