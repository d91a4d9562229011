package backend

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/jobserver"
	"github.com/gearproxy/gearproxy/protocol"
)

// bundled is an in-process job server, connected as `gearproxy run`
// connects its bundled backends.
func bundled(t *testing.T) Dialer {
	t.Helper()
	js, err := jobserver.New(jobserver.Options{HandlePrefix: "H:t"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { js.Close() })
	return DirectDialer(func(replies net.Conn) (io.WriteCloser, error) { return js.ServeDirect(replies) })
}

// piped is an in-process job server that serves each connection as a
// socket, over a Pipe.
func piped(t *testing.T) Dialer {
	t.Helper()
	js, err := jobserver.New(jobserver.Options{HandlePrefix: "H:t"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { js.Close() })
	return PipeDialer(js.ServeConn)
}

func start(t *testing.T, opts Options) (*Backend, chan bool) {
	t.Helper()
	states := make(chan bool, 16)
	opts.OnState = func(up bool) { states <- up }
	if opts.Name == "" {
		opts.Name = "b"
	}
	b, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	b.Start()
	t.Cleanup(b.Close)
	select {
	case up := <-states:
		if !up {
			t.Fatal("first state change was down")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("backend never came up")
	}
	return b, states
}

// Many sessions share a few links: every reply must reach the request it
// answers, though nothing in an ECHO_RES or JOB_CREATED says which that is.
// Over DirectDialer the requesters also take replies themselves (Pump),
// racing the link's own goroutine: each reply still reaches its request
// exactly once.
func TestReplyPairing(t *testing.T) {
	t.Run("direct", func(t *testing.T) { testReplyPairing(t, bundled(t), false) })
	t.Run("direct-pumped", func(t *testing.T) { testReplyPairing(t, bundled(t), true) })
	t.Run("pipe", func(t *testing.T) { testReplyPairing(t, piped(t), false) })
}

func testReplyPairing(t *testing.T, dial Dialer, pumped bool) {
	b, _ := start(t, Options{Dial: dial, Links: 2})
	var wg sync.WaitGroup
	errs := make(chan error, 800)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 100 {
				want := fmt.Sprintf("echo %d/%d", g, i)
				got := make(chan string, 1)
				link := b.Link()
				err := link.Request(func(dst []byte) []byte {
					return protocol.AppendPacket(dst, protocol.Req, protocol.EchoReq, []byte(want))
				}, func(p *protocol.Packet) {
					if p == nil {
						got <- "<nil>"
						return
					}
					got <- string(p.Data())
				})
				if err != nil {
					errs <- err
					return
				}
				if pumped {
					link.Pump()
				}
				if r := <-got; r != want {
					errs <- fmt.Errorf("request %q got reply %q", want, r)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// WORK_* on a shared link go to OnWork; replies to the link's requests do
// not.
func TestWorkGoesToOnWork(t *testing.T) {
	work := make(chan string, 4)
	b, _ := start(t, Options{Dial: bundled(t), Links: 1, OnWork: func(p *protocol.Packet) {
		work <- p.Type.String() + " " + string(p.Data())
	}})
	created := make(chan []byte, 1)
	b.Link().Request(func(dst []byte) []byte {
		return protocol.AppendPacket(dst, protocol.Req, protocol.SubmitJob, []byte("f"), []byte("u"), []byte("x"))
	}, func(p *protocol.Packet) { created <- append([]byte(nil), p.Arg(0)...) })
	h := <-created
	w, err := b.OpenWorker(func(p *protocol.Packet) {
		if p.Type == protocol.JobAssign {
			work <- "assigned"
		}
	}, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	w.Packet(protocol.CanDo, []byte("f"))
	w.Packet(protocol.GrabJob)
	if got := <-work; got != "assigned" {
		t.Fatalf("worker got %q", got)
	}
	w.Packet(protocol.WorkComplete, h, []byte("result"))
	if got := <-work; got != "WORK_COMPLETE result" {
		t.Fatalf("OnWork got %q", got)
	}
	w.Close()
}

// A backend that goes away answers every owed reply with nil, reports
// down, and comes back by itself when the server does.
func TestDownAndBack(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	js, _ := jobserver.New(jobserver.Options{})
	go js.Serve(ln)
	b, states := start(t, Options{Dial: TCPDialer(addr), Links: 2, HealthInterval: 20 * time.Millisecond, MaxBackoff: 50 * time.Millisecond})

	js.Close()
	if up := <-states; up {
		t.Fatal("state after the server closed is up")
	}
	if b.Up() || b.Link() != nil {
		t.Fatal("a down backend offers a link")
	}
	if _, err := b.Admin(context.Background(), "status", true); err == nil {
		t.Fatal("admin on a down backend succeeded")
	}
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("port reuse: %v", err)
	}
	js2, _ := jobserver.New(jobserver.Options{})
	defer js2.Close()
	go js2.Serve(ln2)
	select {
	case up := <-states:
		if !up {
			t.Fatal("second state change was down")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("backend did not come back")
	}
	reply, err := b.Admin(context.Background(), "version", false)
	if err != nil || !strings.HasPrefix(string(reply), "OK ") {
		t.Fatalf("version: %q %v", reply, err)
	}
}

// Owed replies are answered with nil when the link dies under them.
func TestOwedRepliesOnClose(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	got := make(chan bool, 2)
	l := newLink(client, protocol.DefaultMaxData, nil, func(*protocol.Packet) {}, nil)
	for range 2 {
		l.Request(func(dst []byte) []byte {
			return protocol.AppendPacket(dst, protocol.Req, protocol.EchoReq, []byte("x"))
		}, func(p *protocol.Packet) { got <- p == nil })
	}
	go func() {
		buf := make([]byte, 64)
		server.Read(buf) // take the requests, answer nothing
	}()
	l.Abort()
	for range 2 {
		if !<-got {
			t.Fatal("owed reply answered with a packet")
		}
	}
	if err := l.Packet(protocol.EchoReq, nil); err != ErrDown {
		t.Fatalf("send on a closed link: %v", err)
	}
}

func TestAdminList(t *testing.T) {
	b, _ := start(t, Options{Dial: bundled(t), Links: 1})
	w, err := b.OpenWorker(func(*protocol.Packet) {}, func(error) {})
	if err != nil {
		t.Fatal(err)
	}
	w.Packet(protocol.CanDo, []byte("listed"))
	for deadline := time.Now().Add(5 * time.Second); ; {
		reply, err := b.Admin(context.Background(), "status", true)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(reply), "listed\t0\t0\t1\n") && strings.HasSuffix(string(reply), ".\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status: %q", reply)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
