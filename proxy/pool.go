package proxy

import (
	"sync"
	"sync/atomic"

	"github.com/gearproxy/gearproxy/backend"
	"github.com/gearproxy/gearproxy/protocol"
)

// pool is the proxy's view of one backend: the backend itself and the
// foreground jobs that sessions wait on there.
//
// Lock order: pool.mu, then session.mu. Packets to sessions are queued
// under pool.mu (into their Outboxes, which never block), so that a job's
// JOB_CREATED and its WORK_* reach each session in order.
type pool struct {
	srv   *Server
	index int
	b     *backend.Backend
	// load is the backend's outstanding work as the proxy sees it, for
	// least-loaded routing: foreground jobs in flight plus background
	// submits not yet answered.
	load atomic.Int64
	// queue is what the proxy knows of the backend's queued jobs.
	queue queueView

	mu sync.Mutex
	// jobs are the foreground jobs with a handle, by backend handle.
	jobs map[string]*job
	// pending maps a coalescing key to its foreground job, from the
	// submit until the job ends. A second foreground submit of the same
	// key is attached here instead of being sent again: a shared link
	// attached twice to one job would receive its WORK_* twice.
	pending map[string]*job
}

// job is one foreground job on a backend that sessions wait on.
type job struct {
	key     string
	fn      string   // for metrics; "" without them
	handle  []byte   // backend handle; nil until JOB_CREATED
	waiters []waiter // submits answered by JOB_CREATED
	subs    []*session

	// The client handle of the last user it was encoded for: nearly
	// every job is seen by one user.
	user   string
	client []byte
}

type waiter struct {
	s   *session
	seq uint64
}

func (p *pool) clientHandle(j *job, user string) []byte {
	if j.client == nil || j.user != user {
		j.user, j.client = user, p.srv.codec().Encode(j.client[:0], user, p.index, j.handle)
	}
	return j.client
}

// coalesceKey names a foreground job for proxy-side coalescing, exactly
// as gearmand coalesces: per function and unique, on identical data for
// the unique "-".
func coalesceKey(fn, unique, data []byte) string {
	n := len(fn) + 1 + len(unique)
	dash := len(unique) == 1 && unique[0] == '-'
	if dash {
		n += 1 + len(data)
	}
	b := make([]byte, 0, n)
	b = append(b, fn...)
	b = append(b, 0)
	b = append(b, unique...)
	if dash {
		b = append(b, 0)
		b = append(b, data...)
	}
	return string(b)
}

