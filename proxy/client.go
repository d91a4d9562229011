package proxy

import (
	"bytes"
	"context"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/gearproxy/gearproxy/backend"
	"github.com/gearproxy/gearproxy/protocol"
)

// dispatch handles one packet from the peer, on the reader goroutine. The
// packet is valid only until dispatch returns; anything an asynchronous
// reply needs is copied first.
func (s *session) dispatch(p *protocol.Packet) {
	if s.srv.trace {
		s.srv.log.Log(context.Background(), slog.LevelDebug-4, "from peer", "session", s.id, "packet", p.String())
	}
	switch t := p.Type; {
	case t == protocol.Text:
		s.admin(p)
	case t.IsSubmit():
		s.submit(p)
	case t == protocol.GetStatus:
		s.getStatus(p)
	case t == protocol.GetStatusUnique:
		s.getStatusUnique(p)
	case t == protocol.EchoReq:
		data := p.Data()
		s.mu.Lock()
		w := s.worker
		s.mu.Unlock()
		if w != nil {
			s.workerEcho(w, data)
			return
		}
		s.answer(func(dst []byte) []byte { return protocol.AppendPacket(dst, protocol.Res, protocol.EchoRes, data) })
	case t == protocol.OptionReq:
		s.option(p.Arg(0))
	case t == protocol.SetClientID:
		s.setClientID(p.Arg(0))
	case t == protocol.CanDo, t == protocol.CanDoTimeout, t == protocol.CantDo, t == protocol.ResetAbilities:
		s.ability(p)
	case t == protocol.PreSleep:
		s.preSleep()
	case t == protocol.GrabJob, t == protocol.GrabJobUniq, t == protocol.GrabJobAll:
		s.grab(t)
	case t == protocol.WorkData, t == protocol.WorkWarning, t == protocol.WorkStatus,
		t == protocol.WorkComplete, t == protocol.WorkFail, t == protocol.WorkException:
		s.workResult(p)
	case t == protocol.SASLMechsReq, t == protocol.SASLStart, t == protocol.SASLStep:
		s.saslAfterAuth()
	default:
		// Response types sent to the server, type 5, ALL_YOURS: what
		// gearmand says to them.
		s.answer(func(dst []byte) []byte {
			return protocol.AppendError(dst, "INVALID_COMMAND", "Command not expected")
		})
	}
}

func permissionDenied(v Verb, name []byte) func([]byte) []byte {
	text := v.String() + " " + string(name) + " is not allowed"
	return func(dst []byte) []byte { return protocol.AppendError(dst, "PERMISSION_DENIED", text) }
}

func (s *session) submit(p *protocol.Packet) {
	if s.refuseDraining("submit") {
		return
	}
	if !s.ident.Allow(Submit, p.Arg(0)) {
		s.answer(permissionDenied(Submit, p.Arg(0)))
		return
	}
	var tenant protocol.Packet
	if p = s.admitSubmit(p, &tenant); p == nil {
		return
	}
	fn, unique, data := p.Arg(0), p.Arg(1), p.Data()
	if len(unique) > maxUnique {
		// gearmand truncates a 64-byte unique silently, and the same
		// unique must mean the same job on every backend: refuse it,
		// as the bundled server does.
		s.answer(func(dst []byte) []byte {
			return protocol.AppendError(dst, "ARGUMENT_TOO_LARGE", "Unique value too large")
		})
		return
	}
	key := ""
	if !p.Type.IsBackground() && len(unique) > 0 {
		key = coalesceKey(fn, unique, data)
	}
	seq := s.reserve()
	up := s.srv.upSet()
	for {
		i := s.srv.router().PickJob(fn, unique, data, up, s.srv.load)
		if i < 0 {
			s.fill(seq, func(dst []byte) []byte {
				return protocol.AppendError(dst, "QUEUE_ERROR", "no backend is up")
			})
			return
		}
		if err := s.srv.pools()[i].submit(s, seq, p, key); err == nil {
			s.notePump(s.srv.pools()[i].b.LinkFor(s.id))
			return
		}
		// The backend went down between the health check and now: the
		// next one in rendezvous order takes the job.
		up = up.Without(i)
	}
}

func (srv *Server) load(i int) int64 { return srv.pools()[i].load.Load() }

// waitingClients corrects a backend's count of clients waiting on a job:
// the proxy attaches all its foreground sessions of one job through one
// submit, so the backend counts them once.
func (srv *Server) waitingClients(p *pool, unique, backendCount []byte) []byte {
	n, err := strconv.Atoi(string(backendCount))
	if err != nil {
		return backendCount
	}
	p.mu.Lock()
	for key, j := range p.pending {
		if _, u, ok := strings.Cut(key, "\x00"); ok && u == string(unique) && j.handle != nil {
			// Zero when every session left: the backend still counts
			// the link, which stays attached until the job ends.
			n += len(j.subs) - 1
		}
	}
	n = max(n, 0)
	p.mu.Unlock()
	return []byte(strconv.Itoa(n))
}

