package jobserver

import (
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// ability is one CAN_DO registration of a worker.
type ability struct {
	fn      *function
	timeout time.Duration // CAN_DO_TIMEOUT; 0 = none
}

// replySlot holds a connection's place in its reply order while a durable
// submit waits for the Store: everything the connection is sent after the
// slot waits behind it, so replies still leave in request order.
type replySlot struct {
	c     *conn
	ready bool
	reply []byte
	after []byte
}

// conn is one client, worker or admin connection. Fields below mu are
// guarded by Server.mu; the rest belong to the connection's goroutines.
type conn struct {
	s    *Server
	nc   net.Conn
	out  *protocol.Outbox
	id   int // the fd where there is one, as gearmand's "workers" shows
	host string

	killOnce sync.Once
	persist  chan struct{} // semaphore of durable submits in flight
	direct   *Direct       // set on a connection from inside the process

	// Guarded by Server.mu.
	prev, next *conn
	abilities  []ability // registration order; scanned newest first
	clientID   string
	exceptions bool
	sleeping   bool
	noopSent   bool
	running    []*job       // jobs assigned to this worker
	waiting    map[*job]int // foreground jobs this client is attached to
	chain      []*replySlot // replies held back behind a durable submit
	chainBytes int
	dead       bool
}

func (s *Server) serveConn(nc net.Conn) {
	c := &conn{s: s, nc: nc, host: hostOf(nc.RemoteAddr())}
	c.out = protocol.NewConnOutbox(nc, s.opts.OutboxLimit, protocol.InlineSafe(nc))
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	if s.opts.MaxConnections > 0 && s.nconns >= s.opts.MaxConnections {
		s.mu.Unlock()
		s.log.Warn("connection refused: too many connections", "remote", nc.RemoteAddr().String(), "max", s.opts.MaxConnections)
		nc.SetWriteDeadline(time.Now().Add(time.Second))
		nc.Write(protocol.AppendError(nil, "SERVER_ERROR", "too many connections"))
		nc.Close()
		return
	}
	s.connSeq++
	c.id = fdOf(nc, int(s.connSeq))
	c.next = s.conns
	if s.conns != nil {
		s.conns.prev = c
	}
	s.conns = c
	s.nconns++
	s.mu.Unlock()

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		if err := c.out.Run(); err != nil {
			if errors.Is(err, protocol.ErrOutboxFull) {
				s.log.Warn("connection closed: peer is not reading its replies", "remote", nc.RemoteAddr().String())
			}
			nc.Close()
		}
	}()

	c.readLoop()
	c.end()
	<-writerDone
	nc.Close()
}

// end takes a connection whose requests have ended out of the server, and
// lets its writer send what is queued (an ERROR naming why it closes) but
// never wait long on a peer that does not read.
func (c *conn) end() {
	s := c.s
	s.mu.Lock()
	removed := s.dropConn(c)
	s.mu.Unlock()
	s.storeRemove(removed)
	c.out.CloseWithin(2 * time.Second)
}

func hostOf(a net.Addr) string {
	if a == nil {
		return "-"
	}
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.IP.String()
	}
	if h, _, err := net.SplitHostPort(a.String()); err == nil {
		return h
	}
	return a.String()
}

// fdOf returns the connection's file descriptor, which gearmand's
// "workers" prints first, or fallback for connections without one.
func fdOf(nc net.Conn, fallback int) int {
	sc, ok := nc.(syscall.Conn)
	if !ok {
		return fallback
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return fallback
	}
	fd := fallback
	rc.Control(func(f uintptr) { fd = int(f) })
	return fd
}

func (c *conn) readLoop() {
	s := c.s
	// The Reader reads from the socket only when every request it had is
	// handled: that is when this reader sends the burst's replies.
	r := protocol.NewReader(flushingReader{c}, protocol.ReaderOptions{Expect: protocol.Req, MaxData: s.opts.MaxPacket, Text: true})
	defer c.flushAll()
	if s.opts.IdleTimeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(s.opts.IdleTimeout))
	}
	first := true
	var p protocol.Packet
	for {
		err := r.Read(&p)
		c.out.Begin()
		if err != nil {
			var fe *protocol.FrameError
			if errors.As(err, &fe) {
				s.log.Info("bad input", "remote", c.nc.RemoteAddr().String(), "err", err)
				if fe.Synced && isWorkResult(fe.Type) {
					// libgearman and Perl workers die on an unexpected
					// ERROR, and Perl's Gearman::Worker sends WORK_STATUS
					// without its denominator: log and drop, so that
					// deployed workers keep running.
					continue
				}
				c.frameError(fe)
				if fe.Synced {
					continue
				}
				return
			}
			var ne net.Error
			if first && errors.As(err, &ne) && ne.Timeout() {
				s.log.Info("connection closed: no packet within the idle timeout", "remote", c.nc.RemoteAddr().String())
			} else if err != io.EOF && !errors.Is(err, net.ErrClosed) {
				s.log.Debug("connection ended", "remote", c.nc.RemoteAddr().String(), "err", err)
			}
			return
		}
		if first {
			first = false
			if s.opts.IdleTimeout > 0 {
				// Under the lock, so that Close's deadline always wins.
				s.mu.Lock()
				if !s.closing {
					c.nc.SetReadDeadline(time.Time{})
				}
				s.mu.Unlock()
			}
		}
		if !c.handle(&p) {
			return
		}
	}
}