// submit sends one SUBMIT_JOB* from session s, whose reply slot is seq.
// key is the coalescing key of a foreground job ("" for none). It fails
// only with backend.ErrDown, before anything was sent or attached.
func (p *pool) submit(s *session, seq uint64, pkt *protocol.Packet, key string) error {
	bg := pkt.Type.IsBackground()
	mfn := p.srv.metricFn(pkt.Arg(0))
	var track *queuedJob
	created := func(r *protocol.Packet) {
		if track == nil {
			return
		}
		var h []byte
		if r != nil && r.Type == protocol.JobCreated {
			h = r.Arg(0)
		}
		p.queue.created(track, h)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if key != "" {
		if j := p.pending[key]; j != nil {
			if j.handle != nil {
				p.srv.submitted(mfn, s, p)
				s.attach(p, j)
				ch := p.clientHandle(j, s.ident.User)
				s.fill(seq, func(dst []byte) []byte {
					return protocol.AppendPacket(dst, protocol.Res, protocol.JobCreated, ch)
				})
			} else {
				j.waiters = append(j.waiters, waiter{s, seq})
			}
			return nil
		}
	}
	link := p.b.LinkFor(s.id)
	if link == nil {
		return backend.ErrDown
	}
	encode := func(dst []byte) []byte {
		return protocol.AppendPacket(dst, protocol.Req, pkt.Type, pkt.Args...)
	}
	// Track runnable jobs in the queue view (epoch and SCHED jobs wait
	// for their time, so their age says nothing about grab order).
	if t := pkt.Type; t != protocol.SubmitJobEpoch && t != protocol.SubmitJobSched {
		track = p.queue.add(p.srv.submits.Add(1), pkt.Arg(0), t.SubmitPriority())
	}
	if bg {
		p.load.Add(1)
		err := link.Request(encode, func(r *protocol.Packet) {
			p.load.Add(-1)
			created(r)
			if r != nil && r.Type == protocol.JobCreated {
				p.srv.submitted(mfn, s, p)
			}
			p.createdBackground(s, seq, r)
		})
		if err != nil {
			p.load.Add(-1)
			created(nil)
		}
		return err
	}
	j := &job{key: key, fn: mfn, waiters: []waiter{{s, seq}}}
	if err := link.Request(encode, func(r *protocol.Packet) {
		created(r)
		p.created(j, r)
	}); err != nil {
		created(nil)
		return err
	}
	p.load.Add(1)
	if key != "" {
		p.pending[key] = j
	}
	return nil
}

func (p *pool) createdBackground(s *session, seq uint64, r *protocol.Packet) {
	switch {
	case r == nil:
		s.fill(seq, errBackendDown(p))
	case r.Type == protocol.JobCreated:
		user := s.ident.User
		h := r.Arg(0)
		s.fill(seq, func(dst []byte) []byte {
			return appendJobCreated(dst, p, user, h)
		})
	default:
		s.fill(seq, copyPacket(r))
	}
}

func appendJobCreated(dst []byte, p *pool, user string, h []byte) []byte {
	// Encode the client handle straight into the output: header first,
	// then the size patched once the handle's length is known.
	start := len(dst)
	dst = protocol.AppendPacket(dst, protocol.Res, protocol.JobCreated)
	dst = p.srv.codec().Encode(dst, user, p.index, h)
	size := len(dst) - start - protocol.HeaderSize
	dst[start+8], dst[start+9], dst[start+10], dst[start+11] = byte(size>>24), byte(size>>16), byte(size>>8), byte(size)
	return dst
}

// created handles the reply to a foreground submit, on the link's reader.
func (p *pool) created(j *job, r *protocol.Packet) {
	p.mu.Lock()
	defer p.mu.Unlock()
	waiters := j.waiters
	j.waiters = nil
	if r == nil || r.Type != protocol.JobCreated {
		if p.pending[j.key] == j {
			delete(p.pending, j.key)
		}
		p.load.Add(-1)
		reply := errBackendDown(p)
		if r != nil {
			reply = copyPacket(r)
		}
		for _, w := range waiters {
			w.s.fill(w.seq, reply)
		}
		return
	}
	h := r.Arg(0)
	if old := p.jobs[string(h)]; old != nil {
		// gearmand coalesced this submit with a job we already wait on
		// under another key (it cannot, with equal keys): keep one job.
		p.load.Add(-1)
		if p.pending[j.key] == j {
			p.pending[j.key] = old
		}
		j = old
	} else {
		j.handle = append([]byte(nil), h...)
		p.jobs[string(j.handle)] = j
	}
	for _, w := range waiters {
		p.srv.submitted(j.fn, w.s, p)
		w.s.attach(p, j)
		ch := p.clientHandle(j, w.s.ident.User)
		w.s.fill(w.seq, func(dst []byte) []byte {
			return protocol.AppendPacket(dst, protocol.Res, protocol.JobCreated, ch)
		})
	}
}

// work fans a WORK_* packet from a shared link out to every session
// attached to the job, with the handle each one knows.
func (p *pool) work(r *protocol.Packet) {
	terminal := false
	switch r.Type {
	case protocol.WorkComplete, protocol.WorkFail, protocol.WorkException:
		terminal = true
	case protocol.WorkData, protocol.WorkWarning, protocol.WorkStatus:
	default:
		p.srv.log.Warn("unexpected packet from backend", "backend", p.b.Name(), "type", r.Type.String())
		return
	}
	if terminal {
		p.queue.remove(r.Arg(0))
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	j := p.jobs[string(r.Arg(0))]
	if j == nil {
		return
	}
	if terminal {
		p.finish(j)
	}
	var args [8][]byte
	for _, s := range j.subs {
		ch := p.clientHandle(j, s.ident.User)
		a := append(args[:0], r.Args...)
		a[0] = ch
		s.workPacket(r.Type, a)
	}
}

// finish forgets a job that ended; its subscribers still get the final
// packet from the caller.
func (p *pool) finish(j *job) {
	delete(p.jobs, string(j.handle))
	if j.key != "" && p.pending[j.key] == j {
		delete(p.pending, j.key)
	}
	p.load.Add(-1)
	for _, s := range j.subs {
		s.detach(j)
	}
}

// state follows the backend going up and down.
func (p *pool) state(up bool) {
	p.srv.setUp(p.index, up)
	if up {
		p.srv.backendUp(p.index)
		return
	}
	p.queue.reset()
	// Every owed reply was answered by now (the links are closed):
	// what is left are jobs with a handle, whose results will never
	// come. Their clients get WORK_FAIL rather than a hang.
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, j := range p.jobs {
		p.srv.backendLost(j, p)
		for _, s := range j.subs {
			s.detach(j)
			ch := p.clientHandle(j, s.ident.User)
			s.push(func(dst []byte) []byte {
				return protocol.AppendPacket(dst, protocol.Res, protocol.WorkFail, ch)
			})
		}
	}
	p.jobs = map[string]*job{}
	p.pending = map[string]*job{}
	p.load.Store(0)
}

// detachAll removes session s from jobs it waits on (it went away).
func (p *pool) detach(s *session, j *job) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, x := range j.subs {
		if x == s {
			j.subs = append(j.subs[:i], j.subs[i+1:]...)
			break
		}
	}
}

func errBackendDown(p *pool) func([]byte) []byte {
	text := "backend " + p.b.Name() + " is down"
	return func(dst []byte) []byte { return protocol.AppendError(dst, "QUEUE_ERROR", text) }
}

// copyPacket returns an encoder of a copy of r, which is valid only
// during the callback that received it.
func copyPacket(r *protocol.Packet) func([]byte) []byte {
	b := protocol.AppendPacket(nil, protocol.Res, r.Type, r.Args...)
	return func(dst []byte) []byte { return append(dst, b...) }
}
