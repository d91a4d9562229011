package backend

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// pipeBuffer bounds the bytes in flight in one direction of a bundled
// backend's connection; a writer past it waits, as on a socket.
const pipeBuffer = 4 << 20

// Pipe returns the two ends of an in-memory connection for an in-process
// job server. Unlike net.Pipe it is buffered: a write returns once its
// bytes are queued instead of waiting for the reader to take them all,
// which saves a goroutine hand-off per packet in each direction. It
// supports deadlines, since servers use them.
func Pipe() (net.Conn, net.Conn) {
	a, b := newHalf(), newHalf()
	return &memConn{r: a, w: b}, &memConn{r: b, w: a}
}

// half is one direction: bytes written by one end, read by the other.
type half struct {
	mu   sync.Mutex
	data bytes.Buffer
	eof  bool // the writing end closed: reads drain, then io.EOF
	gone bool // the reading end closed: writes fail
	// whole makes every write all or nothing: one that does not fit
	// fails at once instead of waiting for room. The reader then only
	// ever finds whole writes, and a writer that writes whole packets
	// lets it take everything at once (take) without ever stopping in
	// the middle of a packet.
	whole bool
	// buffered mirrors data.Len() > 0 for whole-writes halves, so that
	// a reader can see there is nothing to take without the lock.
	buffered atomic.Bool
	readable chan struct{}
	writable chan struct{}
	rdl, wdl time.Time // deadlines of the reading and the writing end
}

func newHalf() *half {
	return &half{readable: make(chan struct{}, 1), writable: make(chan struct{}, 1)}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// wait blocks until c is signalled or the deadline passes (false).
func wait(c chan struct{}, deadline time.Time) bool {
	if deadline.IsZero() {
		<-c
		return true
	}
	d := time.Until(deadline)
	if d <= 0 {
		return false
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c:
		return true
	case <-t.C:
		return false
	}
}

func (h *half) read(p []byte) (int, error) {
	for {
		h.mu.Lock()
		switch {
		case h.gone:
			h.mu.Unlock()
			return 0, net.ErrClosed
		case h.data.Len() > 0:
			n, _ := h.data.Read(p)
			h.mu.Unlock()
			signal(h.writable)
			return n, nil
		case h.eof:
			h.mu.Unlock()
			return 0, io.EOF
		case !h.rdl.IsZero() && !time.Now().Before(h.rdl):
			h.mu.Unlock()
			return 0, os.ErrDeadlineExceeded
		}
		dl := h.rdl
		h.mu.Unlock()
		if !wait(h.readable, dl) {
			return 0, os.ErrDeadlineExceeded
		}
	}
}

// errPipeFull fails a write to a whole-writes half that has no room: its
// reader has stopped taking what it is sent.
var errPipeFull = errors.New("backend: in-process connection full: the proxy is not reading it")

// wholeLimit bounds the bytes waiting in a whole-writes half, as
// outputLimit bounds what waits for a backend's socket.
const wholeLimit = 64 << 20

func (h *half) write(p []byte) (int, error) {
	if h.whole {
		return h.writeWhole(p)
	}
	n := 0
	for len(p) > 0 {
		h.mu.Lock()
		switch {
		case h.eof:
			h.mu.Unlock()
			return n, net.ErrClosed
		case h.gone:
			h.mu.Unlock()
			return n, io.ErrClosedPipe
		case !h.wdl.IsZero() && !time.Now().Before(h.wdl):
			h.mu.Unlock()
			return n, os.ErrDeadlineExceeded
		case h.data.Len() < pipeBuffer:
			take := min(len(p), pipeBuffer-h.data.Len())
			h.data.Write(p[:take])
			p, n = p[take:], n+take
			h.mu.Unlock()
			signal(h.readable)
			continue
		}
		dl := h.wdl
		h.mu.Unlock()
		if !wait(h.writable, dl) {
			return n, os.ErrDeadlineExceeded
		}
	}
	return n, nil
}

func (h *half) writeWhole(p []byte) (int, error) {
	h.mu.Lock()
	switch {
	case h.eof:
		h.mu.Unlock()
		return 0, net.ErrClosed
	case h.gone:
		h.mu.Unlock()
		return 0, io.ErrClosedPipe
	case h.data.Len()+len(p) > wholeLimit:
		h.mu.Unlock()
		return 0, errPipeFull
	}
	h.data.Write(p)
	h.buffered.Store(true)
	h.mu.Unlock()
	signal(h.readable)
	return len(p), nil
}

// take appends everything written so far to dst without waiting; end is
// true once the writing end has closed (or this end has) and nothing more
// will come.
func (h *half) take(dst []byte) (_ []byte, end bool) {
	h.mu.Lock()
	dst = append(dst, h.data.Bytes()...)
	h.data.Reset()
	h.buffered.Store(false)
	end = h.eof || h.gone
	h.mu.Unlock()
	return dst, end
}

// waitData blocks until there is something to take, or the end.
func (h *half) waitData() {
	for {
		h.mu.Lock()
		ready := h.data.Len() > 0 || h.eof || h.gone
		h.mu.Unlock()
		if ready {
			return
		}
		<-h.readable
	}
}

type memConn struct {
	r, w *half
	once sync.Once
}

func (c *memConn) Read(p []byte) (int, error)  { return c.r.read(p) }
func (c *memConn) Write(p []byte) (int, error) { return c.w.write(p) }

// BufferedWrites tells protocol.InlineSafe that a write returns once
// queued, as on a socket: the in-process job server's reader then writes
// its replies itself instead of waking its writer goroutine.
func (c *memConn) BufferedWrites() bool { return true }

// Close ends both directions: the peer reads what was written, then EOF,
// and its writes fail.
func (c *memConn) Close() error {
	c.once.Do(func() {
		c.r.mu.Lock()
		c.r.gone = true
		c.r.data.Reset()
		c.r.mu.Unlock()
		c.w.mu.Lock()
		c.w.eof = true
		c.w.mu.Unlock()
		for _, h := range []*half{c.r, c.w} {
			signal(h.readable)
			signal(h.writable)
		}
	})
	return nil
}

func (c *memConn) LocalAddr() net.Addr  { return pipeAddr{} }
func (c *memConn) RemoteAddr() net.Addr { return pipeAddr{} }

func (c *memConn) SetDeadline(t time.Time) error {
	c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.r.mu.Lock()
	c.r.rdl = t
	c.r.mu.Unlock()
	signal(c.r.readable) // a waiting reader re-checks its deadline
	return nil
}

func (c *memConn) SetWriteDeadline(t time.Time) error {
	c.w.mu.Lock()
	c.w.wdl = t
	c.w.mu.Unlock()
	signal(c.w.writable)
	return nil
}

// pipeAddr names the in-process end of a bundled backend.
type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "in-process" }
