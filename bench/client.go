package bench

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// maxHandle is the longest job handle a client tracks: libgearman's buffer
// is 64 bytes with its NUL, so no server a real client can use sends more.
const maxHandle = 63

// handleKey is a job handle as a fixed-size map key, so remembering one
// allocates nothing.
type handleKey struct {
	n uint8
	b [maxHandle]byte
}

func makeHandleKey(h []byte) (handleKey, bool) {
	var k handleKey
	if len(h) == 0 || len(h) > maxHandle {
		return k, false
	}
	k.n = uint8(len(h))
	copy(k.b[:], h)
	return k, true
}

// slot is one request a client has in flight.
type slot struct {
	key   uint64
	start time.Time
	// early is set when the job's result came before its JOB_CREATED.
	early bool
}

// fifo is a ring of slot indexes: requests waiting for a reply that comes
// back in order (JOB_CREATED, ERROR, ECHO_RES).
type fifo struct {
	buf     []int32
	head, n int
}

func (q *fifo) push(v int32) {
	q.buf[(q.head+q.n)%len(q.buf)] = v
	q.n++
}

func (q *fifo) pop() (int32, bool) {
	if q.n == 0 {
		return 0, false
	}
	v := q.buf[q.head]
	q.head = (q.head + 1) % len(q.buf)
	q.n--
	return v, true
}

// client is one client connection and the jobs it has in flight. Its loop
// is the only goroutine that touches it until exited is closed.
type client struct {
	r    *run
	c    *conn
	lane int
	// budget is how many more requests to send; negative means until
	// the deadline.
	budget   int64
	deadline time.Time

	slots    []slot
	free     []int32
	inOrder  fifo
	inflight int
	handles  map[handleKey]int32
	seq      uint64
	payload  []byte
	unique   []byte
	isDone   bool

	// acked[seq] is set when the seq-th background submit got JOB_CREATED.
	acked []bool

	hist                                histogram
	done, lost, dup, mismatched, failed int64
	progress                            atomic.Int64
	finished, exited                    chan struct{}
}

func newClient(r *run, c *conn, lane int, budget int64) *client {
	p := r.cfg.Pipeline
	cl := &client{
		r: r, c: c, lane: lane, budget: budget,
		slots:    make([]slot, p),
		free:     make([]int32, p),
		inOrder:  fifo{buf: make([]int32, p)},
		handles:  make(map[handleKey]int32, p),
		payload:  make([]byte, r.cfg.Payload),
		unique:   make([]byte, 0, maxUnique),
		finished: make(chan struct{}),
		exited:   make(chan struct{}),
	}
	for i := range cl.free {
		cl.free[i] = int32(p - 1 - i)
	}
	if r.cfg.Mode == Background && budget > 0 {
		cl.acked = make([]bool, budget)
	}
	r.track(&cl.progress)
	return cl
}

func (cl *client) name() string { return fmt.Sprintf("client %d", cl.lane) }

// loop sends requests, keeping Pipeline in flight, until the budget or the
// deadline is reached and every reply is in; then it keeps reading (so a
// late duplicate is counted) until the run closes the connection.
func (cl *client) loop(start <-chan struct{}) {
	defer close(cl.exited)
	<-start
	now := time.Now()
	if cl.r.cfg.Duration > 0 {
		cl.deadline = now.Add(cl.r.cfg.Duration)
	}
	err := cl.fill(now)
	for err == nil {
		if cl.inflight == 0 && !cl.isDone {
			cl.isDone = true
			close(cl.finished)
		}
		if err = cl.c.r.Read(&cl.c.pkt); err != nil {
			break
		}
		now = time.Now()
		cl.handle(&cl.c.pkt, now)
		if cl.c.r.Buffered() == 0 {
			// Everything that arrived is handled: refill the freed
			// slots and send the whole batch in one write.
			err = cl.fill(now)
		}
	}
	cl.r.connError(cl.name(), cl.c.nc.RemoteAddr(), err)
	cl.lost += int64(cl.inflight)
	cl.inflight = 0
	if !cl.isDone {
		cl.isDone = true
		close(cl.finished)
	}
}

// more reports whether another request may be sent.
func (cl *client) more(now time.Time) bool {
	if cl.r.aborted.Load() {
		return false
	}
	if !cl.deadline.IsZero() && !now.Before(cl.deadline) {
		return false
	}
	return cl.budget != 0
}

// fill sends a request in every free slot and flushes.
func (cl *client) fill(now time.Time) error {
	for len(cl.free) > 0 && cl.more(now) {
		if err := cl.send(now); err != nil {
			return err
		}
	}
	return cl.c.w.Flush()
}

