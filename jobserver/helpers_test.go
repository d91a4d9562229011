package jobserver

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/jobserver/store"
	"github.com/gearproxy/gearproxy/protocol"
)

// testServer starts a server on 127.0.0.1:0 that stops with the test.
func testServer(t testing.TB, opts Options) (*Server, string) {
	t.Helper()
	if opts.HandlePrefix == "" {
		opts.HandlePrefix = "H:test"
	}
	s, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		s.Serve(l)
	}()
	t.Cleanup(func() {
		s.Close()
		<-served
	})
	return s, l.Addr().String()
}

// peer is a raw test connection speaking packets and admin lines.
type peer struct {
	t  testing.TB
	nc net.Conn
	br *bufio.Reader
}

func dial(t testing.TB, addr string) *peer {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &peer{t: t, nc: nc, br: bufio.NewReader(nc)}
}

func pipePeer(t testing.TB, s *Server) *peer {
	a, b := net.Pipe()
	go s.ServeConn(b)
	t.Cleanup(func() { a.Close() })
	return &peer{t: t, nc: a, br: bufio.NewReader(a)}
}

func (p *peer) send(typ protocol.Type, args ...string) {
	p.t.Helper()
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	p.write(protocol.AppendPacket(nil, protocol.Req, typ, bs...))
}

func (p *peer) write(b []byte) {
	p.t.Helper()
	p.nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
	if _, err := p.nc.Write(b); err != nil {
		p.t.Fatalf("write: %v", err)
	}
}

type reply struct {
	typ  protocol.Type
	args []string
}

func (r reply) String() string { return r.typ.String() + " " + strings.Join(r.args, "|") }

// read reads one response packet and splits it by the type's layout.
func (p *peer) read() reply {
	p.t.Helper()
	p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	var hdr [12]byte
	if _, err := io.ReadFull(p.br, hdr[:]); err != nil {
		p.t.Fatalf("read header: %v", err)
	}
	if m := protocol.Magic(binary.BigEndian.Uint32(hdr[:4])); m != protocol.Res {
		p.t.Fatalf("magic %v", m)
	}
	typ := protocol.Type(binary.BigEndian.Uint32(hdr[4:8]))
	body := make([]byte, binary.BigEndian.Uint32(hdr[8:]))
	if _, err := io.ReadFull(p.br, body); err != nil {
		p.t.Fatalf("read body: %v", err)
	}
	spec, _ := typ.Lookup()
	var args []string
	if spec.Fields() > 0 {
		for _, a := range bytes.SplitN(body, []byte{0}, spec.Fields()) {
			args = append(args, string(a))
		}
	}
	return reply{typ, args}
}

// expect reads one packet and checks its type and leading arguments.
func (p *peer) expect(typ protocol.Type, args ...string) reply {
	p.t.Helper()
	r := p.read()
	if r.typ != typ {
		p.t.Fatalf("got %v, want %v %q", r, typ, args)
	}
	for i, a := range args {
		if i >= len(r.args) || r.args[i] != a {
			p.t.Fatalf("got %v, want %v %q", r, typ, args)
		}
	}
	return r
}

// line reads one admin reply line.
func (p *peer) line() string {
	p.t.Helper()
	p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	l, err := p.br.ReadString('\n')
	if err != nil {
		p.t.Fatalf("read line: %v (got %q)", err, l)
	}
	return l
}

// admin sends a command and returns its reply: through ".\n" for lists.
func (p *peer) admin(cmd string, list bool) string {
	p.t.Helper()
	p.write([]byte(cmd + "\n"))
	if !list {
		return p.line()
	}
	var sb strings.Builder
	for {
		l := p.line()
		sb.WriteString(l)
		if l == ".\n" {
			return sb.String()
		}
	}
}

// expectClosed checks that the server closes the connection.
func (p *peer) expectClosed() {
	p.t.Helper()
	p.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	b, err := p.br.ReadByte()
	if err == nil {
		p.t.Fatalf("expected close, got byte %q", b)
	}
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		p.t.Fatal("expected close, connection stayed open")
	}
}

// worker registers functions and grabs one job.
func (p *peer) canDo(fns ...string) {
	for _, f := range fns {
		p.send(protocol.CanDo, f)
	}
}

// sync makes sure every packet sent so far was handled, by an echo.
func (p *peer) sync() {
	p.t.Helper()
	p.send(protocol.EchoReq, "sync")
	p.expect(protocol.EchoRes, "sync")
}

// fakeStore is an in-memory Store that can hold Adds until released.
type fakeStore struct {
	mu      sync.Mutex
	jobs    map[uint64]store.Job
	adds    int
	waiting int // Adds blocked on gate so far
	removes []uint64
	retries map[uint64]uint32
	gate    chan struct{} // when non-nil, Add waits for a receive on it
	addErr  error
	closed  bool
	added   chan uint64
}

func newFakeStore() *fakeStore {
	return &fakeStore{jobs: make(map[uint64]store.Job), retries: make(map[uint64]uint32), added: make(chan uint64, 1024)}
}

func (f *fakeStore) Add(j *store.Job) error {
	f.mu.Lock()
	gate := f.gate
	f.mu.Unlock()
	if gate != nil {
		f.mu.Lock()
		f.waiting++
		f.mu.Unlock()
		<-gate
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.adds++
	if f.addErr != nil {
		return f.addErr
	}
	c := *j
	c.Data = append([]byte(nil), j.Data...)
	f.jobs[j.ID] = c
	select {
	case f.added <- j.ID:
	default:
	}
	return nil
}

func (f *fakeStore) Remove(ids ...uint64) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, id := range ids {
		delete(f.jobs, id)
		f.removes = append(f.removes, id)
	}
	return nil
}

func (f *fakeStore) SetRetries(id uint64, r uint32) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.retries[id] = r
	if j, ok := f.jobs[id]; ok {
		j.Retries = r
		f.jobs[id] = j
	}
	return nil
}

func (f *fakeStore) Load(fn func(*store.Job) error) error {
	f.mu.Lock()
	var ids []uint64
	for id := range f.jobs {
		ids = append(ids, id)
	}
	f.mu.Unlock()
	sortIDs(ids)
	for _, id := range ids {
		f.mu.Lock()
		j := f.jobs[id]
		f.mu.Unlock()
		if err := fn(&j); err != nil {
			return err
		}
	}
	return nil
}

func (f *fakeStore) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

func (f *fakeStore) snapshot() map[uint64]store.Job {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := make(map[uint64]store.Job, len(f.jobs))
	for k, v := range f.jobs {
		m[k] = v
	}
	return m
}

func sortIDs(ids []uint64) {
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && ids[j] < ids[j-1]; j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
}
