package jobserver

import (
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// outbox is a connection's bounded output queue, like protocol.Outbox,
// with one addition that halves the latency of a request and its reply:
// the connection's own reader writes the replies to a burst of requests
// itself once it has handled the burst (flush), instead of handing them
// to the writer goroutine and paying for a goroutine switch. Output
// queued by other connections (WORK_* to a client, NOOP to a worker)
// still goes through the writer goroutine, so no connection ever blocks
// on another's socket. Only one goroutine writes at a time, taking the
// whole queue, so bytes leave in the order they were queued.
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
	err     error
	wake    chan struct{}
}

// inlineWriteTimeout bounds how long a reader writes its own replies: a
// peer that does not read gets the rest through the writer goroutine,
// and the reader goes back to reading, so the output limit still cuts
// the peer off instead of the server waiting on it.
const inlineWriteTimeout = 100 * time.Millisecond

// otherWriteTimeout bounds a reader's write of another connection's
// output (see flushFor).
const otherWriteTimeout = 5 * time.Millisecond

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
	kick, err := o.appendNoKick(fn)
	if kick {
		o.signal()
	}
	return err
}

// appendNoKick appends like Append but reports instead of acting on it
// that the queue needs a writer (it was idle and nobody will flush it),
// so that the caller can flush it itself after its burst.
func (o *outbox) appendNoKick(fn func([]byte) []byte) (bool, error) {
	o.mu.Lock()
	if o.err != nil {
		err := o.err
		o.mu.Unlock()
		return false, err
	}
	before := len(o.pending)
	o.pending = fn(o.pending)
	if before > 0 && len(o.pending) > o.limit {
		o.pending = o.pending[:before]
		o.err = protocol.ErrOutboxFull
		o.mu.Unlock()
		o.signal()
		return false, protocol.ErrOutboxFull
	}
	kick := before == 0 && !o.busy && !o.writing
	o.mu.Unlock()
	return kick, nil
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
	o.write(inlineWriteTimeout) // unlocks
}

// flushFor writes, from another connection's reader, output that reader
// queued here during its burst, unless this connection's own reader or
// writer will. The write is bounded by a short deadline: a peer that
// does not read costs the other connection at most that once.
func (o *outbox) flushFor() {
	o.mu.Lock()
	if o.busy || o.writing || len(o.pending) == 0 || o.err != nil {
		o.mu.Unlock()
		return
	}
	if !o.inline {
		o.mu.Unlock()
		o.signal()
		return
	}
	o.write(otherWriteTimeout) // unlocks
}

// write sends the whole queue; o.mu is held on entry and released.
func (o *outbox) write(timeout time.Duration) {
	inline := timeout > 0
	buf := o.pending
	o.pending = o.spare[:0]
	o.spare = nil
	o.writing = true
	o.mu.Unlock()
	if inline {
		o.nc.SetWriteDeadline(time.Now().Add(timeout))
	}
	n, err := o.nc.Write(buf)
	if inline {
		o.nc.SetWriteDeadline(time.Time{})
	}
	o.mu.Lock()
	o.writing = false
	if ne, ok := err.(net.Error); ok && inline && ne.Timeout() {
		// Hand the rest to the writer goroutine, ahead of newer output.
		o.pending = append(append(make([]byte, 0, len(buf)-n+len(o.pending)), buf[n:]...), o.pending...)
		err = nil
		buf = nil
	}
	if cap(buf) <= 1<<20 && buf != nil {
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
			o.write(0)
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

// close stops accepting output; run writes what is queued and returns.
func (o *outbox) close() {
	o.mu.Lock()
	o.closed = true
	o.busy = false
	if o.err == nil {
		o.err = protocol.ErrOutboxClosed
	}
	o.mu.Unlock()
	o.signal()
}
