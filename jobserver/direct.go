package jobserver

import (
	"errors"
	"net"
	"sync"

	"github.com/gearproxy/gearproxy/protocol"
)

// ErrDirectClosed is returned by Direct.Write once the connection has
// ended.
var ErrDirectClosed = errors.New("jobserver: direct connection closed")

// Direct is a connection from inside the process: a proxy's bundled
// backend. Its requests are handled in the goroutine that writes them,
// before Write returns, instead of by a reader goroutine of the
// connection's own; replies and everything else the server sends on the
// connection go to the writer it was opened with, as on a socket. On a
// busy proxy that saves a goroutine hand-off per request burst, the
// largest cost the bundled backend adds over a job server of its own.
type Direct struct {
	c          *conn
	writerDone chan struct{}

	// mu serialises Write: the connection's own fields belong to
	// whoever holds it, as they belong to the reader of a socket.
	mu     sync.Mutex
	closed bool

	closeOnce sync.Once
}

// ServeDirect opens a direct connection whose output goes to replies; its
// RemoteAddr names the peer in logs and "workers", and closing it ends
// the peer's view of the connection (as when the server kills one).
// Requests are written to the returned Direct in whole packets.
func (s *Server) ServeDirect(replies net.Conn) (*Direct, error) {
	c := &conn{s: s, nc: replies, host: hostOf(replies.RemoteAddr())}
	c.out = protocol.NewConnOutbox(replies, s.opts.OutboxLimit, protocol.InlineSafe(replies))
	d := &Direct{c: c, writerDone: make(chan struct{})}
	c.direct = d
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		replies.Close()
		return nil, ErrDirectClosed
	}
	if s.opts.MaxConnections > 0 && s.nconns >= s.opts.MaxConnections {
		s.mu.Unlock()
		replies.Close()
		return nil, errors.New("jobserver: too many connections")
	}
	s.connSeq++
	c.id = int(s.connSeq)
	c.next = s.conns
	if s.conns != nil {
		s.conns.prev = c
	}
	s.conns = c
	s.nconns++
	s.connWG.Add(1)
	s.mu.Unlock()
	go func() {
		defer close(d.writerDone)
		if err := c.out.Run(); err != nil {
			replies.Close()
		}
	}()
	return d, nil
}

// Write handles the requests in b, which holds whole packets, and sends
// their replies before it returns.
func (d *Direct) Write(b []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, ErrDirectClosed
	}
	c := d.c
	// A reader only while there is something to read: an idle
	// connection holds no read buffer.
	fr := c.s.feeds.Get(b)
	defer c.s.feeds.Put(fr)
	var p protocol.Packet
	for fr.More() {
		c.out.Begin()
		if err := fr.Read(&p); err != nil {
			var fe *protocol.FrameError
			if errors.As(err, &fe) {
				c.s.log.Info("bad input", "remote", c.nc.RemoteAddr().String(), "err", err)
				if fe.Synced && isWorkResult(fe.Type) {
					continue
				}
				c.frameError(fe)
				if fe.Synced {
					continue
				}
			}
			// A packet cut short or a stream out of sync: the
			// connection ends, as a socket's would.
			d.endLocked()
			return len(b), nil
		}
		if !c.handle(&p) {
			d.endLocked()
			return len(b), nil
		}
	}
	c.flushAll()
	return len(b), nil
}

// Close ends the connection: what is queued for the peer is written (for
// at most two seconds), then its replies writer is closed.
func (d *Direct) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.endLocked()
	return nil
}

// endLocked does what a socket connection's goroutine does when its
// reader stops; d.mu is held.
func (d *Direct) endLocked() {
	d.closed = true
	d.closeOnce.Do(func() {
		c := d.c
		c.flushAll()
		c.end()
		go func() {
			<-d.writerDone
			c.nc.Close()
			c.s.connWG.Done()
		}()
	})
}