// flushingReader sends a connection's pending output before each read
// from its socket.
type flushingReader struct{ c *conn }

func (fr flushingReader) Read(b []byte) (int, error) {
	fr.c.flushAll()
	return fr.c.nc.Read(b)
}

// flushAll writes the replies of the burst just handled. Output for
// other connections (WORK_* to clients, NOOP to workers) is left to their
// writer goroutines: writing it here put a client's write on the worker's
// critical path and cost more CPU per job than the goroutine switch.
func (c *conn) flushAll() { c.out.Flush() }

// frameError answers a framing error: an ERROR packet naming the cause,
// or an ERR line for a bad admin line.
func (c *conn) frameError(fe *protocol.FrameError) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if errors.Is(fe, protocol.ErrLineTooLong) || errors.Is(fe, protocol.ErrTooManyTokens) {
		text := fe.Error()
		c.send(func(b []byte) []byte { return protocol.AppendTextError(b, fe.Code, text) })
		return
	}
	text := fe.Error()
	c.send(func(b []byte) []byte { return protocol.AppendError(b, fe.Code, text) })
}

// kill closes the connection because of err; its reader then cleans up.
// Safe to call with Server.mu held.
func (c *conn) kill(err error) {
	c.killOnce.Do(func() {
		c.s.log.Warn("closing connection", "remote", c.nc.RemoteAddr().String(), "err", err)
		c.nc.Close()
	})
}

// send queues output for c, behind any held-back reply. Server.mu must be
// held. fn must only append to its argument.
func (c *conn) send(fn func([]byte) []byte) {
	if c.dead {
		return
	}
	if n := len(c.chain); n > 0 {
		last := c.chain[n-1]
		before := len(last.after)
		last.after = fn(last.after)
		c.chainBytes += len(last.after) - before
		if c.chainBytes > c.s.opts.OutboxLimit {
			c.dead = true
			c.kill(protocol.ErrOutboxFull)
		}
		return
	}
	if err := c.out.Append(fn); err != nil {
		c.dead = true
		c.kill(err)
	}
}

// hold reserves c's next place in its reply order. Server.mu must be held.
func (c *conn) hold() *replySlot {
	sl := &replySlot{c: c}
	c.chain = append(c.chain, sl)
	return sl
}

// resolve fills a held slot and releases every reply that no longer waits.
// Server.mu must be held.
func (sl *replySlot) resolve(fn func([]byte) []byte) {
	sl.reply = fn(sl.reply)
	sl.ready = true
	c := sl.c
	for len(c.chain) > 0 && c.chain[0].ready {
		head := c.chain[0]
		c.chain[0] = nil
		c.chain = c.chain[1:]
		c.chainBytes -= len(head.after)
		if c.dead {
			continue
		}
		if err := c.out.Append(func(b []byte) []byte { return append(append(b, head.reply...), head.after...) }); err != nil {
			c.dead = true
			c.kill(err)
		}
	}
	if len(c.chain) == 0 {
		c.chain = nil
	}
}

// dropConn forgets a closed connection: its running jobs are requeued
// (or dropped past the retry limit), its registrations removed, and its
// foreground jobs abandoned. It returns stored jobs to remove.
func (s *Server) dropConn(c *conn) []uint64 {
	c.dead = true
	if c.prev == nil {
		if s.conns == c {
			s.conns = c.next
		}
	} else {
		c.prev.next = c.next
	}
	if c.next != nil {
		c.next.prev = c.prev
	}
	c.prev, c.next = nil, nil
	s.nconns--
	var removed []uint64
	for len(c.running) > 0 {
		j := c.running[len(c.running)-1]
		if id, ok := s.requeue(j); ok {
			removed = append(removed, id)
		}
	}
	for _, a := range c.abilities {
		a.fn.removeWorker(c)
	}
	c.abilities = nil
	for j, n := range c.waiting {
		for ; n > 0; n-- {
			j.detach(c)
		}
		s.abandonIfOrphan(j)
	}
	c.waiting = nil
	c.chain = nil
	return removed
}

func (f *function) removeWorker(c *conn) {
	for i, w := range f.workers {
		if w == c {
			f.workers = append(f.workers[:i], f.workers[i+1:]...)
			return
		}
	}
}

// abandonIfOrphan marks a foreground job no client waits on any more: a
// queued one is dropped when a worker would get it (as gearmand does, so
// that status counts it until then), a running one runs on with its
// results going nowhere.
func (s *Server) abandonIfOrphan(j *job) {
	if j.background() || j.hasClients() || j.state == stDone {
		return
	}
	j.flags |= flagIgnore
}

func isWorkResult(t protocol.Type) bool {
	switch t {
	case protocol.WorkData, protocol.WorkWarning, protocol.WorkStatus, protocol.WorkComplete,
		protocol.WorkFail, protocol.WorkException:
		return true
	}
	return false
}
