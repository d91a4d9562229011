package bench

import (
	"errors"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/gearproxy/gearproxy/protocol"
)

// fault is the one thing a fakeServer does wrong, once.
type fault int

const (
	faultNone fault = iota
	// faultMismatch corrupts one result (fg), one assigned payload (bg)
	// or one echo.
	faultMismatch
	// faultDuplicate sends one WORK_COMPLETE twice (fg) or assigns one
	// background job twice (bg).
	faultDuplicate
	// faultLose drops one result (fg) or one queued job (bg).
	faultLose
	// faultEarly sends one fg job's correct result before its JOB_CREATED.
	faultEarly
)

// faultAt is the job (counted from 1) the fault hits, past the first
// pipeline's worth so that it lands mid-run.
const faultAt = 20

// fakeServer is the smallest job server the bench can run against: one
// function, a FIFO queue, sleeping workers woken by NOOP. It exists to
// inject faults that a real server never shows on demand.
type fakeServer struct {
	t     testing.TB
	ln    net.Listener
	fault fault

	mu       sync.Mutex
	queue    []*fakeJob
	jobs     map[string]*fakeJob
	sleeping map[*fakeConn]bool
	created  int
	finished int
	conns    map[*fakeConn]bool
	wg       sync.WaitGroup
}

type fakeJob struct {
	n                    int
	handle, unique, data []byte
	client               *fakeConn // nil for a background job
}

// fakeConn serializes writes: a worker's WORK_COMPLETE is written to the
// client's connection from the worker's goroutine.
type fakeConn struct {
	nc net.Conn
	mu sync.Mutex
	w  *protocol.Writer
}

func (c *fakeConn) send(t protocol.Type, args ...[]byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.w.WritePacket(protocol.Res, t, args...)
	c.w.Flush()
}

func startFake(t testing.TB, f fault) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{t: t, ln: ln, fault: f, jobs: map[string]*fakeJob{},
		sleeping: map[*fakeConn]bool{}, conns: map[*fakeConn]bool{}}
	s.wg.Go(s.accept)
	t.Cleanup(s.close)
	return s
}

func (s *fakeServer) addr() string { return s.ln.Addr().String() }

func (s *fakeServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.nc.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *fakeServer) accept() {
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		c := &fakeConn{nc: nc, w: protocol.NewWriter(nc)}
		s.mu.Lock()
		s.conns[c] = true
		s.mu.Unlock()
		s.wg.Go(func() { s.serve(c) })
	}
}

func (s *fakeServer) serve(c *fakeConn) {
	defer c.nc.Close()
	r := protocol.NewReader(c.nc, protocol.ReaderOptions{Expect: protocol.Req})
	var p protocol.Packet
	for {
		if err := r.Read(&p); err != nil {
			var fe *protocol.FrameError
			if errors.As(err, &fe) {
				s.t.Errorf("fake server: bench sent a bad packet: %v", err)
			}
			return
		}
		switch p.Type {
		case protocol.CanDo:
		case protocol.EchoReq:
			data := p.Data()
			s.mu.Lock()
			s.created++
			n := s.created
			s.mu.Unlock()
			if s.fault == faultMismatch && n == faultAt {
				data = append([]byte(nil), data...)
				data[len(data)-1]++
			}
			c.send(protocol.EchoRes, data)
		case protocol.SubmitJob, protocol.SubmitJobHigh, protocol.SubmitJobLow,
			protocol.SubmitJobBg, protocol.SubmitJobHighBg, protocol.SubmitJobLowBg:
			s.submit(c, p.Type.IsBackground(), p.Arg(1), p.Data())
		case protocol.GrabJobUniq:
			s.grab(c)
		case protocol.PreSleep:
			s.mu.Lock()
			ready := len(s.queue) > 0
			if !ready {
				s.sleeping[c] = true
			}
			s.mu.Unlock()
			if ready {
				c.send(protocol.Noop)
			}
		case protocol.WorkComplete:
			s.complete(p.Arg(0), p.Data())
		default:
			s.t.Errorf("fake server: unexpected %s", p.Type)
		}
	}
}

func (s *fakeServer) submit(c *fakeConn, bg bool, unique, data []byte) {
	s.mu.Lock()
	s.created++
	j := &fakeJob{n: s.created, handle: []byte("H:fake:" + strconv.Itoa(s.created)),
		unique: append([]byte(nil), unique...), data: append([]byte(nil), data...)}
	if !bg {
		j.client = c
	}
	s.jobs[string(j.handle)] = j
	if !(bg && s.fault == faultLose && j.n == faultAt) {
		s.queue = append(s.queue, j)
	}
	wake := make([]*fakeConn, 0, len(s.sleeping))
	for w := range s.sleeping {
		wake = append(wake, w)
	}
	clear(s.sleeping)
	// JOB_CREATED leaves before a worker can see the job, so that it
	// always precedes the job's WORK_COMPLETE, as on gearmand.
	if s.fault == faultEarly && !bg && j.n == faultAt {
		s.queue = s.queue[:len(s.queue)-1]
		delete(s.jobs, string(j.handle))
		c.send(protocol.WorkComplete, j.handle, transform(nil, j.data))
	}
	c.send(protocol.JobCreated, j.handle)
	s.mu.Unlock()
	for _, w := range wake {
		w.send(protocol.Noop)
	}
}

func (s *fakeServer) grab(c *fakeConn) {
	s.mu.Lock()
	if len(s.queue) == 0 {
		s.mu.Unlock()
		c.send(protocol.NoJob)
		return
	}
	j := s.queue[0]
	s.queue = s.queue[1:]
	data := j.data
	if j.client == nil && j.n == faultAt {
		switch s.fault {
		case faultDuplicate:
			s.queue = append(s.queue, j)
			j.n = -1 // only once
		case faultMismatch:
			data = append([]byte(nil), data...)
			data[len(data)-1]++
		}
	}
	s.mu.Unlock()
	c.send(protocol.JobAssignUniq, j.handle, []byte("f"), j.unique, data)
}

func (s *fakeServer) complete(handle, data []byte) {
	s.mu.Lock()
	j := s.jobs[string(handle)]
	delete(s.jobs, string(handle))
	s.mu.Unlock()
	if j == nil || j.client == nil {
		return
	}
	switch {
	case j.n != faultAt || s.fault == faultNone:
		j.client.send(protocol.WorkComplete, handle, data)
	case s.fault == faultMismatch:
		bad := append([]byte(nil), data...)
		bad[0]++
		j.client.send(protocol.WorkComplete, handle, bad)
	case s.fault == faultDuplicate:
		j.client.send(protocol.WorkComplete, handle, data)
		j.client.send(protocol.WorkComplete, handle, data)
	case s.fault == faultLose:
	}
}
