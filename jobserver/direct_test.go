package jobserver

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// directConn is a peer's view of a direct connection: replies come over a
// socket, as a proxy's link reads them, and writes are handled at once.
type directConn struct {
	net.Conn
	d *Direct
}

func (c directConn) Write(b []byte) (int, error) { return c.d.Write(b) }

func (c directConn) Close() error {
	c.Conn.Close()
	return c.d.Close()
}

// directPeer opens a direct connection to s; its replies travel over a
// loopback socket.
func directPeer(t testing.TB, s *Server) (*peer, *Direct) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	d, err := s.ServeDirect(server)
	if err != nil {
		t.Fatal(err)
	}
	nc := directConn{Conn: client, d: d}
	t.Cleanup(func() { nc.Close() })
	return &peer{t: t, nc: nc, br: bufio.NewReader(client)}, d
}

// A client and a worker on direct connections see what they would see on
// sockets, replies and admin lines included.
func TestDirectRoundTrip(t *testing.T) {
	s, addr := testServer(t, Options{})
	c, _ := directPeer(t, s)
	w, _ := directPeer(t, s)
	w.send(protocol.CanDo, "direct.f")
	c.send(protocol.SubmitJob, "direct.f", "u1", "payload")
	h := c.expect(protocol.JobCreated).args[0]
	w.send(protocol.GrabJobUniq)
	w.expect(protocol.JobAssignUniq, h, "direct.f", "u1", "payload")
	w.send(protocol.WorkStatus, h, "1", "2")
	c.expect(protocol.WorkStatus, h, "1", "2")
	w.send(protocol.WorkComplete, h, "done")
	c.expect(protocol.WorkComplete, h, "done")
	w.send(protocol.GrabJob)
	w.expect(protocol.NoJob)

	// Pipelined in one write: each request is answered in order.
	c.write(append(protocol.AppendPacket(nil, protocol.Req, protocol.EchoReq, []byte("a")),
		protocol.AppendPacket(nil, protocol.Req, protocol.EchoReq, []byte("b"))...))
	c.expect(protocol.EchoRes, "a")
	c.expect(protocol.EchoRes, "b")

	// A socket peer sees the direct worker in "workers".
	a := dial(t, addr)
	a.write([]byte("workers\n"))
	found := false
	for {
		l := a.line()
		if l == ".\n" {
			break
		}
		found = found || strings.Contains(l, "direct.f")
	}
	if !found {
		t.Fatal(`"workers" does not list the direct worker`)
	}
}

// Bad input on a direct connection gets the ERROR a socket would, and a
// stream out of sync ends the connection; later writes fail.
func TestDirectBadInput(t *testing.T) {
	s, _ := testServer(t, Options{})
	c, d := directPeer(t, s)
	// A SUBMIT_JOB short of its NULs: the stream is still in step.
	c.write(protocol.AppendPacket(nil, protocol.Req, protocol.SubmitJob, []byte("f")))
	c.expect(protocol.Error, "INVALID_PACKET")
	c.send(protocol.EchoReq, "still here")
	c.expect(protocol.EchoRes, "still here")
	c.write([]byte("\x00XYZ\x00\x00\x00\x01\x00\x00\x00\x00"))
	c.expect(protocol.Error)
	c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("after bad magic: read %v, want EOF", err)
	}
	if _, err := d.Write(protocol.AppendPacket(nil, protocol.Req, protocol.EchoReq)); !errors.Is(err, ErrDirectClosed) {
		t.Fatalf("write after the end: %v", err)
	}
}

// Closing a direct client leaves the server as a socket client's hang-up
// does, and Server.Close ends direct connections still open instead of
// waiting on them.
func TestDirectClose(t *testing.T) {
	s, addr := testServer(t, Options{})
	status := func() map[string]string {
		a := dial(t, addr)
		a.write([]byte("status\n"))
		lines := map[string]string{}
		for {
			l := a.line()
			if l == ".\n" {
				return lines
			}
			name, rest, _ := strings.Cut(l, "\t")
			lines[name] = rest
		}
	}
	// Every connection but the asking one: just the direct client.
	a := dial(t, addr)
	others := func() int {
		a.write([]byte("workers\n"))
		n := 0
		for {
			l := a.line()
			if l == ".\n" {
				return n - 1
			}
			n++
		}
	}
	c, d := directPeer(t, s)
	c.send(protocol.SubmitJob, "gone.direct", "u1", "x")
	c.expect(protocol.JobCreated)
	if n := others(); n != 1 {
		t.Fatalf(`"workers" lists %d other connections, want the direct client`, n)
	}
	d.Close()
	if n := others(); n != 0 {
		t.Fatalf(`"workers" lists %d other connections after the direct client closed, want 0`, n)
	}
	sc := dial(t, addr)
	sc.send(protocol.SubmitJob, "gone.socket", "u1", "x")
	sc.expect(protocol.JobCreated)
	sc.nc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		st := status()
		if st["gone.direct"] == st["gone.socket"] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the client left: direct %q, socket %q", st["gone.direct"], st["gone.socket"])
		}
		time.Sleep(10 * time.Millisecond)
	}

	open, _ := directPeer(t, s)
	open.send(protocol.CanDo, "direct.f")
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Server.Close waits on an open direct connection")
	}
	open.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := open.br.ReadByte(); !errors.Is(err, io.EOF) {
		t.Fatalf("direct peer after Server.Close: read %v, want EOF", err)
	}
}
