package proxy

import (
	"sync"

	"github.com/gearproxy/gearproxy/protocol"
)

// maxTracked bounds the jobs a pool remembers as queued. Jobs taken by
// workers the proxy does not see (connected to the backend directly) are
// only forgotten when a grab there finds nothing, so the bound keeps a
// long-running proxy from growing without end.
const maxTracked = 1 << 17

// queueView is what the proxy knows of one backend's queues: the jobs
// submitted through it that no worker has taken yet, in submit order per
// function and priority. A single gearmand hands out the highest priority,
// then the oldest job; a pool can only do the same if grabs ask the
// backend that holds that job first, and this is how the proxy knows
// which one that is. It is a hint: a wrong guess costs one NO_JOB.
//
// Its mutex is a leaf: taken under pool.mu or session.mu, never the other
// way round.
type queueView struct {
	mu       sync.Mutex
	fns      map[string]*fnQueue
	byHandle map[string]*queuedJob
}

type fnQueue struct {
	prio [3][]*queuedJob // by protocol.Priority, ascending seq
}

type queuedJob struct {
	seq    uint64
	fn     string
	prio   protocol.Priority
	handle string
	gone   bool
}

// add remembers a job at the moment it is submitted, before the backend
// has answered: a worker may ask for work before the proxy has read the
// JOB_CREATED. created gives it its handle, or drops it.
func (q *queueView) add(seq uint64, fn []byte, prio protocol.Priority) *queuedJob {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.fns == nil || len(q.byHandle) >= maxTracked {
		// Forget everything rather than hunt for the oldest: the view
		// rebuilds itself from new submits.
		q.fns, q.byHandle = map[string]*fnQueue{}, map[string]*queuedJob{}
	}
	j := &queuedJob{seq: seq, fn: string(fn), prio: prio}
	f := q.fns[j.fn]
	if f == nil {
		f = &fnQueue{}
		q.fns[j.fn] = f
	}
	// Submits on different links may reach here out of order: keep the
	// list sorted (nearly always already is).
	l := append(f.prio[prio], j)
	for i := len(l) - 1; i > 0 && l[i-1].seq > l[i].seq; i-- {
		l[i-1], l[i] = l[i], l[i-1]
	}
	f.prio[prio] = l
	return j
}

// created records the handle of a job added at submit, or drops the entry
// when the submit failed (handle nil) or joined a job already known (a
// coalesced submit).
func (q *queueView) created(j *queuedJob, handle []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if j.gone {
		return
	}
	if _, known := q.byHandle[string(handle)]; handle == nil || known || q.byHandle == nil {
		q.dropLocked(j)
		return
	}
	j.handle = string(handle)
	q.byHandle[j.handle] = j
}

func (q *queueView) dropLocked(j *queuedJob) {
	j.gone = true
	if j.handle != "" {
		delete(q.byHandle, j.handle)
	}
	if f := q.fns[j.fn]; f != nil {
		f.trim(j.prio)
		if f.empty() {
			delete(q.fns, j.fn)
		}
	}
}

// remove forgets a job that a worker took or that ended.
func (q *queueView) remove(handle []byte) {
	q.mu.Lock()
	defer q.mu.Unlock()
	j, ok := q.byHandle[string(handle)]
	if !ok {
		return
	}
	q.dropLocked(j)
}

func (f *fnQueue) trim(p protocol.Priority) {
	l := f.prio[p]
	for len(l) > 0 && l[0].gone {
		l[0] = nil
		l = l[1:]
	}
	f.prio[p] = l
}

func (f *fnQueue) empty() bool {
	return len(f.prio[0]) == 0 && len(f.prio[1]) == 0 && len(f.prio[2]) == 0
}

// forget drops every job of the given functions: the backend just said it
// has none a worker with these abilities could take.
func (q *queueView) forget(fns []ability) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, a := range fns {
		f := q.fns[string(a.fn)]
		if f == nil {
			continue
		}
		for _, l := range f.prio {
			for _, j := range l {
				if !j.gone {
					j.gone = true
					if j.handle != "" {
						delete(q.byHandle, j.handle)
					}
				}
			}
		}
		delete(q.fns, string(a.fn))
	}
}

func (q *queueView) reset() {
	q.mu.Lock()
	q.fns, q.byHandle = nil, nil
	q.mu.Unlock()
}

// best is the (priority, seq) of the job a worker with these abilities
// would most want from this backend; ok is false when none is known.
func (q *queueView) best(fns []ability) (prio protocol.Priority, seq uint64, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, a := range fns {
		f := q.fns[string(a.fn)]
		if f == nil {
			continue
		}
		for p := protocol.High; p <= protocol.Low; p++ {
			f.trim(p)
			if l := f.prio[p]; len(l) > 0 {
				if !ok || p < prio || (p == prio && l[0].seq < seq) {
					prio, seq, ok = p, l[0].seq, true
				}
				break
			}
		}
	}
	return prio, seq, ok
}
