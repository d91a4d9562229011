package proxy

import (
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gearproxy/gearproxy/backend"
	"github.com/gearproxy/gearproxy/protocol"
)

// session is one client or worker connection. Its reader goroutine reads
// and dispatches packets in order; replies are produced by that goroutine
// or by backend link readers. The reader writes what it queued during a
// burst of requests itself, before it reads again (Outbox.Flush), which
// saves a goroutine switch; output queued by link readers leaves through
// the Outbox's writer goroutine, so no backend waits on a client's socket.
// A worker's reader does the same for its own links to the backends.
// A session becomes a worker lazily, on its first worker packet.
type session struct {
	srv    *Server
	id     uint64
	conn   net.Conn
	out    *protocol.Outbox
	ident  Identity
	remote string
	src    *sourceReader
	// held is the worker links the reader holds for its burst; only the
	// reader touches it. holding: the burst has begun.
	held    []*backend.Link
	holding bool
	// pumps is the shared links to in-process backends that the reader
	// sent requests on during its burst: flush takes their replies first
	// (backend.Link.Pump). Only the reader touches it.
	pumps []*backend.Link

	exceptions atomic.Bool

	mu sync.Mutex
	// replies owed, in request order. Reply i belongs to sequence number
	// base+i; a reply that is ready waits until every earlier one is, so
	// each client sees its replies in the order it sent its requests.
	base    uint64
	replies []reply
	store   []reply
	// jobs this session waits on, with how many times it submitted each.
	jobs     map[*job]*pool
	clientID string
	worker   *worker
	closing  bool
	reason   string
	listener string // its name, for the open and close log lines
}

type reply struct {
	data  []byte
	ready bool
}

func newSession(s *Server, a Authenticated) *session {
	sess := &session{
		srv:    s,
		id:     s.nextID.Add(1),
		conn:   a.Conn,
		out:    protocol.NewConnOutbox(a.Conn, s.liveLimits().MaxOutput, inlineSafe(a.Conn)),
		ident:  a.Identity,
		remote: a.Conn.RemoteAddr().String(),
	}
	sess.src = &sourceReader{conn: a.Conn, prefix: a.Buffered, flush: sess.flush}
	return sess
}

// inlineSafe reports whether the session's reader may write its replies
// itself: on a plain socket, seen through the wrapper the authenticator
// puts around every connection.
func inlineSafe(c net.Conn) bool {
	if lc, ok := c.(*liveConn); ok {
		c = lc.Conn
	}
	return protocol.InlineSafe(c)
}

// sourceReader feeds the protocol.Reader. It hands out bytes read ahead
// (by the authenticator, or the one byte an idle session waits for), and
// arms a short read deadline when the session is at a packet boundary, so
// that a quiet session can give its read buffer back. Before it waits on
// the socket it flushes the replies of the burst just handled.
type sourceReader struct {
	conn   net.Conn
	prefix []byte
	one    [1]byte
	armed  bool
	flush  func()
}

func (r *sourceReader) Read(p []byte) (int, error) {
	if len(r.prefix) > 0 {
		n := copy(p, r.prefix)
		r.prefix = r.prefix[n:]
		return n, nil
	}
	r.flush()
	if r.armed {
		r.armed = false
		r.conn.SetReadDeadline(time.Now().Add(shrinkAfter))
		n, err := r.conn.Read(p)
		r.conn.SetReadDeadline(time.Time{})
		return n, err
	}
	return r.conn.Read(p)
}

// waitFirstByte blocks without a read buffer until the peer sends
// something, then keeps that byte for the next Read.
func (r *sourceReader) waitFirstByte(idle time.Duration, busy func() bool) error {
	if len(r.prefix) > 0 {
		return nil
	}
	r.flush()
	for {
		if idle > 0 {
			r.conn.SetReadDeadline(time.Now().Add(idle))
		}
		n, err := r.conn.Read(r.one[:])
		if idle > 0 {
			r.conn.SetReadDeadline(time.Time{})
		}
		if n == 1 {
			r.prefix = r.one[:]
			return nil
		}
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && busy() {
				continue
			}
			return err
		}
	}
}

func (s *session) serve() {
	log := s.srv.log.With("session", s.id, "remote", s.remote, "user", s.ident.User, "listener", s.listener)
	// One line per connection at info: operators asked who connects
	// where, and why each connection ended (issue 7).
	log.Info("connection open")
	go s.out.Run()
	err := s.readLoop()
	s.cleanup()
	s.mu.Lock()
	reason := s.reason
	s.mu.Unlock()
	if reason == "" && err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		reason = err.Error()
	}
	if reason == "" {
		reason = "peer closed"
	}
	log.Info("connection closed", "reason", reason)
}

