package proxy

import (
	"bytes"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// waitClosed reads until the server closes the connection, returning the
// packets it sent first.
func waitClosed(t *testing.T, p *peer) []protocol.Type {
	t.Helper()
	var got []protocol.Type
	for {
		p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		var pk protocol.Packet
		err := p.r.Read(&pk)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("connection still open; got %v", got)
			}
			return got
		}
		got = append(got, pk.Type)
	}
}

func TestMaxConnections(t *testing.T) {
	srv, _, _ := startBundled(t, 1, func(o *Options) { o.MaxConnections = 2 })
	addr := listen(t, srv, "local")
	a, b := dial(t, addr), dial(t, addr)
	for _, p := range []*peer{a, b} {
		p.send(protocol.EchoReq, "in")
		p.expect(protocol.EchoRes)
	}
	c := dial(t, addr)
	if got := waitClosed(t, c); len(got) != 1 || got[0] != protocol.Error {
		t.Fatalf("third connection got %v, want one ERROR then close", got)
	}
	a.conn.Close()
	// The slot frees when the session ends.
	for deadline := time.Now().Add(5 * time.Second); ; {
		d := dial(t, addr)
		d.send(protocol.EchoReq, "again")
		typ, _ := d.recv()
		if typ == protocol.EchoRes {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("slot never freed")
		}
	}
}

func TestMaxPacketSize(t *testing.T) {
	srv, _, _ := startBundled(t, 1, func(o *Options) { o.MaxData = 1024 })
	addr := listen(t, srv, "local")
	c := dial(t, addr)
	c.send(protocol.EchoReq, string(bytes.Repeat([]byte("x"), 2000)))
	if got := waitClosed(t, c); len(got) != 1 || got[0] != protocol.Error {
		t.Fatalf("oversized packet got %v, want ERROR then close", got)
	}
}

// A client that never reads its replies is cut off when its output passes
// the limit, instead of holding memory or a backend.
func TestStalledReaderCutOff(t *testing.T) {
	srv, _, _ := startBundled(t, 1, func(o *Options) { o.MaxOutput = 64 << 10 })
	addr := listen(t, srv, "local")
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	echo := protocol.AppendPacket(nil, protocol.Req, protocol.EchoReq, bytes.Repeat([]byte("y"), 60<<10))
	c.SetWriteDeadline(time.Now().Add(20 * time.Second))
	for {
		if _, err := c.Write(echo); err != nil {
			break // the proxy closed the connection
		}
	}
	// Other sessions are unaffected.
	d := dial(t, addr)
	d.send(protocol.EchoReq, "fine")
	d.expect(protocol.EchoRes)
}

func TestIdleTimeout(t *testing.T) {
	srv, _, _ := startBundled(t, 1, func(o *Options) { o.IdleTimeout = 100 * time.Millisecond })
	addr := listen(t, srv, "local")
	idle := dial(t, addr)
	idle.send(protocol.EchoReq, "hi")
	idle.expect(protocol.EchoRes)
	if got := waitClosed(t, idle); len(got) != 0 {
		t.Fatalf("idle connection got %v before close", got)
	}
	// A client waiting on a job is not idle.
	busy := dial(t, addr)
	busy.send(protocol.SubmitJob, "slow", "u", "x")
	h := busy.expect(protocol.JobCreated)[0]
	time.Sleep(300 * time.Millisecond)
	w := dial(t, addr)
	w.send(protocol.CanDo, "slow")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign)
	w.send(protocol.WorkComplete, h, "late")
	if got := busy.expect(protocol.WorkComplete); got[1] != "late" {
		t.Fatalf("WORK_COMPLETE %q", got)
	}
}

// A session that was quiet long enough to give its read buffer back
// reads its next request, and a pipelined burst after it, as before.
func TestQuietSessionWakes(t *testing.T) {
	srv, _, _ := startBundled(t, 2, nil)
	addr := listen(t, srv, "local")
	c := dial(t, addr)
	for i := range 3 {
		c.send(protocol.EchoReq, "before")
		c.expect(protocol.EchoRes)
		time.Sleep(shrinkAfter + 100*time.Millisecond)
		for range 20 {
			c.w.WritePacket(protocol.Req, protocol.EchoReq, bytes.Repeat([]byte{byte('a' + i)}, 1000))
		}
		c.w.Flush()
		for range 20 {
			if got := c.expect(protocol.EchoRes); got[0] != string(bytes.Repeat([]byte{byte('a' + i)}, 1000)) {
				t.Fatal("echo garbled after the buffer came back")
			}
		}
	}
}
