// Package test holds black-box tests that start the real gearproxy binary
// and real third-party peers (gearmand, the gearman and gearadmin CLIs, PHP's
// and Perl's Gearman clients) and assert on what a user of those peers sees.
//
// This file is the shared harness; /tmp/gearproxy-notes/api.md documents it
// for the other test files (crash, proxy, bench).
package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// gearmandPath is the reference server the differential tests compare with.
const gearmandPath = "/usr/sbin/gearmand"

// ioTimeout bounds every single wait on a peer: a hang fails the test
// instead of stalling the run. It is not a performance threshold.
const ioTimeout = 10 * time.Second

var (
	// workDir is a temporary directory shared by the whole test binary;
	// TestMain removes it.
	workDir string

	buildOnce sync.Once
	buildPath string
	buildErr  error
)

func TestMain(m *testing.M) {
	// Most tests here wait on peers rather than use the CPU: run more of
	// them at once than the default of GOMAXPROCS, unless -parallel says.
	flag.Parse()
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		flag.Set("test.parallel", "8")
	}
	dir, err := os.MkdirTemp("", "gearproxy-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "test: temp dir:", err)
		os.Exit(1)
	}
	workDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// inCI reports whether missing peers must fail rather than skip.
func inCI() bool { return os.Getenv("CI") == "true" }

// gearproxyBinary returns the path of the gearproxy binary, built once per
// test run from ../cmd/gearproxy (or taken from $GEARPROXY_BIN when set).
func gearproxyBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("GEARPROXY_BIN"); p != "" {
			buildPath = p
			return
		}
		buildPath = filepath.Join(workDir, "gearproxy")
		cmd := exec.Command("go", "build", "-o", buildPath, "./cmd/gearproxy")
		cmd.Dir = ".."
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/gearproxy: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// requirePeer skips the test when a third-party peer is missing, or fails
// it when running in CI (CI=true), where every peer must be installed.
// Known peers: gearmand, gearman, gearadmin, php (with the gearman
// extension), perl (with Gearman::Client), perl-worker (Gearman::Worker).
func requirePeer(t testing.TB, peers ...string) {
	t.Helper()
	for _, p := range peers {
		if err := peerMissing(p); err != nil {
			if inCI() {
				t.Fatalf("peer %s is required in CI: %v", p, err)
			}
			t.Skipf("peer %s missing: %v", p, err)
		}
	}
}

var peerChecks sync.Map // peer name -> error (nil when present)

func peerMissing(p string) error {
	if v, ok := peerChecks.Load(p); ok {
		err, _ := v.(error)
		return err
	}
	var err error
	switch p {
	case "gearmand":
		_, err = os.Stat(gearmandPath)
	case "gearman", "gearadmin":
		_, err = exec.LookPath(p)
	case "php":
		var out []byte
		out, err = exec.Command("php", "-r", `echo extension_loaded("gearman") ? "yes" : "no";`).Output()
		if err == nil && string(out) != "yes" {
			err = errors.New("php has no gearman extension")
		}
	case "perl":
		err = exec.Command("perl", "-MGearman::Client", "-e1").Run()
	case "perl-worker":
		err = exec.Command("perl", "-MGearman::Worker", "-e1").Run()
	default:
		err = fmt.Errorf("unknown peer %q", p)
	}
	peerChecks.Store(p, err)
	return err
}

// freeAddr returns a 127.0.0.1 address with a port that was free a moment
// ago. Servers started on it may still lose a race for the port; the start
// helpers retry on a new port when that happens.
func freeAddr(t testing.TB) string {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	for {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		// The kernel may offer a port again once it is closed: never
		// give two tests of this binary the same one.
		if !handedOut.addrs[addr] {
			handedOut.addrs[addr] = true
			return addr
		}
	}
}

// handedOut is every address freeAddr has returned.
var handedOut = struct {
	sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

// waitForPort dials addr until process pid accepts a connection there,
// the process exits (exited is closed) or timeout passes. A port that
// accepts but belongs to another process does not count: a port freeAddr
// hands out may be taken by someone else (another test binary's listener)
// before the process binds it, and then the process fails to start while
// the port answers.
func waitForPort(addr string, pid int, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			if listens(pid, addr) {
				return nil
			}
			err = fmt.Errorf("%s accepts, but not in process %d", addr, pid)
		}
		select {
		case <-exited:
			return errors.New("process exited before listening")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// listens reports whether process pid holds the socket listening on
// addr's port, from /proc/net/tcp{,6} (the socket's inode) and
// /proc/PID/fd.
func listens(pid int, addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	p, err := strconv.Atoi(port)
	if err != nil {
		return false
	}
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st ... uid timeout inode
			fields := strings.Fields(line)
			if len(fields) < 10 || fields[3] != "0A" { // LISTEN
				continue
			}
			_, hexPort, _ := strings.Cut(fields[1], ":")
			if n, err := strconv.ParseInt(hexPort, 16, 32); err == nil && int(n) == p {
				inodes[fields[9]] = true
			}
		}
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return false
	}
	for _, fd := range fds {
		link, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if inode, ok := strings.CutPrefix(link, "socket:["); ok && err == nil && inodes[strings.TrimSuffix(inode, "]")] {
			return true
		}
	}
	return false
}

