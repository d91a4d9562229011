package backend

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// ErrDown is returned for a request to a backend, or a link, that is not
// connected. The request was not sent.
var ErrDown = errors.New("backend down")

// outputLimit bounds what the proxy queues to one backend connection. A
// backend that stops reading that much is treated as dead.
const outputLimit = 64 << 20

// Link is one connection to a backend: a reader goroutine, and an Outbox
// with its writer goroutine. A worker's session, whose reader sends most
// of what goes on that worker's links, holds them for its bursts (Begin,
// Flush). The link's own reader does not: on a shared link, every
// session's requests would wait for its bursts (tried: the proxy over
// gearmand lost throughput). On a shared
// client link every request that gearmand answers (SUBMIT_JOB*,
// GET_STATUS*, OPTION_REQ, ECHO_REQ) is paired with its reply purely by
// order, as gearmand answers each connection's requests strictly in order;
// packets that answer no request (WORK_* on a client link, everything on a
// worker link) go to the link's handler.
type Link struct {
	conn    net.Conn
	out     *protocol.Outbox
	handler func(*protocol.Packet)
	onClose func(error)

	mu      sync.Mutex
	waiting []func(*protocol.Packet) // replies owed, oldest first
	head    int
	closed  bool

	// direct links (to an in-process server over Pipe, whose writes do
	// not wait for the reader) write in the caller's goroutine instead
	// of handing every packet to a writer goroutine. wmu orders those
	// writes; it is taken before mu and never inside it.
	direct bool
	wmu    sync.Mutex
	wbuf   []byte
	// pump receives on a link over DirectDialer; nil on others.
	pump *pump

	done chan struct{}
}

func newLink(conn net.Conn, maxData int, feeds *protocol.FeedReaders, handler func(*protocol.Packet), onClose func(error)) *Link {
	l := &Link{
		conn:    conn,
		handler: handler,
		onClose: onClose,
		done:    make(chan struct{}),
	}
	switch c := conn.(type) {
	case *directConn:
		l.direct = true
		l.pump = &pump{half: c.memConn.r, feeds: feeds}
		go l.pumpLoop()
		return l
	case *memConn:
		l.direct = true
	default:
		l.out = protocol.NewConnOutbox(conn, outputLimit, protocol.InlineSafe(conn))
		go func() {
			if err := l.out.Run(); err != nil {
				l.fail(err)
			}
		}()
	}
	go l.readLoop(maxData)
	return l
}

// isReply reports whether a packet from a backend answers a request, in
// gearmand's order, rather than arriving unasked.
func isReply(t protocol.Type) bool {
	switch t {
	case protocol.JobCreated, protocol.Error, protocol.StatusRes, protocol.StatusResUnique,
		protocol.OptionRes, protocol.EchoRes:
		return true
	}
	return false
}

func (l *Link) readLoop(maxData int) {
	defer close(l.done)
	r := protocol.NewReader(l.conn, protocol.ReaderOptions{Expect: protocol.Res, MaxData: maxData})
	var p protocol.Packet
	for {
		if err := r.Read(&p); err != nil {
			l.fail(err)
			return
		}
		l.dispatch(&p)
	}
}

// dispatch hands a packet from the backend to the reply it answers, or to
// the link's handler.
func (l *Link) dispatch(p *protocol.Packet) {
	if isReply(p.Type) {
		if reply := l.pop(); reply != nil {
			reply(p)
			return
		}
	}
	l.handler(p)
}

// pump is the receiving side of a link to an in-process job server
// (DirectDialer). Its pipe only ever holds whole packets, so whoever holds
// mu takes all of them at once and dispatches them without waiting: the
// link's own goroutine when it is woken, or a session's reader that has
// just written to the link (Pump).
type pump struct {
	mu    sync.Mutex
	half  *half
	feeds *protocol.FeedReaders
	buf   []byte
	p     protocol.Packet
}

func (l *Link) pumpLoop() {
	defer close(l.done)
	for {
		l.pump.half.waitData()
		l.pump.mu.Lock()
		_, err := l.drainLocked()
		l.pump.mu.Unlock()
		if err != nil {
			l.fail(err)
			return
		}
	}
}

// drainLocked dispatches everything the pipe holds; l.pump.mu is held. It
// reports whether there was anything, and io.EOF once the pipe has ended.
func (l *Link) drainLocked() (bool, error) {
	ps := l.pump
	var end bool
	ps.buf, end = ps.half.take(ps.buf[:0])
	took := len(ps.buf) > 0
	if took {
		fr := ps.feeds.Get(ps.buf)
		for fr.More() {
			if err := fr.Read(&ps.p); err != nil {
				ps.feeds.Put(fr)
				return took, err
			}
			l.dispatch(&ps.p)
		}
		ps.feeds.Put(fr)
	}
	if cap(ps.buf) > 64<<10 {
		ps.buf = nil
	}
	if end {
		return took, io.EOF
	}
	return took, nil
}

// Pumped reports whether the link's replies can be taken with Pump.
func (l *Link) Pumped() bool { return l.pump != nil }

