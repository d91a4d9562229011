package test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// proxyBackend is one [[backend]] of a proxy under test: bundled, or a
// server (gearmand) at an address.
type proxyBackend struct {
	Name string
	Addr string // "" for a bundled backend
}

// startProxyRun writes a configuration with one listener (user "local", a
// superuser) and the given backends, and runs `gearproxy run -config` on a
// free port. It retries on a new port if the first is lost to a race.
func startProxyRun(t testing.TB, backends []proxyBackend, extra string) *Server {
	t.Helper()
	bin := gearproxyBinary(t)
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		dir, err := os.MkdirTemp(workDir, "proxy-")
		if err != nil {
			t.Fatal(err)
		}
		addr := freeAddr(t)
		var b strings.Builder
		fmt.Fprintf(&b, "data_dir = %q\n%s\n[[listener]]\naddress = %q\nuser = \"local\"\n[[user]]\nname = \"local\"\nsuperuser = true\n", filepath.Join(dir, "data"), extra, addr)
		for _, be := range backends {
			if be.Addr == "" {
				fmt.Fprintf(&b, "[[backend]]\nname = %q\nbundled = true\n", be.Name)
			} else {
				fmt.Fprintf(&b, "[[backend]]\nname = %q\naddress = %q\n", be.Name, be.Addr)
			}
		}
		cfg := filepath.Join(dir, "gearproxy.toml")
		if err := os.WriteFile(cfg, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		s := startProcess(t, "gearproxy-run", addr, filepath.Join(dir, "stderr.log"), bin, "run", "-config", cfg)
		if s != nil {
			return s
		}
		lastErr = fmt.Errorf("gearproxy run did not start on %s", addr)
	}
	t.Fatal(lastErr)
	return nil
}

// startGearmandAt starts gearmand on a given address (to restart one on
// the port its proxy knows).
func startGearmandAt(t testing.TB, addr string) *Server {
	t.Helper()
	requirePeer(t, "gearmand")
	dir, err := os.MkdirTemp(workDir, "gearmand-")
	if err != nil {
		t.Fatal(err)
	}
	host, port, _ := strings.Cut(addr, ":")
	for range 50 {
		s := startProcess(t, "gearmand", addr, filepath.Join(dir, "stderr.log"), gearmandPath,
			"--listen="+host, "--port="+port, "-t", "1", "--log-file="+dir+"/gearmand.log",
			"--pid-file="+dir+"/gearmand.pid", "--verbose=WARNING")
		if s != nil {
			return s
		}
		time.Sleep(100 * time.Millisecond) // the killed one's port may linger
	}
	t.Fatalf("gearmand could not listen on %s again", addr)
	return nil
}

// gearmandBackends starts n gearmand processes and names them gm1..gmN.
func gearmandBackends(t testing.TB, n int) ([]*Server, []proxyBackend) {
	t.Helper()
	var servers []*Server
	var bs []proxyBackend
	for i := range n {
		s := startGearmand(t)
		servers = append(servers, s)
		bs = append(bs, proxyBackend{Name: fmt.Sprintf("gm%d", i+1), Addr: s.Addr})
	}
	return servers, bs
}

func bundledBackends(n int) []proxyBackend {
	var bs []proxyBackend
	for i := range n {
		bs = append(bs, proxyBackend{Name: fmt.Sprintf("shard%d", i+1)})
	}
	return bs
}

// writePHP saves a PHP script for one test and returns its path.
func writePHP(t testing.TB, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "script.php")
	if err := os.WriteFile(p, []byte(src), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// gearConn is a raw connection for load goroutines: it returns errors
// instead of failing the test, so it may be used off the test goroutine.
type gearConn struct {
	conn net.Conn
	r    *protocol.Reader
	w    *protocol.Writer
}

func dialGear(addr string) (*gearConn, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	return &gearConn{conn: c, r: protocol.NewReader(c, protocol.ReaderOptions{Expect: protocol.Res}), w: protocol.NewWriter(c)}, nil
}

func (g *gearConn) send(typ protocol.Type, args ...string) error {
	b := make([][]byte, len(args))
	for i, a := range args {
		b[i] = []byte(a)
	}
	if err := g.w.WritePacket(protocol.Req, typ, b...); err != nil {
		return err
	}
	return g.w.Flush()
}

// recv reads one packet within wait, as its type and string arguments.
func (g *gearConn) recv(wait time.Duration) (protocol.Type, []string, error) {
	g.conn.SetReadDeadline(time.Now().Add(wait))
	var p protocol.Packet
	if err := g.r.Read(&p); err != nil {
		return 0, nil, err
	}
	args := make([]string, len(p.Args))
	for i, a := range p.Args {
		args[i] = string(a)
	}
	return p.Type, args, nil
}

// gearWorker works fn through addr until stop is closed: every job is
// answered with "done:<data>" after delay. It returns the first error,
// including a packet libgearman would not accept as a grab's reply.
func gearWorker(addr, fn string, delay time.Duration, stop <-chan struct{}) error {
	g, err := dialGear(addr)
	if err != nil {
		return err
	}
	defer g.conn.Close()
	go func() {
		<-stop
		g.conn.Close()
	}()
	if err := g.send(protocol.CanDo, fn); err != nil {
		return err
	}
	for {
		if err := g.send(protocol.GrabJob); err != nil {
			return err
		}
		// Like libgearman, accept only NOOP, NO_JOB and JOB_ASSIGN
		// while waiting for the grab's reply.
		typ, args, err := g.recv(time.Minute)
		for err == nil && typ == protocol.Noop {
			typ, args, err = g.recv(time.Minute)
		}
		if err != nil {
			return err
		}
		switch typ {
		case protocol.NoJob:
			if err := g.send(protocol.PreSleep); err != nil {
				return err
			}
			for typ != protocol.Noop {
				if typ, _, err = g.recv(time.Minute); err != nil {
					return err
				}
			}
		case protocol.JobAssign:
			time.Sleep(delay)
			if err := g.send(protocol.WorkComplete, args[0], "done:"+args[2]); err != nil {
				return err
			}
		default:
			return fmt.Errorf("worker: unexpected %s %q in reply to GRAB_JOB", typ, args)
		}
	}
}