// Server is a server process started by a test: gearmand, `gearproxy
// server`, or anything else that listens on Addr. It is stopped when the
// test that started it ends.
type Server struct {
	Name    string
	Addr    string
	Pid     int
	LogPath string // the server's log (gearmand --log-file, or stderr)

	cmd    *exec.Cmd
	exited chan struct{}
}

// startServer starts bin with args, where the literal "{addr}", "{host}",
// "{port}" and "{dir}" in args are replaced by the listen address, its
// parts and a private directory; it waits until the address accepts
// connections. It retries on a new port when the process exits early (a
// lost race for the port).
func startServer(t testing.TB, name, bin string, args ...string) *Server {
	t.Helper()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		dir, err := os.MkdirTemp(workDir, name+"-")
		if err != nil {
			t.Fatal(err)
		}
		addr := freeAddr(t)
		host, port, _ := net.SplitHostPort(addr)
		expanded := make([]string, len(args))
		for i, a := range args {
			a = strings.ReplaceAll(a, "{addr}", addr)
			a = strings.ReplaceAll(a, "{host}", host)
			a = strings.ReplaceAll(a, "{port}", port)
			expanded[i] = strings.ReplaceAll(a, "{dir}", dir)
		}
		logPath := filepath.Join(dir, "stderr.log")
		s := startProcess(t, name, addr, logPath, bin, expanded...)
		if s == nil {
			lastErr = fmt.Errorf("%s %q: did not accept connections at %s\n%s", name, expanded, addr, tail(logPath, 2000))
			continue
		}
		return s
	}
	t.Fatal(lastErr)
	return nil
}

// startProcess runs bin and waits until addr accepts; nil if the process
// exited first.
func startProcess(t testing.TB, name, addr, logPath, bin string, args ...string) *Server {
	t.Helper()
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	logFile.Close()
	s := &Server{Name: name, Addr: addr, Pid: cmd.Process.Pid, LogPath: logPath, cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(s.exited)
	}()
	if err := waitForPort(addr, s.Pid, s.exited, 15*time.Second); err != nil {
		s.Kill()
		return nil
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log (last 3000 bytes):\n%s", name, tail(s.LogPath, 3000))
		}
		s.Kill()
	})
	return s
}

// Kill stops the server with SIGKILL and waits for it.
func (s *Server) Kill() {
	syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
}

// Stop sends SIGTERM and waits up to timeout for the process to exit; it
// returns false (and kills it) when it did not.
func (s *Server) Stop(timeout time.Duration) bool {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
		return true
	case <-time.After(timeout):
		s.Kill()
		return false
	}
}

