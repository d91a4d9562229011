package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"
)

// AppendPacket appends one binary packet to dst: the header, then args
// joined by single NUL bytes. For types with opaque data the last arg is the
// data and is written verbatim.
func AppendPacket(dst []byte, m Magic, t Type, args ...[]byte) []byte {
	size := 0
	for i, a := range args {
		size += len(a)
		if i > 0 {
			size++
		}
	}
	dst = binary.BigEndian.AppendUint32(dst, uint32(m))
	dst = binary.BigEndian.AppendUint32(dst, uint32(t))
	dst = binary.BigEndian.AppendUint32(dst, uint32(size))
	for i, a := range args {
		if i > 0 {
			dst = append(dst, 0)
		}
		dst = append(dst, a...)
	}
	return dst
}

// AppendError appends an ERROR packet with the given code and text.
func AppendError(dst []byte, code, text string) []byte {
	dst = binary.BigEndian.AppendUint32(dst, uint32(Res))
	dst = binary.BigEndian.AppendUint32(dst, uint32(Error))
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(code)+1+len(text)))
	dst = append(dst, code...)
	dst = append(dst, 0)
	return append(dst, text...)
}

// Writer writes packets through a buffer; nothing reaches the stream until
// Flush or until the buffer fills. A client that pipelines many requests
// writes them all and flushes once.
type Writer struct {
	bw  *bufio.Writer
	buf []byte
}

// NewWriter returns a Writer with a 64 KiB buffer over w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, readBufferSize)}
}

// WritePacket buffers one packet.
func (w *Writer) WritePacket(m Magic, t Type, args ...[]byte) error {
	w.buf = AppendPacket(w.buf[:0], m, t, args...)
	_, err := w.bw.Write(w.buf)
	if cap(w.buf) > keepBody {
		w.buf = nil
	}
	return err
}

// Write buffers raw bytes: an already encoded packet or a text line.
func (w *Writer) Write(b []byte) (int, error) { return w.bw.Write(b) }

// Flush sends everything buffered.
func (w *Writer) Flush() error { return w.bw.Flush() }

// ErrOutboxFull is returned when a peer does not read its replies fast
// enough and its outbox passes its limit; its connection must be closed.
var ErrOutboxFull = errors.New("output buffer limit reached: peer is not reading")

// ErrOutboxClosed is returned by Append after Close.
var ErrOutboxClosed = errors.New("outbox closed")

// Outbox is a connection's bounded output queue with a single writer
// goroutine (Run). Any goroutine appends encoded packets without blocking;
// whoever writes takes the whole queue in one write, so replies to a burst
// of pipelined requests leave in one segment, and bytes leave in the order
// they were queued. A peer that stops reading makes the queue pass its
// limit: Append then fails with ErrOutboxFull and the owner closes the
// connection rather than wait on it.
//
// Burst mode saves the goroutine switch per reply that handing every write
// to Run costs. The goroutine that reads the connection's requests calls
// Begin when it starts handling a burst of them and Flush when it is done,
// before it reads again. In between, queued output waits for Flush instead
// of waking Run, and Flush writes the burst's replies in the calling
// goroutine when the Outbox writes inline (NewConnOutbox), or hands them to
// Run in one piece otherwise. Output queued by other goroutines outside a
// burst still goes through Run, so nobody waits on a socket that is not
// theirs. Only one goroutine writes at a time.
type Outbox struct {
	w     io.Writer
	limit int
	// dl sets w's write deadline; nil when w has none.
	dl interface{ SetWriteDeadline(time.Time) error }
	// inline lets Flush write in the caller, bounded by
	// inlineWriteTimeout.
	inline bool

	mu      sync.Mutex
	pending []byte
	spare   []byte
	burst   bool // the reader is handling a burst and will Flush
	writing bool // a goroutine is writing to w
	closed  bool
	final   bool // CloseWithin's deadline is set and must stay
	err     error
	wake    chan struct{}
	done    chan struct{}
	// deadline is the write deadline an inline write left on w. Only the
	// goroutine that is writing touches it.
	deadline time.Time
}

// inlineWriteTimeout bounds how long Flush writes in the caller: a peer that
// does not read gets the rest through Run, and the caller goes back to
// reading, so the output limit still cuts the peer off instead of the
// reader waiting on it. The deadline is renewed only when less than half of
// it is left, sparing a timer update per write; a reader is thus held for
// at most this long and at least half of it.
const inlineWriteTimeout = 100 * time.Millisecond

// NewOutbox returns an Outbox that writes to w and holds at most limit
// unsent bytes (at least one packet is always accepted into an empty queue,
// so a single large reply never fails on its own). Flush hands a burst to
// Run; if w has SetWriteDeadline, CloseWithin bounds the last writes.
func NewOutbox(w io.Writer, limit int) *Outbox {
	o := &Outbox{w: w, limit: limit, wake: make(chan struct{}, 1), done: make(chan struct{})}
	o.dl, _ = w.(interface{ SetWriteDeadline(time.Time) error })
	return o
}

// NewConnOutbox returns an Outbox over c (see NewOutbox). With inline,
// Flush writes a burst's replies in the calling goroutine; pass
// InlineSafe(c) unless the caller knows better.
func NewConnOutbox(c net.Conn, limit int, inline bool) *Outbox {
	o := NewOutbox(c, limit)
	o.inline = inline
	return o
}

