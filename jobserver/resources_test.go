package jobserver

import (
	"encoding/binary"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

func rawHeader(magic protocol.Magic, typ protocol.Type, size uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(magic))
	b = binary.BigEndian.AppendUint32(b, uint32(typ))
	return binary.BigEndian.AppendUint32(b, size)
}

func TestFramingErrors(t *testing.T) {
	_, addr := testServer(t, Options{MaxPacket: 1 << 10})
	tests := []struct {
		name   string
		input  []byte
		code   string
		closes bool
	}{
		{"response magic", rawHeader(protocol.Res, protocol.SubmitJob, 0), "INVALID_MAGIC", true},
		{"unknown type", rawHeader(protocol.Req, 77, 0), "INVALID_COMMAND", true},
		{"type zero", rawHeader(protocol.Req, 0, 0), "INVALID_COMMAND", true},
		{"over max packet", rawHeader(protocol.Req, protocol.SubmitJob, 4<<10), "ARGUMENT_TOO_LARGE", true},
		{"missing argument", protocol.AppendPacket(nil, protocol.Req, protocol.SubmitJob, []byte("f")), "INVALID_PACKET", false},
		{"argument over 8 KiB", protocol.AppendPacket(nil, protocol.Req, protocol.CanDo, []byte(strings.Repeat("f", 9000))), "ARGUMENT_TOO_LARGE", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			at := addr
			if tt.name == "argument over 8 KiB" {
				_, at = testServer(t, Options{MaxPacket: 64 << 10})
			}
			c := dial(t, at)
			c.write(tt.input)
			c.expect(protocol.Error, tt.code)
			if tt.closes {
				c.expectClosed()
			} else {
				c.sync() // the stream goes on
			}
		})
	}
	t.Run("text line too long", func(t *testing.T) {
		c := dial(t, addr)
		c.write([]byte(strings.Repeat("x", 70<<10) + "\n"))
		if l := c.line(); !strings.HasPrefix(l, "ERR ARGUMENT_TOO_LARGE ") {
			t.Fatalf("got %q", l)
		}
		c.expectClosed()
	})
	t.Run("too many tokens", func(t *testing.T) {
		c := dial(t, addr)
		c.write([]byte("a b c d e f\n"))
		if l := c.line(); !strings.HasPrefix(l, "ERR ARGUMENT_TOO_LARGE ") {
			t.Fatalf("got %q", l)
		}
		c.expectClosed()
	})
}

func TestIdleTimeoutClosesSilentConnections(t *testing.T) {
	_, addr := testServer(t, Options{IdleTimeout: 50 * time.Millisecond})
	silent := dial(t, addr)
	active := dial(t, addr)
	active.sync()
	silent.expectClosed()
	time.Sleep(100 * time.Millisecond)
	active.sync() // a connection that spoke is never timed out
}

func TestMaxConnections(t *testing.T) {
	_, addr := testServer(t, Options{MaxConnections: 2})
	a, b := dial(t, addr), dial(t, addr)
	a.sync()
	b.sync()
	c := dial(t, addr)
	c.expect(protocol.Error, "SERVER_ERROR", "too many connections")
	c.expectClosed()
	a.nc.Close()
	waitFor(t, func() bool {
		d := dial(t, addr)
		d.send(protocol.EchoReq, "x")
		return d.read().typ == protocol.EchoRes
	})
}

// A client that never reads is cut off when its outbox passes the limit;
// the server and its other connections carry on.
func TestOutboxLimitCutsOffNonReader(t *testing.T) {
	s, addr := testServer(t, Options{OutboxLimit: 64 << 10})
	w := dial(t, addr)
	deaf := pipePeer(t, s) // net.Pipe: no kernel buffer hides the backlog
	deaf.send(protocol.SubmitJob, "f", "", "x")
	// Not reading: JOB_CREATED stays queued.
	w.canDo("f")
	// The deaf client cannot be synced with an echo: grab until its
	// submit has been handled.
	var r reply
	waitFor(t, func() bool {
		w.send(protocol.GrabJob)
		r = w.read()
		return r.typ == protocol.JobAssign
	})
	chunk := strings.Repeat("d", 8<<10)
	var b []byte
	for i := 0; i < 64; i++ {
		b = protocol.AppendPacket(b, protocol.Req, protocol.WorkData, []byte(r.args[0]), []byte(chunk))
	}
	w.write(b)
	w.sync()
	waitFor(t, func() bool {
		a := dial(t, addr)
		return !strings.Contains(a.admin("show jobs", true), "\t0\t0\t0")
	})
	// The abandoned job's results go nowhere; the worker is unaffected.
	w.send(protocol.WorkComplete, r.args[0], "")
	w.sync()
}