// Exited is closed when the server process has exited.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Log returns the server's log so far.
func (s *Server) Log() string {
	b, _ := os.ReadFile(s.LogPath)
	return string(b)
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

// startGearmand starts the reference gearmand 1.1.20 on a free 127.0.0.1
// port with one I/O thread, its log and pid file in a private directory.
// Extra flags (for example "--job-retries=2") are appended.
func startGearmand(t testing.TB, extra ...string) *Server {
	t.Helper()
	requirePeer(t, "gearmand")
	args := []string{"--listen={host}", "--port={port}", "-t", "1",
		"--log-file={dir}/gearmand.log", "--pid-file={dir}/gearmand.pid", "--verbose=WARNING"}
	s := startServer(t, "gearmand", gearmandPath, append(args, extra...)...)
	s.LogPath = filepath.Join(filepath.Dir(s.LogPath), "gearmand.log")
	return s
}

// startGearproxyServer starts `gearproxy server -listen 127.0.0.1:PORT`
// with extra flags appended (for example "-job-retries", "2").
func startGearproxyServer(t testing.TB, extra ...string) *Server {
	t.Helper()
	bin := gearproxyBinary(t)
	return startServer(t, "gearproxy", bin, append([]string{"server", "-listen", "{addr}"}, extra...)...)
}

// Reply is one thing a server sent: a binary packet (Type > 0) or an admin
// text line (Type == protocol.Text, in Line without its "\n").
type Reply struct {
	Magic protocol.Magic
	Type  protocol.Type
	// Args are the packet's fields split as its type's spec says, exactly
	// as received: a trailing NUL on a last non-opaque field is kept, so
	// gearmand's "handle\0" WORK_FAIL stays visible.
	Args []string
	Line string
}

func (r Reply) String() string {
	if r.Type == protocol.Text {
		return fmt.Sprintf("%q", r.Line)
	}
	var b strings.Builder
	b.WriteString(r.Type.String())
	for _, a := range r.Args {
		fmt.Fprintf(&b, " %q", a)
	}
	return b.String()
}

// ErrQuiet is returned by RawConn.Next when nothing arrived within the wait.
var ErrQuiet = errors.New("nothing received")

// RawConn is a raw Gearman connection for sending exact bytes and reading
// exactly what the server answers, binary packets and text lines alike.
type RawConn struct {
	t    testing.TB
	conn net.Conn
	br   *bufio.Reader
}

// dialRaw connects to addr; the connection is closed when the test ends.
func dialRaw(t testing.TB, addr string) *RawConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { c.Close() })
	return &RawConn{t: t, conn: c, br: bufio.NewReaderSize(c, 64<<10)}
}

// Packet encodes one request packet (\0REQ) with args joined by NULs.
func Packet(typ protocol.Type, args ...string) []byte {
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	return protocol.AppendPacket(nil, protocol.Req, typ, bs...)
}

// Header encodes only a packet header, for frames whose declared size
// does not match what follows.
func Header(m protocol.Magic, typ protocol.Type, size uint32) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(m))
	b = binary.BigEndian.AppendUint32(b, uint32(typ))
	return binary.BigEndian.AppendUint32(b, size)
}

// Send writes one request packet.
func (c *RawConn) Send(typ protocol.Type, args ...string) {
	c.t.Helper()
	c.Write(Packet(typ, args...))
}

// SendLine writes an admin text line ending in "\r\n", as gearadmin and
// telnet send it (gearmand drops the last character of a line that ends in
// a bare "\n"; write the bytes yourself to test that).
func (c *RawConn) SendLine(line string) {
	c.t.Helper()
	c.Write([]byte(line + "\r\n"))
}

// Write writes raw bytes in one write call (several packets written
// together arrive pipelined). A write error is returned, not fatal: a
// server that closed the connection shows it on the next read.
func (c *RawConn) Write(b []byte) error {
	c.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := c.conn.Write(b)
	return err
}

// Close closes the connection.
func (c *RawConn) Close() { c.conn.Close() }

// CloseWrite half-closes the connection: the server sees EOF.
func (c *RawConn) CloseWrite() {
	if tc, ok := c.conn.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

// Next reads the next packet or text line, waiting at most wait. It returns
// ErrQuiet when nothing started to arrive in time, io.EOF (or a reset) when
// the server closed the connection, and fails the test on a frame that
// started but did not complete within ioTimeout.
func (c *RawConn) Next(wait time.Duration) (Reply, error) {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(wait))
	first, err := c.br.Peek(1)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return Reply{}, ErrQuiet
		}
		return Reply{}, err
	}
	c.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	if first[0] != 0 {
		line, err := c.br.ReadString('\n')
		if err != nil {
			return Reply{}, fmt.Errorf("text line cut short (%q): %w", line, err)
		}
		return Reply{Type: protocol.Text, Line: strings.TrimSuffix(line, "\n")}, nil
	}
	var hdr [protocol.HeaderSize]byte
	if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
		return Reply{}, fmt.Errorf("header cut short: %w", err)
	}
	r := Reply{Magic: protocol.Magic(binary.BigEndian.Uint32(hdr[0:4])), Type: protocol.Type(binary.BigEndian.Uint32(hdr[4:8]))}
	size := binary.BigEndian.Uint32(hdr[8:12])
	if size > 64<<20 {
		return Reply{}, fmt.Errorf("%s declares %d bytes", r.Type, size)
	}
	body := make([]byte, size)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return Reply{}, fmt.Errorf("%s body cut short: %w", r.Type, err)
	}
	r.Args = splitFields(r.Type, body)
	return r, nil
}

