package jobserver

import (
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// outbox is a connection's bounded output queue, like protocol.Outbox,
// with one addition that saves a goroutine switch per reply: the
// connection's own reader writes the replies to a burst of requests
// itself once it has handled the burst (flush), instead of handing them
// to the writer goroutine. Output queued by other connections (WORK_* to
// a client, NOOP to a worker) goes through the writer goroutine, so no
// connection ever blocks on another's socket. Only one goroutine writes
// at a time, taking the whole queue, so bytes leave in the order they
// were queued.
type outbox struct {
	nc    net.Conn
	limit int
	// inline allows the reader's own writes: only on sockets, whose
	// kernel buffer absorbs a burst. On net.Pipe a write waits for the
	// peer's read, and a peer that writes before it reads would deadlock.
	inline bool

	mu      sync.Mutex
	pending []byte
	spare   []byte
	busy    bool // the reader is handling a burst and will flush
	writing bool // a goroutine is writing to nc
	closed  bool
	final   bool // the closing deadline is set and must stay
	err     error
	wake    chan struct{}
	// deadline is the write deadline set on nc, touched only by the
	// goroutine that is writing.
	deadline time.Time
}

// inlineWriteTimeout bounds how long a reader writes its own replies: a
// peer that does not read gets the rest through the writer goroutine,
// and the reader goes back to reading, so the output limit still cuts
// the peer off instead of the server waiting on it. The deadline is
// renewed only when less than half of it is left, sparing a timer update
// per write; the reader is thus held for at most this long and at least
// half of it.
const inlineWriteTimeout = 100 * time.Millisecond

func newOutbox(nc net.Conn, limit int) *outbox {
	_, socket := nc.(syscall.Conn)
	return &outbox{nc: nc, limit: limit, inline: socket, wake: make(chan struct{}, 1)}
}

func (o *outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// Append lets fn encode into the queue; fn must only append. It fails
// with protocol.ErrOutboxFull when the peer is not reading, after which
// the connection must be closed.
func (o *outbox) Append(fn func([]byte) []byte) error {
	o.mu.Lock()
	if o.err != nil {
		err := o.err
		o.mu.Unlock()
		return err
	}
	before := len(o.pending)
	o.pending = fn(o.pending)
	if before > 0 && len(o.pending) > o.limit {
		o.pending = o.pending[:before]
		o.err = protocol.ErrOutboxFull
		o.mu.Unlock()
		o.signal()
		return protocol.ErrOutboxFull
	}
	kick := before == 0 && !o.busy && !o.writing
	o.mu.Unlock()
	if kick {
		o.signal()
	}
	return nil
}

// begin marks the reader busy with a burst of requests: replies wait for
// its flush.
func (o *outbox) begin() {
	o.mu.Lock()
	o.busy = true
	o.mu.Unlock()
}

// flush ends a burst: the reader writes what is queued itself, unless a
// write is under way (whose goroutine then takes it).
func (o *outbox) flush() {
	o.mu.Lock()
	o.busy = false
	if o.writing || len(o.pending) == 0 || o.err != nil {
		o.mu.Unlock()
		return
	}
	if !o.inline {
		o.mu.Unlock()
		o.signal()
		return
	}
	o.write(true) // unlocks
}

// write sends the whole queue; o.mu is held on entry and released. An
// inline write (by the reader) is bounded by the deadline; the writer
// goroutine waits as long as it takes, until the output limit or Close
// ends the connection.
func (o *outbox) write(inline bool) {
	buf := o.pending
	o.pending = o.spare[:0]
	o.spare = nil
	o.writing = true
	o.mu.Unlock()
	if inline {
		if now := time.Now(); o.deadline.Sub(now) < inlineWriteTimeout/2 {
			o.deadline = now.Add(inlineWriteTimeout)
			o.nc.SetWriteDeadline(o.deadline)
		}
	}
	n, err := o.nc.Write(buf)
	for !inline && isTimeout(err) && o.dropReaderDeadline() {
		// It was the reader's deadline, still set: the writer goroutine
		// has none.
		buf = buf[n:]
		n, err = o.nc.Write(buf)
	}
	o.mu.Lock()
	o.writing = false
	if inline && isTimeout(err) {
		// Hand the rest to the writer goroutine, ahead of newer output.
		o.pending = append(append(make([]byte, 0, len(buf)-n+len(o.pending)), buf[n:]...), o.pending...)
		err = nil
		buf = nil
	}
	if buf != nil && cap(buf) <= 1<<20 {
		o.spare = buf[:0]
	}
	if err != nil && o.err == nil {
		o.err = err
	}
	more := len(o.pending) > 0 || o.closed || o.err != nil
	o.mu.Unlock()
	if err != nil {
		o.nc.Close()
	}
	if more {
		o.signal()
	}
}

// dropReaderDeadline clears a deadline the reader left on the socket and
// reports whether it did; after closeWithin the deadline is final.
func (o *outbox) dropReaderDeadline() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.final || o.deadline.IsZero() {
		return false
	}
	o.deadline = time.Time{}
	o.nc.SetWriteDeadline(o.deadline)
	return true
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// run is the writer goroutine. It returns after close once everything
// queued is written, or at the first error, which it returns.
func (o *outbox) run() error {
	for range o.wake {
		o.mu.Lock()
		if o.err != nil && o.err != protocol.ErrOutboxClosed {
			err := o.err
			o.mu.Unlock()
			return err
		}
		if o.writing {
			o.mu.Unlock() // the writer signals again when done
			continue
		}
		if len(o.pending) > 0 && (!o.busy || o.closed) {
			o.write(false)
			continue
		}
		done := o.closed && len(o.pending) == 0
		o.mu.Unlock()
		if done {
			return nil
		}
	}
	return nil
}

// closeWithin stops accepting output; run writes what is queued, giving
// up after d, and returns.
func (o *outbox) closeWithin(d time.Duration) {
	o.mu.Lock()
	o.final = true
	o.nc.SetWriteDeadline(time.Now().Add(d))
	o.closed = true
	o.busy = false
	if o.err == nil {
		o.err = protocol.ErrOutboxClosed
	}
	o.mu.Unlock()
	o.signal()
}

// pendingLen is the number of bytes queued and not yet being written.
func (o *outbox) pendingLen() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending)
}
