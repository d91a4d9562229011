package jobserver

import (
	"container/heap"
	"strings"
	"time"

	"github.com/gearproxy/gearproxy/jobserver/store"
	"github.com/gearproxy/gearproxy/protocol"
)

// function returns the function called name, creating it. Server.mu held.
func (s *Server) function(name []byte) *function {
	if f, ok := s.funcs[string(name)]; ok { // no allocation for the lookup
		return f
	}
	f := &function{name: string(name)}
	s.funcs[f.name] = f
	return f
}

// coalesceMap returns the index a job with this unique is coalesced in,
// and whether it is keyed by the data (unique "-"), or nil when the job
// never coalesces: an empty unique, or "-" with empty data (gearmand's
// rules).
func (f *function) coalesceMap(unique, data []byte, create bool) (map[string]*job, bool) {
	switch {
	case len(unique) == 0:
		return nil, false
	case len(unique) == 1 && unique[0] == '-':
		if len(data) == 0 {
			return nil, false
		}
		if f.dataUniques == nil && create {
			f.dataUniques = make(map[string]*job)
		}
		return f.dataUniques, true
	default:
		if f.uniques == nil && create {
			f.uniques = make(map[string]*job)
		}
		return f.uniques, false
	}
}

// lookupUnique finds the live job a submit coalesces with.
func (f *function) lookupUnique(unique, data []byte) *job {
	m, byData := f.coalesceMap(unique, data, false)
	if m == nil {
		return nil
	}
	if byData {
		return m[string(data)]
	}
	return m[string(unique)]
}

func (f *function) indexUnique(j *job) {
	m, byData := f.coalesceMap([]byte(j.unique()), []byte(j.data()), true)
	if m == nil {
		return
	}
	key := j.unique()
	if byData {
		key = j.data()
	}
	if _, taken := m[key]; !taken {
		m[key] = j
		j.flags |= flagIndexed
	}
}

func (f *function) unindexUnique(j *job) {
	if j.flags&flagIndexed == 0 {
		return
	}
	j.flags &^= flagIndexed
	if j.flags&flagDataUnique != 0 {
		delete(f.dataUniques, j.data())
	} else {
		delete(f.uniques, j.unique())
	}
}

// newJob creates a job and indexes it. Server.mu held.
func (s *Server) newJob(f *function, unique, data []byte, prio protocol.Priority, bg bool) *job {
	j := &job{id: s.nextID, fn: f, prio: prio, ulen: uint8(len(unique))}
	s.nextID++
	var sb strings.Builder // one allocation for unique and data
	sb.Grow(len(unique) + len(data))
	sb.Write(unique)
	sb.Write(data)
	j.text = sb.String()
	if bg {
		j.flags |= flagBackground
	}
	if len(unique) == 1 && unique[0] == '-' {
		j.flags |= flagDataUnique
	}
	s.jobs.put(j)
	f.total++
	f.indexUnique(j)
	return j
}

// enqueue makes a job runnable, or holds it until its time. Server.mu held.
func (s *Server) enqueue(j *job) {
	if w := j.when(); w != 0 && w > s.now().Unix() {
		j.state = stDelayed
		j.fn.delayed[j.prio]++
		heap.Push(&s.delayed, j)
		if s.delayed[0] == j {
			s.armDelay()
		}
		return
	}
	j.state = stQueued
	j.fn.queue[j.prio].push(j)
	s.wake(j.fn)
}

// wake sends NOOP to every sleeping worker of f that has not had one.
func (s *Server) wake(f *function) {
	for _, w := range f.workers {
		if w.sleeping && !w.noopSent {
			w.noopSent = true
			w.send(appendNoop)
		}
	}
}

func appendNoop(b []byte) []byte { return protocol.AppendPacket(b, protocol.Res, protocol.Noop) }

// runnable reports whether a worker with these abilities could get a job.
// Abandoned jobs at the head of a queue are dropped on the way, as
// gearmand's peek does.
func (s *Server) peek(c *conn) bool {
	for i := len(c.abilities) - 1; i >= 0; i-- {
		f := c.abilities[i].fn
		for p := range f.queue {
			if s.headJob(&f.queue[p]) != nil {
				return true
			}
		}
	}
	return false
}