// splitFields splits a packet body into fields by its type's spec without
// dropping or validating anything.
func splitFields(typ protocol.Type, body []byte) []string {
	spec, ok := typ.Lookup()
	if !ok || (spec.Fields() == 0 && len(body) > 0) {
		return []string{string(body)}
	}
	n := spec.Fields()
	if n == 0 {
		return nil
	}
	return strings.SplitN(string(body), "\x00", n)
}

// Recv reads the next reply, failing the test when none arrives within
// ioTimeout or the connection closes.
func (c *RawConn) Recv() Reply {
	c.t.Helper()
	r, err := c.Next(ioTimeout)
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	return r
}

// Expect reads the next reply and fails the test unless it is a packet of
// type typ with exactly these fields.
func (c *RawConn) Expect(typ protocol.Type, args ...string) Reply {
	c.t.Helper()
	r := c.Recv()
	want := Reply{Type: typ, Args: args}
	if r.Type != typ || fmt.Sprint(r.Args) != fmt.Sprint(args) || len(r.Args) != len(args) {
		c.t.Fatalf("got %s, want %s", r, want)
	}
	return r
}

// RecvList reads admin text lines up to and including the "." line that
// ends a list reply and returns them without the ".".
func (c *RawConn) RecvList() []string {
	c.t.Helper()
	var lines []string
	for {
		r := c.Recv()
		if r.Type != protocol.Text {
			c.t.Fatalf("list reply interrupted by %s", r)
		}
		if r.Line == "." {
			return lines
		}
		lines = append(lines, r.Line)
	}
}

// WaitClosed waits up to ioTimeout for the server to close the connection
// and returns what arrived before it. It fails the test when the connection
// stays open.
func (c *RawConn) WaitClosed() []Reply {
	c.t.Helper()
	var got []Reply
	for {
		r, err := c.Next(ioTimeout)
		switch {
		case err == nil:
			got = append(got, r)
			continue
		case errors.Is(err, ErrQuiet):
			c.t.Fatalf("connection still open after %s; received %v", ioTimeout, got)
		}
		return got
	}
}

// Quiet reports whether nothing arrives within wait. Use it only to show
// that something does not happen, with a wait long enough to be certain
// it would have.
func (c *RawConn) Quiet(wait time.Duration) bool {
	c.t.Helper()
	c.conn.SetReadDeadline(time.Now().Add(wait))
	_, err := c.br.Peek(1)
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ToolResult is the outcome of a peer program run to completion.
type ToolResult struct {
	Stdout, Stderr string
	Exit           int  // exit status; -1 when killed
	TimedOut       bool // killed after its timeout
}

func (r ToolResult) String() string {
	return fmt.Sprintf("exit %d (timed out %v)\nstdout:\n%s\nstderr:\n%s", r.Exit, r.TimedOut, r.Stdout, r.Stderr)
}

// runTool runs a program with a timeout and returns what it printed. stdin
// may be nil.
func runTool(t testing.TB, timeout time.Duration, stdin io.Reader, name string, args ...string) ToolResult {
	t.Helper()
	p := startTool(t, stdin, name, args...)
	return p.Wait(timeout)
}

// Proc is a peer program running in the background (a worker).
type Proc struct {
	t      testing.TB
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr bytes.Buffer
	done   chan struct{}
	cancel context.CancelFunc
	res    ToolResult
}

// startTool starts a program in the background; it is killed when the test
// ends if it is still running.
func startTool(t testing.TB, stdin io.Reader, name string, args ...string) *Proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proc{t: t, done: make(chan struct{}), cancel: cancel}
	p.cmd = exec.CommandContext(ctx, name, args...)
	p.cmd.Stdin = stdin
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = time.Second
	if err := p.cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		err := p.cmd.Wait()
		p.res.Exit = p.cmd.ProcessState.ExitCode()
		if err != nil && p.res.Exit == 0 {
			p.res.Exit = -1
		}
		close(p.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-p.done
	})
	return p
}

// Wait waits up to timeout for the program to exit, killing it after
// that, and returns its result.
func (p *Proc) Wait(timeout time.Duration) ToolResult {
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.res.TimedOut = true
		p.cancel()
		<-p.done
	}
	p.res.Stdout, p.res.Stderr = p.stdout.String(), p.stderr.String()
	return p.res
}

// Kill stops the program at once and returns its result.
func (p *Proc) Kill() ToolResult {
	p.cancel()
	<-p.done
	p.res.Stdout, p.res.Stderr = p.stdout.String(), p.stderr.String()
	return p.res
}

// testdata returns the path of a file in test/testdata.
func testdata(name string) string {
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		panic(err)
	}
	return p
}
