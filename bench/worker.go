package bench

import (
	"fmt"
	"sync/atomic"

	"github.com/gearproxy/gearproxy/protocol"
)

// worker is one worker connection to one server, behaving like a
// libgearman worker: grab, and when told NO_JOB, PRE_SLEEP until a NOOP.
type worker struct {
	r          *run
	c          *conn
	id         int
	registered bool
	sleeping   bool
	result     []byte
	progress   atomic.Int64
}

// registerWorker sends CAN_DO and waits for an echo behind it: the server
// handles a connection's packets in order, so after the echo it knows the
// worker.
func registerWorker(c *conn, fn []byte) error {
	c.w.WritePacket(protocol.Req, protocol.CanDo, fn)
	c.w.WritePacket(protocol.Req, protocol.EchoReq, []byte("ready"))
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("bench: register worker: %w", err)
	}
	for {
		if err := c.r.Read(&c.pkt); err != nil {
			return fmt.Errorf("bench: register worker: %w", err)
		}
		switch c.pkt.Type {
		case protocol.EchoRes:
			return nil
		case protocol.Noop:
		default:
			return fmt.Errorf("bench: register worker: unexpected %s", c.pkt.Type)
		}
	}
}

func (w *worker) name() string { return fmt.Sprintf("worker %d", w.id) }

// loop runs jobs until the run closes the connection.
func (w *worker) loop() {
	out := w.c.w
	if !w.registered {
		out.WritePacket(protocol.Req, protocol.CanDo, w.r.fn)
	}
	out.WritePacket(protocol.Req, protocol.GrabJobUniq)
	err := out.Flush()
	for err == nil {
		if err = w.c.r.Read(&w.c.pkt); err != nil {
			break
		}
		p := &w.c.pkt
		switch p.Type {
		case protocol.NoJob:
			w.sleeping = true
			err = out.WritePacket(protocol.Req, protocol.PreSleep)
		case protocol.Noop:
			// Only a sleeping worker grabs on NOOP: one that is
			// already grabbing would ask twice.
			if w.sleeping {
				w.sleeping = false
				err = out.WritePacket(protocol.Req, protocol.GrabJobUniq)
			}
		case protocol.JobAssign, protocol.JobAssignUniq, protocol.JobAssignAll:
			w.execute(p.Data())
			if err = out.WritePacket(protocol.Req, protocol.WorkComplete, p.Arg(0), w.result); err == nil {
				err = out.WritePacket(protocol.Req, protocol.GrabJobUniq)
			}
		case protocol.Error:
			w.r.errorf("%s: server ERROR %s: %s", w.name(), p.Arg(0), p.Arg(1))
		default:
			w.r.workerMismatched.Add(1)
			w.r.errorf("%s: unexpected %s", w.name(), p.Type)
		}
		if err == nil && w.c.r.Buffered() == 0 {
			err = out.Flush()
		}
	}
	w.r.connError(w.name(), w.c.nc.RemoteAddr(), err)
}

// execute checks an assigned payload and computes its result.
func (w *worker) execute(data []byte) {
	w.result = transform(w.result, data)
	w.progress.Add(1)
	r := w.r
	run, key, ok := readHeader(data, 0)
	switch {
	case ok && run != r.nonce:
		r.foreign.Add(1)
	case !ok || !isPayload(data, r.nonce, key, r.cfg.Payload, 0):
		r.workerMismatched.Add(1)
	case r.cfg.Mode == Background:
		r.ran(key)
	}
}