// headJob returns the first job of q that is not abandoned, dropping the
// abandoned ones before it.
func (s *Server) headJob(q *jobQueue) *job {
	for j := q.head; j != nil; j = q.head {
		if j.flags&flagIgnore == 0 {
			return j
		}
		s.finish(j) // foreground, so never stored
	}
	return nil
}

// take assigns c the next job it can do: its functions newest registration
// first, each by priority, FIFO within a priority.
func (s *Server) take(c *conn) (*job, time.Duration) {
	for i := len(c.abilities) - 1; i >= 0; i-- {
		a := c.abilities[i]
		for p := range a.fn.queue {
			q := &a.fn.queue[p]
			if j := s.headJob(q); j != nil {
				q.remove(j)
				j.state = stRunning
				j.worker = c
				a.fn.running++
				c.running = append(c.running, j)
				return j, a.timeout
			}
		}
	}
	return nil, 0
}

// armTimeout starts a job's CAN_DO_TIMEOUT clock. gearmand keeps one timer
// per connection pointing at a job that may be gone by the time it fires
// (gearmand #301); here the timer belongs to one assignment of one job.
func (s *Server) armTimeout(j *job, d time.Duration) {
	if d <= 0 {
		return
	}
	if d < time.Second {
		d = time.Second // gearmand raises 1-999 ms to a second
	}
	x := j.x()
	x.assignSeq++
	seq := x.assignSeq
	x.timer = time.AfterFunc(d, func() { s.jobTimedOut(j, seq) })
}

func (s *Server) jobTimedOut(j *job, seq uint64) {
	s.mu.Lock()
	if j.state != stRunning || j.ext == nil || j.ext.assignSeq != seq || s.closing {
		s.mu.Unlock()
		return
	}
	s.log.Warn("worker timeout reached on job, requeueing", "handle", s.Handle(j.id), "unique", j.unique())
	id, removed := s.requeue(j)
	s.mu.Unlock()
	if removed {
		s.storeRemove([]uint64{id})
	}
}

// unassign takes a running job away from its worker.
func (s *Server) unassign(j *job) {
	w := j.worker
	for i, r := range w.running {
		if r == j {
			last := len(w.running) - 1
			w.running[i] = w.running[last]
			w.running[last] = nil
			w.running = w.running[:last]
			break
		}
	}
	j.worker = nil
	j.fn.running--
	if j.ext != nil {
		if j.ext.timer != nil {
			j.ext.timer.Stop()
			j.ext.timer = nil
		}
		j.ext.assignSeq++
	}
}

// requeue puts a job whose worker went away (disconnect, timeout, CANT_DO)
// back at the tail of its queue, or drops it with WORK_FAIL to its clients
// once it has been tried JobRetries times. It returns a stored job's ID to
// remove from the Store after the lock is released.
func (s *Server) requeue(j *job) (uint64, bool) {
	s.unassign(j)
	if s.closing {
		// The job stays in the Store as it was; nothing more to do.
		j.state = stQueued
		j.fn.queue[j.prio].push(j)
		return 0, false
	}
	j.retries++
	if s.opts.JobRetries > 0 && int(j.retries) >= s.opts.JobRetries {
		s.log.Info("dropped job due to max retry count", "handle", s.Handle(j.id), "unique", j.unique(), "retries", j.retries)
		s.failClients(j)
		return s.finish(j)
	}
	if j.ext != nil {
		j.ext.numerator, j.ext.denominator = "", ""
	}
	if j.flags&flagIgnore != 0 {
		return s.finish(j)
	}
	if j.flags&flagPersisted != 0 && s.store != nil {
		id, retries := j.id, j.retries
		s.persistWG.Add(1)
		go func() {
			defer s.persistWG.Done()
			if err := s.store.SetRetries(id, retries); err != nil {
				s.log.Error("store: recording retries failed", "handle", s.Handle(id), "err", err)
			}
		}()
	}
	j.state = stQueued
	j.fn.queue[j.prio].push(j)
	s.wake(j.fn)
	return 0, false
}

