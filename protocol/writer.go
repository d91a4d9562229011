package protocol

import (
	"bufio"
	"encoding/binary"
	"errors"
	"io"
	"sync"
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
// goroutine. Any goroutine appends encoded packets without blocking; the
// writer sends everything queued in one write, so replies to a burst of
// pipelined requests leave in one segment. A peer that stops reading makes
// the queue pass its limit: Append then fails with ErrOutboxFull and the
// owner closes the connection rather than wait on it.
type Outbox struct {
	w     io.Writer
	limit int

	mu      sync.Mutex
	pending []byte
	spare   []byte
	err     error
	closed  bool
	wake    chan struct{}
	done    chan struct{}
}

// NewOutbox returns an Outbox that writes to w and holds at most limit
// unsent bytes (at least one packet is always accepted into an empty queue,
// so a single large reply never fails on its own).
func NewOutbox(w io.Writer, limit int) *Outbox {
	return &Outbox{w: w, limit: limit, wake: make(chan struct{}, 1), done: make(chan struct{})}
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
	o.mu.Unlock()
	if before == 0 {
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

// Pending returns the number of bytes queued and not yet handed to the
// writer.
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

// Run is the writer loop; run it in its own goroutine. It returns when Close
// was called and everything queued before it has been written, or on the
// first write error or overflow (which it returns).
func (o *Outbox) Run() error {
	defer close(o.done)
	for {
		<-o.wake
		o.mu.Lock()
		buf := o.pending
		o.pending = o.spare[:0]
		o.spare = nil
		err, closed := o.err, o.closed
		o.mu.Unlock()
		if err != nil && err != ErrOutboxClosed {
			return err
		}
		if len(buf) > 0 {
			if _, werr := o.w.Write(buf); werr != nil {
				o.mu.Lock()
				o.err = werr
				o.mu.Unlock()
				return werr
			}
		}
		o.mu.Lock()
		if cap(buf) <= keepBody && o.spare == nil {
			o.spare = buf[:0]
		}
		if closed && len(o.pending) == 0 {
			o.mu.Unlock()
			return nil
		}
		if len(o.pending) > 0 || o.closed {
			o.signal()
		}
		o.mu.Unlock()
	}
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

// Done is closed when Run has returned.
func (o *Outbox) Done() <-chan struct{} { return o.done }