// pooledReader is a packet reader that sessions share while they are
// quiet: it reads from whichever session's source it is lent to.
type pooledReader struct {
	r    *protocol.Reader
	feed feed
}

type feed struct{ src io.Reader }

func (f *feed) Read(p []byte) (int, error) { return f.src.Read(p) }

func (srv *Server) getReader(src io.Reader) *pooledReader {
	pr, _ := srv.readers.Get().(*pooledReader)
	if pr == nil {
		pr = &pooledReader{}
		pr.r = protocol.NewReader(&pr.feed, protocol.ReaderOptions{Expect: protocol.Req, MaxData: srv.opts.MaxData, Text: true})
	}
	pr.feed.src = src
	return pr
}

// putReader takes back a reader with nothing buffered.
func (srv *Server) putReader(pr *pooledReader) {
	pr.feed.src = nil
	srv.readers.Put(pr)
}

func (s *session) readLoop() error {
	var pr *pooledReader
	var p protocol.Packet
	for {
		if pr == nil {
			if err := s.src.waitFirstByte(s.srv.liveLimits().IdleTimeout, s.busy); err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					s.setReason("idle timeout")
				}
				return err
			}
			pr = s.srv.getReader(s.src)
		}
		r := pr.r
		if r.Buffered() == 0 {
			s.src.armed = true
		}
		err := r.Read(&p)
		s.src.armed = false
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) && r.Buffered() == 0 {
				// Quiet at a packet boundary: give the buffer back.
				s.srv.putReader(pr)
				pr = nil
				continue
			}
			var fe *protocol.FrameError
			if errors.As(err, &fe) {
				s.begin()
				seq := s.reserve()
				if errors.Is(fe, protocol.ErrLineTooLong) || errors.Is(fe, protocol.ErrTooManyTokens) {
					// An admin line gets its error as a text line.
					s.fill(seq, func(dst []byte) []byte { return protocol.AppendTextError(dst, fe.Code, fe.Error()) })
				} else {
					s.fill(seq, func(dst []byte) []byte { return protocol.AppendError(dst, fe.Code, fe.Error()) })
				}
				if fe.Synced {
					continue
				}
				s.setReason("protocol error: " + fe.Error())
			}
			return err
		}
		if p.Type == protocol.Text {
			// An admin command may wait on every backend: what is
			// queued leaves now rather than wait with it.
			s.flush()
		} else {
			s.begin()
		}
		s.dispatch(&p)
	}
}

// begin starts or continues the reader's burst: its replies, and a
// worker's packets to its own links, wait for flush. Shared client links
// are not held: other sessions' requests would wait for this reader.
func (s *session) begin() {
	s.out.Begin()
	if s.holding {
		return
	}
	s.holding = true
	s.mu.Lock()
	if w := s.worker; w != nil {
		for _, l := range w.links {
			if l != nil {
				l.Begin()
				s.held = append(s.held, l)
			}
		}
	}
	s.mu.Unlock()
}

// flush ends the reader's burst: what it held leaves, written by the
// reader itself where the connection allows.
func (s *session) flush() {
	for _, l := range s.held {
		l.Flush()
	}
	// Replies from in-process backends are ready by now: dispatched
	// here, those for this session join its burst's write. Dispatching
	// may send more (the next queued grab), hence the rounds; a few
	// suffice, and whatever is left goes the usual way.
	for range 4 {
		took := false
		for _, l := range s.held {
			took = l.Pump() || took
		}
		for _, l := range s.pumps {
			took = l.Pump() || took
		}
		if !took {
			break
		}
	}
	s.out.Flush()
	for i := range s.held {
		s.held[i] = nil
	}
	s.held = s.held[:0]
	for i := range s.pumps {
		s.pumps[i] = nil
	}
	s.pumps = s.pumps[:0]
	s.holding = false
}

// notePump remembers a shared link the reader sent a request on, for
// flush. Only the reader calls it.
func (s *session) notePump(l *backend.Link) {
	if l == nil || !l.Pumped() || slices.Contains(s.pumps, l) {
		return
	}
	s.pumps = append(s.pumps, l)
}

