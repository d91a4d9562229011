package proxy

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/backend"
	"github.com/gearproxy/gearproxy/jobserver"
	"github.com/gearproxy/gearproxy/protocol"
)

// startBundled starts n in-process job servers and a proxy in front of
// them, listening on 127.0.0.1 port 0; everything stops at test end.
func startBundled(t testing.TB, n int, tweak func(*Options)) (*Server, string, []*jobserver.Server) {
	t.Helper()
	var servers []*jobserver.Server
	opts := Options{HealthInterval: 50 * time.Millisecond}
	if os.Getenv("PROXY_DEBUG") != "" {
		opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
	}
	for i := range n {
		js, err := jobserver.New(jobserver.Options{HandlePrefix: fmt.Sprintf("H:b%d", i)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { js.Close() })
		servers = append(servers, js)
		opts.Backends = append(opts.Backends, Backend{Name: fmt.Sprintf("b%d", i), Dial: backend.DirectDialer(func(replies net.Conn) (io.WriteCloser, error) { return js.ServeDirect(replies) })})
	}
	if tweak != nil {
		tweak(&opts)
	}
	return startProxy(t, opts, n), "", servers
}

func startProxy(t testing.TB, opts Options, up int) *Server {
	t.Helper()
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.WaitUp(ctx, up); err != nil {
		t.Fatal(err)
	}
	return srv
}

func listen(t testing.TB, srv *Server, user string) string {
	t.Helper()
	addr, err := srv.Listen("127.0.0.1:0", Listener{Auth: FixedUser{User: user, Superuser: true}})
	if err != nil {
		t.Fatal(err)
	}
	return addr.String()
}

// peer is a raw Gearman connection for tests.
type peer struct {
	t    testing.TB
	conn net.Conn
	r    *protocol.Reader
	w    *protocol.Writer
}

func dial(t testing.TB, addr string) *peer {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &peer{t: t, conn: c, r: protocol.NewReader(c, protocol.ReaderOptions{Expect: protocol.Res}), w: protocol.NewWriter(c)}
}

func (p *peer) send(typ protocol.Type, args ...string) {
	p.t.Helper()
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	if err := p.w.WritePacket(protocol.Req, typ, b...); err != nil {
		p.t.Fatal(err)
	}
	if err := p.w.Flush(); err != nil {
		p.t.Fatal(err)
	}
}

// recv reads one packet and returns its type and arguments as strings.
func (p *peer) recv() (protocol.Type, []string) {
	p.t.Helper()
	p.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var pk protocol.Packet
	if err := p.r.Read(&pk); err != nil {
		p.t.Fatalf("read: %v", err)
	}
	args := make([]string, len(pk.Args))
	for i, a := range pk.Args {
		args[i] = string(a)
	}
	return pk.Type, args
}

func (p *peer) expect(typ protocol.Type) []string {
	p.t.Helper()
	got, args := p.recv()
	if got != typ {
		p.t.Fatalf("got %s %q, want %s", got, args, typ)
	}
	return args
}

// work runs a raw worker loop for fn in the background: it answers every
// job with the reversed data, until the test ends.
func work(t testing.TB, addr, fn string) {
	w := dial(t, addr)
	w.send(protocol.CanDo, fn)
	go func() {
		for {
			w.w.WritePacket(protocol.Req, protocol.GrabJobUniq)
			if w.w.Flush() != nil {
				return
			}
			var pk protocol.Packet
			if err := w.r.Read(&pk); err != nil {
				return
			}
			switch pk.Type {
			case protocol.NoJob:
				w.w.WritePacket(protocol.Req, protocol.PreSleep)
				w.w.Flush()
				for {
					if err := w.r.Read(&pk); err != nil {
						return
					}
					if pk.Type == protocol.Noop {
						break
					}
				}
			case protocol.JobAssignUniq:
				h := append([]byte(nil), pk.Args[0]...)
				d := []byte(reverse(string(pk.Data())))
				w.w.WritePacket(protocol.Req, protocol.WorkComplete, h, d)
				w.w.Flush()
			}
		}
	}()
}

func reverse(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// tcpJobServer runs a bundled job server on a TCP port, like a gearmand
// the proxy reaches over the network; restart it with restartJobServer.
type tcpJobServer struct {
	t    testing.TB
	addr string
	js   *jobserver.Server
}

func startTCPJobServer(t testing.TB, prefix, addr string) *tcpJobServer {
	t.Helper()
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for range 50 {
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond) // the old socket may linger
	}
	if err != nil {
		t.Fatal(err)
	}
	js, err := jobserver.New(jobserver.Options{HandlePrefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	go js.Serve(ln)
	s := &tcpJobServer{t: t, addr: ln.Addr().String(), js: js}
	t.Cleanup(func() { s.js.Close() })
	return s
}

// restart stops the server, losing its jobs like a killed gearmand, and
// starts a fresh one on the same address.
func (s *tcpJobServer) restart(prefix string) {
	s.js.Close()
	n := startTCPJobServer(s.t, prefix, s.addr)
	s.js = n.js
}

func tcpBackends(servers ...*tcpJobServer) []Backend {
	var bs []Backend
	for i, s := range servers {
		bs = append(bs, Backend{Name: fmt.Sprintf("gm%d", i), Dial: backend.TCPDialer(s.addr), Links: 2})
	}
	return bs
}
