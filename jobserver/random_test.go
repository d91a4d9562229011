package jobserver

import (
	"io"
	"math/rand"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/gearproxy/gearproxy/protocol"
)

// TestRandomTraffic sends random but well-framed requests from several
// connections at once, some of which disconnect midway, and then checks
// that the server's books balance: no panic, every job counted once, no
// worker or client left behind.
func TestRandomTraffic(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run("durable="+strconv.FormatBool(durable), func(t *testing.T) {
			opts := Options{JobRetries: 3}
			if durable {
				opts.Store = newFakeStore()
			}
			s, addr := testServer(t, opts)
			var wg sync.WaitGroup
			for i := 0; i < 6; i++ {
				wg.Add(1)
				go func(seed int64) {
					defer wg.Done()
					randomConn(t, addr, rand.New(rand.NewSource(seed)))
				}(int64(i))
			}
			wg.Wait()
			a := dial(t, addr)
			a.sync()
			waitFor(t, func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				return s.nconns == 1
			})
			checkBooks(t, s)
		})
	}
}

func randomConn(t *testing.T, addr string, r *rand.Rand) {
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Error(err)
		return
	}
	defer nc.Close()
	go io.Copy(io.Discard, nc)
	pick := func(xs ...string) []byte { return []byte(xs[r.Intn(len(xs))]) }
	fn := func() []byte { return pick("f", "g", "h") }
	unique := func() []byte { return pick("", "", "-", "u1", "u2", "u3") }
	handle := func() []byte { return []byte("H:test:" + strconv.Itoa(1+r.Intn(60))) }
	data := func() []byte { return pick("", "d1", "d2") }
	var b []byte
	n := 500 + r.Intn(1500)
	for i := 0; i < n; i++ {
		switch r.Intn(24) {
		case 0, 1:
			b = protocol.AppendPacket(b, protocol.Req, protocol.SubmitJob, fn(), unique(), data())
		case 2:
			b = protocol.AppendPacket(b, protocol.Req, protocol.SubmitJobBg, fn(), unique(), data())
		case 3:
			b = protocol.AppendPacket(b, protocol.Req, protocol.SubmitJobHighBg, fn(), unique(), data())
		case 4:
			b = protocol.AppendPacket(b, protocol.Req, protocol.SubmitJobLow, fn(), unique(), data())
		case 5:
			b = protocol.AppendPacket(b, protocol.Req, protocol.SubmitJobEpoch, fn(), unique(), pick("0", "1", "99999999999"), data())
		case 6:
			b = protocol.AppendPacket(b, protocol.Req, protocol.SubmitReduceJob, fn(), unique(), pick("", "red"), []byte("agg"), data())
		case 7, 8:
			b = protocol.AppendPacket(b, protocol.Req, protocol.CanDo, fn())
		case 9:
			b = protocol.AppendPacket(b, protocol.Req, protocol.CanDoTimeout, fn(), pick("0", "1", "5000"))
		case 10:
			b = protocol.AppendPacket(b, protocol.Req, protocol.CantDo, fn())
		case 11:
			if r.Intn(4) == 0 {
				b = protocol.AppendPacket(b, protocol.Req, protocol.ResetAbilities)
			}
		case 12, 13:
			grabs := []protocol.Type{protocol.GrabJob, protocol.GrabJobUniq, protocol.GrabJobAll}
			b = protocol.AppendPacket(b, protocol.Req, grabs[r.Intn(len(grabs))])
		case 14:
			b = protocol.AppendPacket(b, protocol.Req, protocol.PreSleep)
		case 15, 16:
			typ := []protocol.Type{protocol.WorkComplete, protocol.WorkFail, protocol.WorkException, protocol.WorkData}[r.Intn(4)]
			if typ == protocol.WorkFail {
				b = protocol.AppendPacket(b, protocol.Req, typ, handle())
			} else {
				b = protocol.AppendPacket(b, protocol.Req, typ, handle(), data())
			}
		case 17:
			b = protocol.AppendPacket(b, protocol.Req, protocol.WorkStatus, handle(), pick("1", "x"), pick("2", ""))
		case 18:
			b = protocol.AppendPacket(b, protocol.Req, protocol.GetStatus, handle())
		case 19:
			b = protocol.AppendPacket(b, protocol.Req, protocol.GetStatusUnique, unique())
		case 20:
			b = protocol.AppendPacket(b, protocol.Req, protocol.OptionReq, pick("exceptions", "x"))
		case 21:
			b = append(b, pick("status\n", "workers\n", "show jobs\n", "show unique jobs\n", "prioritystatus\n",
				"cancel job H:test:"+strconv.Itoa(1+r.Intn(60))+"\n", "maxqueue f 5\n", "maxqueue f 0\n",
				"drop function h\n", "create function h\n")...)
		case 22:
			b = protocol.AppendPacket(b, protocol.Req, protocol.SetClientID, pick("a", "b"))
		case 23:
			b = protocol.AppendPacket(b, protocol.Req, protocol.EchoReq, data())
		}
		if len(b) > 4096 || i == n-1 {
			if _, err := nc.Write(b); err != nil {
				return
			}
			b = b[:0]
		}
	}
}

// checkBooks verifies the server's counters against its jobs.
func checkBooks(t *testing.T, s *Server) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	type counts struct{ total, running, queued, delayed int }
	got := map[*function]*counts{}
	for _, f := range s.funcs {
		got[f] = &counts{}
	}
	s.jobs.each(func(j *job) {
		c := got[j.fn]
		if c == nil {
			t.Errorf("job %d belongs to a dropped function %q", j.id, j.fn.name)
			return
		}
		c.total++
		switch j.state {
		case stRunning:
			c.running++
			if j.worker == nil {
				t.Errorf("running job %d has no worker", j.id)
			}
		case stQueued:
			c.queued++
		case stDelayed:
			c.delayed++
		case stDone:
			t.Errorf("ended job %d still indexed", j.id)
		}
		if j.hasClients() && j.flags&flagIgnore != 0 {
			t.Errorf("job %d is abandoned but has clients", j.id)
		}
	})
	for f, c := range got {
		q := 0
		for p := range f.queue {
			q += f.queue[p].n
		}
		d := f.delayed[0] + f.delayed[1] + f.delayed[2]
		if f.total != c.total || f.running != c.running || q != c.queued || d != c.delayed {
			t.Errorf("function %q: total %d running %d queued %d delayed %d; jobs say %+v", f.name, f.total, f.running, q, d, *c)
		}
		if len(f.workers) != 0 {
			t.Errorf("function %q keeps %d workers of closed connections", f.name, len(f.workers))
		}
	}
}