// failClients sends WORK_FAIL to every client of j.
func (s *Server) failClients(j *job) {
	if !j.hasClients() {
		return
	}
	var hb [64]byte
	h := appendHandle(hb[:0], s.prefix, j.id)
	j.eachClient(func(c *conn) {
		c.send(func(b []byte) []byte { return protocol.AppendPacket(b, protocol.Res, protocol.WorkFail, h) })
	})
}

// finish removes a job from every index. It returns the job's ID when it
// must also be removed from the Store (after the lock is released).
func (s *Server) finish(j *job) (uint64, bool) {
	f := j.fn
	switch j.state {
	case stQueued:
		f.queue[j.prio].remove(j)
	case stDelayed:
		f.delayed[j.prio]--
		if j.ext != nil && j.ext.heapIndex >= 0 {
			heap.Remove(&s.delayed, j.ext.heapIndex)
		}
	case stRunning:
		if j.worker != nil {
			s.unassign(j)
		}
	case stDone:
		return 0, false
	}
	j.state = stDone
	s.jobs.del(j.id)
	f.unindexUnique(j)
	f.total--
	j.eachClient(func(c *conn) {
		if n := c.waiting[j]; n <= 1 {
			delete(c.waiting, j)
		} else {
			c.waiting[j] = n - 1
		}
	})
	j.client = nil
	if j.ext != nil {
		j.ext.clients = nil
	}
	if s.graceful && s.jobs.len() == 0 {
		select {
		case s.noJobs <- struct{}{}:
		default:
		}
	}
	if j.flags&flagPersisted != 0 {
		j.flags &^= flagPersisted
		return j.id, true
	}
	return 0, false
}

// storeRemove removes ended jobs from the Store; called without the lock.
func (s *Server) storeRemove(ids []uint64) {
	if len(ids) == 0 || s.store == nil {
		return
	}
	if err := s.store.Remove(ids...); err != nil {
		s.log.Error("store: removing ended jobs failed; they will run again after a restart", "count", len(ids), "err", err)
	}
}

// delayHeap orders epoch and SCHED jobs by due time, then ID.
type delayHeap []*job

func (h delayHeap) Len() int { return len(h) }
func (h delayHeap) Less(a, b int) bool {
	wa, wb := h[a].ext.when, h[b].ext.when
	if wa != wb {
		return wa < wb
	}
	return h[a].id < h[b].id
}
func (h delayHeap) Swap(a, b int) {
	h[a], h[b] = h[b], h[a]
	h[a].ext.heapIndex = a
	h[b].ext.heapIndex = b
}
func (h *delayHeap) Push(x any) {
	j := x.(*job)
	j.ext.heapIndex = len(*h)
	*h = append(*h, j)
}
func (h *delayHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	j.ext.heapIndex = -1
	return j
}

// armDelay sets the timer for the earliest delayed job. Server.mu held.
func (s *Server) armDelay() {
	if len(s.delayed) == 0 || s.closing {
		return
	}
	d := time.Until(time.Unix(s.delayed[0].ext.when, 0))
	if t := s.now(); !t.IsZero() {
		d = time.Unix(s.delayed[0].ext.when, 0).Sub(t)
	}
	if d < 0 {
		d = 0
	}
	if s.delayT == nil {
		s.delayT = time.AfterFunc(d, s.releaseDue)
	} else {
		s.delayT.Reset(d)
	}
}

// releaseDue queues every delayed job whose time has come and wakes its
// workers; gearmand leaves them in the queue without a NOOP, so sleeping
// workers never learn of them.
func (s *Server) releaseDue() {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now().Unix()
	for len(s.delayed) > 0 && s.delayed[0].ext.when <= now {
		j := heap.Pop(&s.delayed).(*job)
		j.fn.delayed[j.prio]--
		j.state = stQueued
		j.fn.queue[j.prio].push(j)
		s.wake(j.fn)
	}
	s.armDelay()
}

// record returns the Store's view of a background job.
func (j *job) record() *store.Job {
	r := &store.Job{
		ID:       j.id,
		Function: j.fn.name,
		Unique:   j.unique(),
		Data:     []byte(j.data()),
		Priority: j.prio,
		Retries:  j.retries,
	}
	if j.ext != nil {
		r.Reducer = j.ext.reducer
		r.When = j.ext.when
		r.Sched = j.ext.sched
	}
	return r
}