func TestNoGoroutinesLeftAfterConnections(t *testing.T) {
	s, addr := testServer(t, Options{})
	warm := dial(t, addr)
	warm.sync()
	base := runtime.NumGoroutine()
	for i := 0; i < 200; i++ {
		var p *peer
		if i%4 == 0 {
			p = pipePeer(t, s)
		} else {
			p = dial(t, addr)
		}
		switch i % 3 {
		case 0: // a worker holding a job when it goes
			p.canDo("f")
			p.send(protocol.SubmitJob, "f", "", "x")
			p.expect(protocol.JobCreated)
			p.send(protocol.GrabJob)
			p.expect(protocol.JobAssign)
		case 1: // a client with a queued foreground job
			p.send(protocol.SubmitJob, "g", "", "x")
			p.expect(protocol.JobCreated)
		default: // an admin
			p.admin("status", true)
		}
		p.nc.Close()
	}
	var n int
	for i := 0; i < 2000; i++ {
		runtime.GC()
		if n = runtime.NumGoroutine(); n <= base {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n > base {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines, %d before:\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.nconns != 1 {
		t.Fatalf("%d connections tracked, want 1", s.nconns)
	}
	for _, f := range s.funcs {
		if len(f.workers) != 0 || f.running != 0 {
			t.Fatalf("function %s keeps %d workers, %d running", f.name, len(f.workers), f.running)
		}
	}
}

func TestServeConnOverPipe(t *testing.T) {
	s, err := New(Options{HandlePrefix: "H:pipe"})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, w := pipePeer(t, s), pipePeer(t, s)
	c.send(protocol.SubmitJob, "f", "", "x")
	c.expect(protocol.JobCreated, "H:pipe:1")
	w.canDo("f")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign, "H:pipe:1")
	w.send(protocol.WorkComplete, "H:pipe:1", "y")
	c.expect(protocol.WorkComplete, "H:pipe:1", "y")
	if got := c.admin("workers", true); !strings.Contains(got, " pipe - : f\n") {
		t.Fatalf("workers: %q", got)
	}
}

func TestCloseWithOpenConnections(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	c := dial(t, l.Addr().String())
	c.sync()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-served; err != ErrServerClosed {
		t.Fatalf("Serve returned %v", err)
	}
	c.expectClosed()
}

// Perl's Gearman::Worker sends WORK_STATUS without a denominator, and
// workers die on an unexpected ERROR: a malformed WORK_* is logged and
// dropped, and the worker's next packets work.
func TestMalformedWorkResultIsDropped(t *testing.T) {
	_, addr := testServer(t, Options{})
	c, w := dial(t, addr), dial(t, addr)
	c.send(protocol.SubmitJob, "f", "", "x")
	c.expect(protocol.JobCreated, "H:test:1")
	w.canDo("f")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign, "H:test:1")
	w.write(protocol.AppendPacket(nil, protocol.Req, protocol.WorkStatus, []byte("H:test:1\x001")))
	w.sync()
	w.send(protocol.WorkComplete, "H:test:1", "done")
	c.expect(protocol.WorkComplete, "H:test:1", "done")
}

// Over TCP too: a client that pipelines requests and never reads its
// replies is disconnected once its replies pass the limit; the server
// never waits on it.
func TestNonReadingTCPClientIsCutOff(t *testing.T) {
	_, addr := testServer(t, Options{OutboxLimit: 256 << 10})
	deaf := dial(t, addr)
	payload := []byte(strings.Repeat("e", 32<<10))
	pkt := protocol.AppendPacket(nil, protocol.Req, protocol.EchoReq, payload)
	wrote := make(chan error, 1)
	go func() {
		for i := 0; i < 100000; i++ {
			deaf.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := deaf.nc.Write(pkt); err != nil {
				wrote <- err
				return
			}
		}
		wrote <- nil
	}()
	if err := <-wrote; err == nil {
		t.Fatal("3 GiB of echoes went to a client that never reads")
	}
	other := dial(t, addr)
	other.sync()
}

// Close returns even when a client has stopped reading with replies
// still queued for it.
func TestCloseWithNonReadingClient(t *testing.T) {
	s, addr := testServer(t, Options{})
	deaf := dial(t, addr)
	pkt := protocol.AppendPacket(nil, protocol.Req, protocol.EchoReq, []byte(strings.Repeat("e", 64<<10)))
	go func() {
		for i := 0; i < 300; i++ { // ~19 MiB of echoes, under the output limit
			deaf.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := deaf.nc.Write(pkt); err != nil {
				return
			}
		}
	}()
	a := dial(t, addr)
	waitFor(t, func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for c := s.conns; c != nil; c = c.next {
			if c.out.Pending() > 1<<20 {
				return true
			}
		}
		return false
	})
	a.sync()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}