func unknownStatus(h []byte) func([]byte) []byte {
	return func(dst []byte) []byte {
		zero := []byte{'0'}
		return protocol.AppendPacket(dst, protocol.Res, protocol.StatusRes, h, zero, zero, zero, zero)
	}
}

// maxUnique is the longest unique ID libgearman can hold (64-byte buffer
// with its NUL).
const maxUnique = 63

func (s *session) getStatus(p *protocol.Packet) {
	h := bytes.Clone(p.Arg(0))
	seq := s.reserve()
	i, bh, ok := s.srv.codec().Decode(s.ident.User, h)
	if !ok {
		// A handle this user was never given: unknown, like gearmand
		// answers for a handle it never issued.
		s.fill(seq, unknownStatus(h))
		return
	}
	link := s.srv.pools()[i].b.LinkFor(s.id)
	if link == nil {
		s.fill(seq, unknownStatus(h))
		return
	}
	s.notePump(link)
	err := link.Request(func(dst []byte) []byte {
		return protocol.AppendPacket(dst, protocol.Req, protocol.GetStatus, bh)
	}, func(r *protocol.Packet) {
		if r == nil || r.Type != protocol.StatusRes || len(r.Args) != 5 {
			s.fill(seq, unknownStatus(h))
			return
		}
		s.fill(seq, func(dst []byte) []byte {
			return protocol.AppendPacket(dst, protocol.Res, protocol.StatusRes, h, r.Args[1], r.Args[2], r.Args[3], r.Args[4])
		})
	})
	if err != nil {
		s.fill(seq, unknownStatus(h))
	}
}

// getStatusUnique asks every healthy backend: GET_STATUS_UNIQUE names no
// function, so the unique alone cannot be routed. A backend that knows the
// job wins; otherwise the answer is "unknown".
func (s *session) getStatusUnique(p *protocol.Packet) {
	unique := bytes.Clone(p.Arg(0))
	seq := s.reserve()
	unknown := func(dst []byte) []byte {
		zero := []byte{'0'}
		return protocol.AppendPacket(dst, protocol.Res, protocol.StatusResUnique, unique, zero, zero, zero, zero, zero)
	}
	asked, ok := s.statusUnique(unique)
	if !ok {
		s.fill(seq, unknown)
		return
	}
	var (
		mu      sync.Mutex
		pending int
		found   []byte
	)
	finish := func() {
		if found != nil {
			b := found
			s.fill(seq, func(dst []byte) []byte { return append(dst, b...) })
		} else {
			s.fill(seq, unknown)
		}
	}
	var links []*backend.Link
	var pools []*pool
	up := s.srv.upSet()
	for i, p := range s.srv.pools() {
		if up.Has(i) {
			if l := p.b.LinkFor(s.id); l != nil {
				links = append(links, l)
				pools = append(pools, p)
			}
		}
	}
	if len(links) == 0 {
		s.fill(seq, unknown)
		return
	}
	pending = len(links)
	for k, l := range links {
		pl := pools[k]
		s.notePump(l)
		err := l.Request(func(dst []byte) []byte {
			return protocol.AppendPacket(dst, protocol.Req, protocol.GetStatusUnique, asked)
		}, func(r *protocol.Packet) {
			mu.Lock()
			defer mu.Unlock()
			if r != nil && r.Type == protocol.StatusResUnique && len(r.Args) == 6 && string(r.Args[1]) != "0" && found == nil {
				args := append([][]byte(nil), r.Args...)
				args[0] = unique // as the client named it, without the namespace
				args[5] = s.srv.waitingClients(pl, asked, args[5])
				found = protocol.AppendPacket(nil, protocol.Res, protocol.StatusResUnique, args...)
			}
			if pending--; pending == 0 {
				finish()
			}
		})
		if err != nil {
			mu.Lock()
			if pending--; pending == 0 {
				finish()
			}
			mu.Unlock()
		}
	}
}

// option answers OPTION_REQ itself: the only option gearmand knows,
// "exceptions", is kept per session, since the shared links to backends
// always have it.
func (s *session) option(name []byte) {
	if !bytes.EqualFold(name, []byte("exceptions")) {
		s.answer(func(dst []byte) []byte {
			return protocol.AppendError(dst, "UNKNOWN_OPTION", "Server does not recognize given option")
		})
		return
	}
	s.exceptions.Store(true)
	s.answer(func(dst []byte) []byte { return protocol.AppendPacket(dst, protocol.Res, protocol.OptionRes, name) })
}

func (s *session) setClientID(id []byte) {
	s.mu.Lock()
	s.clientID = string(id)
	w := s.worker
	s.mu.Unlock()
	if w != nil {
		w.sendAll(protocol.SetClientID, id)
	}
}
