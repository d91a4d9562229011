package jobserver

import (
	"fmt"

	"github.com/gearproxy/gearproxy/jobserver/store"
	"github.com/gearproxy/gearproxy/protocol"
)

// load queues every stored job again, before the server accepts anyone:
// same function, unique (so coalescing still works), priority, FIFO order
// (the store returns jobs by ascending ID), due time, reducer and retry
// count. Jobs that were running when the server stopped are simply queued.
// The handle counter continues after the largest ID.
func (s *Server) load() error {
	n := 0
	err := s.store.Load(func(r *store.Job) error {
		if r.Priority > protocol.Low {
			return fmt.Errorf("job %d: bad priority %d", r.ID, r.Priority)
		}
		if len(r.Unique) > maxUnique {
			return fmt.Errorf("job %d: unique is %d bytes", r.ID, len(r.Unique))
		}
		if s.jobs.get(r.ID) != nil {
			return fmt.Errorf("job %d: stored twice", r.ID)
		}
		f := s.function([]byte(r.Function))
		save := s.nextID
		s.nextID = r.ID
		j := s.newJob(f, []byte(r.Unique), r.Data, r.Priority, true)
		s.nextID = max(save, r.ID+1)
		j.retries = r.Retries
		j.flags |= flagPersisted
		if r.Reducer != "" || r.When != 0 || r.Sched != "" {
			x := j.x()
			x.reducer, x.when, x.sched = r.Reducer, r.When, r.Sched
		}
		s.enqueue(j)
		n++
		return nil
	})
	if err != nil {
		return fmt.Errorf("jobserver: loading stored jobs: %w", err)
	}
	if li, ok := s.store.(store.LastIDer); ok {
		// Numbering continues after every job ever stored, even when
		// all of them ended before the restart.
		s.nextID = max(s.nextID, li.LastID()+1)
	}
	if n > 0 {
		s.log.Info("loaded stored jobs", "jobs", n, "next_handle", s.Handle(s.nextID))
	}
	return nil
}