// InlineSafe reports whether a connection's reader may write its own
// replies to c with a deadline: true for sockets, whose kernel buffer
// absorbs a burst, and for in-memory connections that buffer writes the
// same way and say so with a BufferedWrites method. Not on net.Pipe, where
// a write waits for the peer's read, so a peer that writes before it reads
// would hold the reader for the whole timeout; not on TLS, whose
// connection is broken for good once a write times out.
func InlineSafe(c net.Conn) bool {
	if b, ok := c.(interface{ BufferedWrites() bool }); ok {
		return b.BufferedWrites()
	}
	_, socket := c.(syscall.Conn)
	return socket
}

// Append lets fn encode into the queue under the lock, avoiding a copy.
// fn must only append to the slice it is given.
func (o *Outbox) Append(fn func([]byte) []byte) error {
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
		o.err = ErrOutboxFull
		o.mu.Unlock()
		o.signal()
		return ErrOutboxFull
	}
	// Within a burst, Flush sends it; during a write, the writer looks
	// at the queue again when it is done.
	kick := before == 0 && !o.burst && !o.writing
	o.mu.Unlock()
	if kick {
		o.signal()
	}
	return nil
}

// Write queues b, which is copied.
func (o *Outbox) Write(b []byte) error {
	return o.Append(func(dst []byte) []byte { return append(dst, b...) })
}

// Packet queues one encoded packet.
func (o *Outbox) Packet(m Magic, t Type, args ...[]byte) error {
	return o.Append(func(dst []byte) []byte { return AppendPacket(dst, m, t, args...) })
}

// Begin starts a burst: output queued from now on waits for Flush. Begin
// and Flush belong to one goroutine, the connection's reader; calling
// Begin again within a burst (once per request) changes nothing. The
// reader must not wait for a reply to its own output between them.
func (o *Outbox) Begin() {
	o.mu.Lock()
	o.burst = true
	o.mu.Unlock()
}

// Flush ends a burst: what is queued leaves, written by the caller when
// the Outbox writes inline and nobody else is writing, else by Run (or by
// the goroutine writing now).
func (o *Outbox) Flush() {
	o.mu.Lock()
	o.burst = false
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

// Pending returns the number of bytes queued and not yet being written.
func (o *Outbox) Pending() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.pending)
}

func (o *Outbox) signal() {
	select {
	case o.wake <- struct{}{}:
	default:
	}
}

// write sends the whole queue; o.mu is held on entry and released. An
// inline write is bounded by the deadline; Run waits as long as it takes,
// until the output limit or a closing deadline ends the connection.
func (o *Outbox) write(inline bool) {
	buf := o.pending
	o.pending = o.spare[:0]
	o.spare = nil
	o.writing = true
	final := o.final
	o.mu.Unlock()
	if inline && !final {
		if now := time.Now(); o.deadline.Sub(now) < inlineWriteTimeout/2 {
			o.deadline = now.Add(inlineWriteTimeout)
			o.dl.SetWriteDeadline(o.deadline)
		}
	}
	n, err := o.w.Write(buf)
	for !inline && isTimeout(err) && o.dropInlineDeadline() {
		// It was a deadline an inline write left, still set: Run has
		// none.
		buf = buf[n:]
		n, err = o.w.Write(buf)
	}
	o.mu.Lock()
	o.writing = false
	if inline && isTimeout(err) {
		// Hand the rest to Run, ahead of newer output.
		o.pending = append(append(make([]byte, 0, len(buf)-n+len(o.pending)), buf[n:]...), o.pending...)
		err = nil
		buf = nil
	}
	if buf != nil && cap(buf) <= keepBody {
		o.spare = buf[:0]
	}
	if err != nil && (o.err == nil || o.err == ErrOutboxClosed) {
		o.err = err
	}
	more := len(o.pending) > 0 || o.closed || o.err != nil
	o.mu.Unlock()
	if more {
		o.signal()
	}
}

// dropInlineDeadline clears a deadline an inline write left on w and
// reports whether it did; after CloseWithin the deadline is final.
func (o *Outbox) dropInlineDeadline() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.final || o.deadline.IsZero() {
		return false
	}
	o.deadline = time.Time{}
	o.dl.SetWriteDeadline(o.deadline)
	return true
}

func isTimeout(err error) bool {
	if err == nil {
		// The common case, before errors.As puts ne on the heap.
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Run is the writer loop; run it in its own goroutine. It returns when Close
// was called and everything queued before it has been written, or on the
// first write error or overflow (which it returns).
func (o *Outbox) Run() error {
	defer close(o.done)
	for range o.wake {
		o.mu.Lock()
		if o.err != nil && o.err != ErrOutboxClosed {
			err := o.err
			o.mu.Unlock()
			return err
		}
		if o.writing {
			o.mu.Unlock() // the writer signals again when done
			continue
		}
		if len(o.pending) > 0 && (!o.burst || o.closed) {
			o.write(false) // unlocks
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

// Close stops accepting packets; Run writes what is queued and returns.
func (o *Outbox) Close() {
	o.mu.Lock()
	if !o.closed {
		o.closed = true
		if o.err == nil {
			o.err = ErrOutboxClosed
		}
	}
	o.mu.Unlock()
	o.signal()
}

// CloseWithin is Close, with the rest of the output bounded by d: Run gives
// up on a peer that has not read it by then. Without a write deadline on
// the writer it is Close.
func (o *Outbox) CloseWithin(d time.Duration) {
	o.mu.Lock()
	if o.dl != nil {
		o.final = true
		o.dl.SetWriteDeadline(time.Now().Add(d))
	}
	o.mu.Unlock()
	o.Close()
}

// Done is closed when Run has returned.
func (o *Outbox) Done() <-chan struct{} { return o.done }