func (s *session) setReason(r string) {
	s.mu.Lock()
	if s.reason == "" {
		s.reason = r
	}
	s.mu.Unlock()
}

// busy reports whether the session waits for something, so an idle
// timeout must not cut it off.
func (s *session) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.replies) > 0 || len(s.jobs) > 0 || s.worker != nil
}

// reserve takes the next reply slot.
func (s *session) reserve() uint64 {
	s.mu.Lock()
	seq := s.base + uint64(len(s.replies))
	s.appendReply(reply{})
	s.mu.Unlock()
	return seq
}

// appendReply adds a slot, reusing the slots' backing array once the
// queue has drained, so a busy session does not allocate per request.
func (s *session) appendReply(r reply) {
	if len(s.replies) == 0 {
		s.replies = s.store[:0]
	}
	s.replies = append(s.replies, r)
	if cap(s.replies) > cap(s.store) {
		s.store = s.replies[:0]
	}
}

// fill answers reply slot seq; encode runs before fill returns.
func (s *session) fill(seq uint64, encode func([]byte) []byte) {
	s.mu.Lock()
	s.fillLocked(seq, encode)
	s.mu.Unlock()
}

func (s *session) fillLocked(seq uint64, encode func([]byte) []byte) {
	i := int(seq - s.base)
	if s.closing || i < 0 || i >= len(s.replies) {
		return
	}
	if i > 0 {
		s.replies[i] = reply{data: encode(nil), ready: true}
		return
	}
	if err := s.out.Append(encode); err != nil {
		s.overflow(err)
	}
	s.popLocked()
	// Send every reply that was ready and waited behind this one.
	for len(s.replies) > 0 && s.replies[0].ready {
		if err := s.out.Write(s.replies[0].data); err != nil {
			s.overflow(err)
		}
		s.popLocked()
	}
}

func (s *session) popLocked() {
	s.replies[0] = reply{}
	s.replies = s.replies[1:]
	s.base++
}

// push sends a packet that answers no request (WORK_* to a client, NOOP to
// a worker). It must not overtake an owed reply it depends on (a job's
// JOB_CREATED), so while replies are owed it queues behind them.
func (s *session) push(encode func([]byte) []byte) {
	s.mu.Lock()
	s.pushLocked(encode)
	s.mu.Unlock()
}

func (s *session) pushLocked(encode func([]byte) []byte) {
	if s.closing {
		return
	}
	if len(s.replies) == 0 {
		if err := s.out.Append(encode); err != nil {
			s.overflow(err)
		}
		return
	}
	s.appendReply(reply{data: encode(nil), ready: true})
}

// answer is reserve plus fill, for replies the reader knows at once.
func (s *session) answer(encode func([]byte) []byte) {
	s.push(encode)
}

func (s *session) workPacket(t protocol.Type, args [][]byte) {
	if t == protocol.WorkException && !s.exceptions.Load() {
		// Without the exceptions option gearmand sends WORK_FAIL with a
		// stray NUL after the handle, which hangs some clients; ours is
		// clean.
		h := args[0]
		s.push(func(dst []byte) []byte { return protocol.AppendPacket(dst, protocol.Res, protocol.WorkFail, h) })
		return
	}
	s.push(func(dst []byte) []byte { return protocol.AppendPacket(dst, protocol.Res, t, args...) })
}

func (s *session) overflow(err error) {
	if s.reason == "" {
		s.reason = "output: " + err.Error()
	}
	s.closing = true
	// Closing the connection ends the reader; cleanup does the rest.
	s.conn.Close()
}

// kill ends the session from outside its goroutines.
func (s *session) kill(reason string) {
	s.setReason(reason)
	s.conn.Close()
}

func (s *session) attach(p *pool, j *job) {
	j.subs = append(j.subs, s)
	s.mu.Lock()
	if s.jobs == nil {
		s.jobs = map[*job]*pool{}
	}
	s.jobs[j] = p
	s.mu.Unlock()
}

func (s *session) detach(j *job) {
	s.mu.Lock()
	delete(s.jobs, j)
	s.mu.Unlock()
}

func (s *session) cleanup() {
	s.mu.Lock()
	s.closing = true
	jobs := s.jobs
	s.jobs = nil
	w := s.worker
	s.mu.Unlock()
	for j, p := range jobs {
		p.detach(s, j)
	}
	if w != nil {
		w.close()
	}
	s.out.Close()
	select {
	case <-s.out.Done():
	case <-time.After(time.Second):
	}
	s.conn.Close()
}