func (cl *client) send(now time.Time) error {
	s := cl.free[len(cl.free)-1]
	cl.free = cl.free[:len(cl.free)-1]
	cfg := &cl.r.cfg
	key := jobKey(cfg.Unique, cl.lane, cl.seq)
	cl.seq++
	if cl.budget > 0 {
		cl.budget--
	}
	cl.slots[s] = slot{key: key, start: now}
	fillPayload(cl.payload, cl.r.nonce, key)
	cl.inOrder.push(s)
	cl.inflight++
	if cfg.Mode == Echo {
		return cl.c.w.WritePacket(protocol.Req, protocol.EchoReq, cl.payload)
	}
	cl.unique = appendUnique(cl.unique[:0], cfg.Unique, cl.r.nonce, key)
	return cl.c.w.WritePacket(protocol.Req, cl.r.submit, cl.r.fn, cl.unique, cl.payload)
}

// release frees slot s: its request is answered one way or another.
func (cl *client) release(s int32) {
	cl.free = append(cl.free, s)
	cl.inflight--
	cl.progress.Add(1)
}

func (cl *client) handle(p *protocol.Packet, now time.Time) {
	switch p.Type {
	case protocol.JobCreated:
		s, ok := cl.inOrder.pop()
		if !ok {
			cl.unexpected(p)
			return
		}
		if cl.r.cfg.Mode == Background {
			cl.acked[cl.slots[s].key&seqMask] = true
			cl.finish(s, now)
			return
		}
		if cl.slots[s].early {
			// Already counted as a mismatch when its result came.
			cl.release(s)
			return
		}
		k, ok := makeHandleKey(p.Arg(0))
		if !ok {
			cl.mismatched++
			cl.r.errorf("%s: JOB_CREATED with a handle of %d bytes", cl.name(), len(p.Arg(0)))
			cl.release(s)
			return
		}
		if _, taken := cl.handles[k]; taken {
			// Two different jobs of ours got the same handle.
			cl.mismatched++
			cl.release(s)
			return
		}
		cl.handles[k] = s

	case protocol.Error:
		s, ok := cl.inOrder.pop()
		if !ok {
			cl.unexpected(p)
			return
		}
		cl.failed++
		cl.r.errorf("%s: server ERROR %s: %s", cl.name(), p.Arg(0), p.Arg(1))
		cl.release(s)

	case protocol.EchoRes:
		s, ok := cl.inOrder.pop()
		if !ok || cl.r.cfg.Mode != Echo {
			cl.unexpected(p)
			return
		}
		if !isPayload(p.Data(), cl.r.nonce, cl.slots[s].key, cl.r.cfg.Payload, 0) {
			cl.mismatched++
			cl.release(s)
			return
		}
		cl.finish(s, now)

	case protocol.WorkComplete:
		s, ok := cl.job(p.Arg(0))
		if !ok {
			cl.stray(p.Data())
			return
		}
		if !isPayload(p.Data(), cl.r.nonce, cl.slots[s].key, cl.r.cfg.Payload, resultXOR) {
			cl.mismatched++
			cl.release(s)
			return
		}
		cl.finish(s, now)

	case protocol.WorkFail, protocol.WorkException:
		s, ok := cl.job(p.Arg(0))
		if !ok {
			cl.unexpected(p)
			return
		}
		cl.failed++
		cl.release(s)

	case protocol.WorkData, protocol.WorkWarning, protocol.WorkStatus:
		// Progress of a job: allowed, nothing to check.

	default:
		cl.unexpected(p)
	}
}

// job finds and forgets the in-flight job with handle h.
func (cl *client) job(h []byte) (int32, bool) {
	k, ok := makeHandleKey(h)
	if !ok {
		return 0, false
	}
	s, ok := cl.handles[k]
	if ok {
		delete(cl.handles, k)
	}
	return s, ok
}

// finish records a correct reply to slot s.
func (cl *client) finish(s int32, now time.Time) {
	cl.done++
	cl.hist.record(now.Sub(cl.slots[s].start))
	cl.release(s)
}

// stray classifies a WORK_COMPLETE for no job in flight: the result of a
// job still waiting for its JOB_CREATED breaks the reply order libgearman
// relies on; a second result for a job of ours that already finished is a
// duplicate; anything else is a mismatch.
func (cl *client) stray(data []byte) {
	run, key, ok := readHeader(data, resultXOR)
	mine := cl.r.cfg.Unique == UniqueDuplicated || int(key>>laneShift) == cl.lane
	if !ok || run != cl.r.nonce || !mine {
		cl.mismatched++
		return
	}
	q := &cl.inOrder
	for i := 0; i < q.n; i++ {
		s := q.buf[(q.head+i)%len(q.buf)]
		if cl.slots[s].key == key && !cl.slots[s].early {
			cl.slots[s].early = true
			cl.mismatched++
			cl.r.errorf("%s: WORK_COMPLETE before JOB_CREATED", cl.name())
			return
		}
	}
	if key&seqMask < cl.seq {
		cl.dup++
		return
	}
	cl.mismatched++
}

func (cl *client) unexpected(p *protocol.Packet) {
	cl.mismatched++
	cl.r.errorf("%s: unexpected %s", cl.name(), p.Type)
}