// Pump dispatches, in the calling goroutine, what a link to an in-process
// job server has received, unless another goroutine is at it; it reports
// whether it dispatched anything. A session's reader calls it after a
// burst of requests and before it sends its replies, holding no lock: the
// replies its requests got (JOB_CREATED, JOB_ASSIGN) then leave in the
// same write as its others instead of travelling through two more
// goroutines. A no-op on other links.
func (l *Link) Pump() bool {
	// Most calls find nothing (replies already taken by an earlier
	// round, or by the link's goroutine): say so without the locks.
	if l.pump == nil || !l.pump.half.buffered.Load() || !l.pump.mu.TryLock() {
		return false
	}
	took, err := l.drainLocked()
	l.pump.mu.Unlock()
	if err != nil {
		go l.fail(err)
	}
	return took
}

func (l *Link) pop() func(*protocol.Packet) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.head == len(l.waiting) {
		return nil
	}
	f := l.waiting[l.head]
	l.waiting[l.head] = nil
	l.head++
	if l.head == len(l.waiting) {
		l.head, l.waiting = 0, l.waiting[:0]
	}
	return f
}

// Request queues a request and the function that receives its reply. reply
// runs on the link's reader goroutine (or a goroutine that calls Pump, with
// no lock held) with a packet valid only during the call, or with nil when
// the link dies before the reply arrives. encode
// appends the request to the link's output buffer (see Outbox.Append).
func (l *Link) Request(encode func([]byte) []byte, reply func(*protocol.Packet)) error {
	if l.direct {
		l.wmu.Lock()
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			l.wmu.Unlock()
			return ErrDown
		}
		l.waiting = append(l.waiting, reply)
		l.mu.Unlock()
		err := l.writeLocked(encode)
		l.wmu.Unlock()
		if err != nil {
			// The request is owed a reply now: failing the link
			// answers it with nil, on another goroutine since the
			// caller may hold the locks that reply takes.
			go l.fail(err)
		}
		return nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return ErrDown
	}
	// Queueing the reply and the bytes under one lock is what keeps the
	// pairing exact when many sessions share the link.
	l.waiting = append(l.waiting, reply)
	err := l.out.Append(encode)
	if err != nil {
		l.waiting = l.waiting[:len(l.waiting)-1]
	}
	l.mu.Unlock()
	if err != nil {
		go l.fail(err)
		return ErrDown
	}
	return nil
}

func (l *Link) writeLocked(encode func([]byte) []byte) error {
	l.wbuf = encode(l.wbuf[:0])
	_, err := l.conn.Write(l.wbuf)
	if cap(l.wbuf) > 64<<10 {
		l.wbuf = nil
	}
	return err
}

// Send queues a packet that gets no reply.
func (l *Link) Send(encode func([]byte) []byte) error {
	if l.direct {
		l.wmu.Lock()
		if l.Closed() {
			l.wmu.Unlock()
			return ErrDown
		}
		err := l.writeLocked(encode)
		l.wmu.Unlock()
		if err != nil {
			go l.fail(err)
			return ErrDown
		}
		return nil
	}
	if err := l.out.Append(encode); err != nil {
		go l.fail(err)
		return ErrDown
	}
	return nil
}

// Begin holds what is queued on the link until Flush (protocol.Outbox's
// burst mode), for the one goroutine that sends most of its packets: a
// worker session's reader. It must not wait for a reply on the link before
// Flush.
func (l *Link) Begin() {
	if l.out != nil {
		l.out.Begin()
	}
}

// Flush ends Begin: the held packets leave, written by the caller on a
// plain socket instead of by the writer goroutine.
func (l *Link) Flush() {
	if l.out != nil {
		l.out.Flush()
	}
}

// Packet queues one packet that gets no reply.
func (l *Link) Packet(t protocol.Type, args ...[]byte) error {
	return l.Send(func(dst []byte) []byte { return protocol.AppendPacket(dst, protocol.Req, t, args...) })
}

// Close sends what is queued (a worker's last WORK_COMPLETE must reach the
// backend even when the worker hangs up right after it), waits at most
// closeFlush for that, and closes the link; replies still owed are
// answered with nil.
func (l *Link) Close() {
	if l.out != nil {
		l.out.Close()
		t := time.NewTimer(closeFlush)
		select {
		case <-l.out.Done():
		case <-t.C:
		}
		t.Stop()
	}
	l.fail(ErrDown)
}

// closeFlush bounds how long Close waits for queued packets to leave.
const closeFlush = time.Second

// Abort closes the link at once, dropping what is queued: for a backend
// that is gone or not answering.
func (l *Link) Abort() { l.fail(ErrDown) }

// Closed reports whether the link has ended (or is ending).
func (l *Link) Closed() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// Done is closed when the link's reader has stopped.
func (l *Link) Done() <-chan struct{} { return l.done }

func (l *Link) fail(err error) {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	owed := l.waiting[l.head:]
	l.waiting, l.head = nil, 0
	l.mu.Unlock()
	if l.out != nil {
		l.out.Close()
	}
	l.conn.Close()
	for _, reply := range owed {
		reply(nil)
	}
	if l.onClose != nil {
		l.onClose(err)
	}
}
