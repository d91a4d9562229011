package proxy

import (
	"cmp"
	"context"
	"github.com/gearproxy/gearproxy/backend"
	"github.com/gearproxy/gearproxy/protocol"
	"log/slog"
	"slices"
)

// worker is the worker role of a session: a link to every healthy backend,
// the abilities to register on each (and replay on one that comes back),
// and the grab in progress. All of it is guarded by the session's mutex.
//
// Wake-ups: the worker's PRE_SLEEP goes to every backend, and the first
// NOOP back is the one the worker sees; later ones only mark their backend
// as having work. A grab asks those backends first, in the order they
// woke, then the rest starting after the backend that assigned last, so
// that no backend's queue starves. A backend that answers NO_JOB is put to
// sleep again at once (the proxy sends PRE_SLEEP for the worker), so it
// wakes the worker when work arrives there while another backend keeps
// the worker busy.
type worker struct {
	s         *session
	links     []*backend.Link // by backend index; nil when not connected
	abilities []ability
	sleeping  bool  // the worker sent PRE_SLEEP and has had no NOOP since
	woke      []int // backends that signalled work, oldest first
	cursor    int   // where the rotation starts when no backend woke
	queue     []grabRequest
	cur       *grabState // &grab while a grab is in progress
	grab      grabState
	closed    bool

	// An ECHO_REQ from a worker goes to the backend that got its last
	// WORK_* packet, so that an ERROR about that packet (JOB_NOT_FOUND
	// after a timeout) reaches the worker before ECHO_RES, as it would
	// from gearmand; libgearman pings to learn exactly that.
	lastWork int
	echoes   [][]echo   // by backend: ECHO_REQs awaiting their ECHO_RES
	held     [][][]byte // by backend: ERRORs that must precede that ECHO_RES

	// running is every job assigned to this worker and not finished,
	// for metrics and the drain (ops.go).
	running map[runKey]running
}

type echo struct {
	seq  uint64
	data []byte
}

type ability struct {
	t       protocol.Type // CAN_DO or CAN_DO_TIMEOUT
	fn      []byte
	name    string // fn, for the running jobs' records
	timeout []byte
}

type grabRequest struct {
	t   protocol.Type
	seq uint64
}

type grabState struct {
	grabRequest
	order []int
	pos   int
	at    int // backend asked now
}

// ensureWorker turns the session into a worker on its first worker packet:
// idle clients never pay for worker links.
func (s *session) ensureWorker() *worker {
	s.mu.Lock()
	if w := s.worker; w != nil {
		s.mu.Unlock()
		return w
	}
	pools := s.srv.pools()
	n := len(pools)
	w := &worker{s: s, links: make([]*backend.Link, n), lastWork: -1, echoes: make([][]echo, n), held: make([][][]byte, n)}
	s.worker = w
	s.mu.Unlock()
	up := s.srv.upSet()
	for i := range pools {
		if up.Has(i) {
			w.connect(i)
		}
	}
	return w
}

// connect opens the worker's link to backend i and replays what the
// worker told the others.
func (w *worker) connect(i int) {
	s := w.s
	// A backend added by a reload has an index past this worker's
	// arrays: make room before its link can call back.
	s.mu.Lock()
	w.grow(i)
	s.mu.Unlock()
	// The link's callbacks need the link itself: they wait until it is
	// known.
	var link *backend.Link
	ready := make(chan struct{})
	var err error
	link, err = s.srv.pools()[i].b.OpenWorker(func(p *protocol.Packet) {
		<-ready
		w.fromBackend(i, link, p)
	}, func(error) {
		<-ready
		go w.lost(i, link)
	})
	close(ready)
	if err != nil {
		s.srv.log.Debug("worker link", "session", s.id, "backend", s.srv.pools()[i].b.Name(), "err", err)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	l := link
	// A link to the backend's previous life may still be here: its
	// lost() runs on its own goroutine and finds it replaced.
	if w.closed || (w.links[i] != nil && !w.links[i].Closed()) {
		go l.Close()
		return
	}
	w.links[i] = l
	if s.clientID != "" {
		l.Packet(protocol.SetClientID, []byte(s.clientID))
	}
	for _, a := range w.abilities {
		a.send(l)
	}
	if w.sleeping {
		l.Packet(protocol.PreSleep)
	}
}

func (a ability) send(l *backend.Link) {
	if a.t == protocol.CanDoTimeout {
		l.Packet(a.t, a.fn, a.timeout)
		return
	}
	l.Packet(a.t, a.fn)
}

// lost forgets a link that ended; a grab waiting on it moves on.
func (w *worker) lost(i int, link *backend.Link) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	if link == nil || w.links[i] != link {
		return
	}
	w.links[i] = nil
	w.forget(i)
	w.unwake(i)
	w.answerEchoes(i)
	if w.cur != nil && w.cur.at == i {
		w.cur.pos++
		w.tryNext()
	}
}

func (w *worker) close() {
	w.s.mu.Lock()
	w.closed = true
	w.forget(-1)
	links := w.links
	w.links = make([]*backend.Link, len(links))
	w.s.mu.Unlock()
	// Close them in parallel: each waits for its last packets to leave.
	for _, l := range links {
		if l != nil {
			go l.Close()
		}
	}
}

// sendAll sends a packet to every backend (under the session lock, so
// that its order with other packets to all backends is the same on each).
func (w *worker) sendAll(t protocol.Type, args ...[]byte) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.sendAllLocked(t, args...)
}

func (w *worker) sendAllLocked(t protocol.Type, args ...[]byte) {
	for _, l := range w.links {
		if l != nil {
			l.Packet(t, args...)
		}
	}
}

func (w *worker) fromBackend(i int, link *backend.Link, p *protocol.Packet) {
	s := w.s
	if s.srv.trace {
		s.srv.log.Log(context.Background(), slog.LevelDebug-4, "to worker link", "session", s.id, "backend", i, "packet", p.String())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if w.links[i] != link {
		return
	}
	switch p.Type {
	case protocol.Noop:
		w.wake(i)
	case protocol.NoJob:
		if w.cur != nil && w.cur.at == i {
			w.noJob(i)
		}
	case protocol.JobAssign, protocol.JobAssignUniq, protocol.JobAssignAll:
		if w.cur == nil || w.cur.at != i || len(p.Args) == 0 {
			return
		}
		w.assigned(i, p)
	case protocol.Error:
		if w.cur != nil && w.cur.at == i {
			// A grab that fails on one backend is a NO_JOB there.
			w.noJob(i)
			return
		}
		// An ERROR about a WORK_* packet (JOB_NOT_FOUND after a
		// timeout): the worker would have had it from gearmand too.
		if len(w.echoes[i]) > 0 {
			w.held[i] = append(w.held[i], protocol.AppendPacket(nil, protocol.Res, p.Type, p.Args...))
			return
		}
		s.pushLocked(copyPacket(p))
	case protocol.EchoRes:
		if len(w.echoes[i]) > 0 {
			w.answerEcho(i)
		}
	}
}

// answerEcho answers the oldest ECHO_REQ sent to backend i, after the
// ERRORs that came before its ECHO_RES.
func (w *worker) answerEcho(i int) {
	e := w.echoes[i][0]
	w.echoes[i] = w.echoes[i][1:]
	held := w.held[i]
	w.held[i] = nil
	w.s.fillLocked(e.seq, func(dst []byte) []byte {
		for _, h := range held {
			dst = append(dst, h...)
		}
		return protocol.AppendPacket(dst, protocol.Res, protocol.EchoRes, e.data)
	})
}

func (w *worker) answerEchoes(i int) {
	for len(w.echoes[i]) > 0 {
		w.answerEcho(i)
	}
}

// workerEcho answers a worker's ECHO_REQ through a backend: the one of its
// last WORK_* packet when there is one.
func (s *session) workerEcho(w *worker, data []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := w.lastWork
	if i < 0 || w.links[i] == nil {
		// No WORK_* yet: any backend will do, and one of them at least
		// has then seen the abilities sent before the ping.
		i = slices.IndexFunc(w.links, func(l *backend.Link) bool { return l != nil })
	}
	if i < 0 {
		s.pushLocked(func(dst []byte) []byte { return protocol.AppendPacket(dst, protocol.Res, protocol.EchoRes, data) })
		return
	}
	seq := s.base + uint64(len(s.replies))
	s.appendReply(reply{})
	e := echo{seq: seq, data: append([]byte(nil), data...)}
	w.echoes[i] = append(w.echoes[i], e)
	if w.links[i].Packet(protocol.EchoReq, data) != nil {
		w.answerEchoes(i)
	}
}

func (w *worker) wake(i int) {
	for _, b := range w.woke {
		if b == i {
			goto signalled
		}
	}
	w.woke = append(w.woke, i)
signalled:
	if w.sleeping {
		w.sleeping = false
		w.s.pushLocked(appendNoop)
	}
}

func appendNoop(dst []byte) []byte { return protocol.AppendPacket(dst, protocol.Res, protocol.Noop) }

func (w *worker) unwake(i int) {
	for k, b := range w.woke {
		if b == i {
			w.woke = append(w.woke[:k], w.woke[k+1:]...)
			return
		}
	}
}

func (w *worker) noJob(i int) {
	w.unwake(i)
	w.s.srv.pools()[i].queue.forget(w.abilities)
	if l := w.links[i]; l != nil {
		l.Packet(protocol.PreSleep)
	}
	w.cur.pos++
	w.tryNext()
}

func (w *worker) assigned(i int, p *protocol.Packet) {
	// The backend that assigned may well have more: it goes to the back
	// of the woken list, behind backends that signalled work meanwhile.
	w.unwake(i)
	w.woke = append(w.woke, i)
	w.cursor = (i + 1) % len(w.links)
	w.s.srv.pools()[i].queue.remove(p.Args[0])
	w.track(i, p)
	seq, user := w.cur.seq, w.s.ident.User
	w.cur = nil
	codec := w.s.srv.codec()
	var args [8][]byte
	a := append(args[:0], p.Args...)
	t := p.Type
	w.s.outAssign(t, a)
	w.s.fillLocked(seq, func(dst []byte) []byte {
		start := len(dst)
		dst = protocol.AppendPacket(dst, protocol.Res, t)
		dst = codec.Encode(dst, user, i, a[0])
		for _, x := range a[1:] {
			dst = append(dst, 0)
			dst = append(dst, x...)
		}
		size := len(dst) - start - protocol.HeaderSize
		dst[start+8], dst[start+9], dst[start+10], dst[start+11] = byte(size>>24), byte(size>>16), byte(size>>8), byte(size)
		return dst
	})
	w.startNext()
}

// grabOrder is the order in which a grab asks the backends: first those
// known to hold a job for this worker, highest priority then oldest first,
// as one gearmand would hand them out; then those that signalled work, in
// the order they did; then the rest, in rotation from after the backend
// that assigned last, so that no backend starves.
func (w *worker) grabOrder(order []int) []int {
	n := len(w.links)
	type known struct {
		b    int
		prio protocol.Priority
		seq  uint64
	}
	var space [8]known
	ks := space[:0]
	for b, l := range w.links {
		if l == nil {
			continue
		}
		if prio, seq, ok := w.s.srv.pools()[b].queue.best(w.abilities); ok {
			ks = append(ks, known{b, prio, seq})
		}
	}
	slices.SortFunc(ks, func(a, b known) int {
		if a.prio != b.prio {
			return int(a.prio) - int(b.prio)
		}
		return cmp.Compare(a.seq, b.seq)
	})
	add := func(b int) {
		if !slices.Contains(order, b) {
			order = append(order, b)
		}
	}
	for _, k := range ks {
		add(k.b)
	}
	for _, b := range w.woke {
		add(b)
	}
	for k := range n {
		add((w.cursor + k) % n)
	}
	return order
}

// startNext begins the next queued grab, if none is in progress.
func (w *worker) startNext() {
	if w.cur != nil || len(w.queue) == 0 {
		return
	}
	// One grab at a time: its state reuses the last one's.
	g := &w.grab
	*g = grabState{grabRequest: w.queue[0], order: w.grabOrder(g.order[:0])}
	w.queue = w.queue[1:]
	w.cur = g
	w.tryNext()
}

// tryNext asks the next backend in the grab's order, or answers NO_JOB
// when every one has said no.
func (w *worker) tryNext() {
	g := w.cur
	for g.pos < len(g.order) {
		b := g.order[g.pos]
		if l := w.links[b]; l != nil && l.Packet(g.t) == nil {
			g.at = b
			return
		}
		g.pos++
	}
	w.cur = nil
	w.s.fillLocked(g.seq, func(dst []byte) []byte {
		return protocol.AppendPacket(dst, protocol.Res, protocol.NoJob)
	})
	w.startNext()
}

func (s *session) grab(t protocol.Type) {
	if s.refuseDraining("grab") {
		return
	}
	w := s.ensureWorker()
	seq := s.reserve()
	s.mu.Lock()
	defer s.mu.Unlock()
	w.queue = append(w.queue, grabRequest{t: t, seq: seq})
	w.startNext()
}

func (s *session) preSleep() {
	if s.srv.draining.Load() {
		// No job will be handed out: a NOOP would only start a
		// GRAB_JOB / NO_JOB loop until the drain ends.
		return
	}
	w := s.ensureWorker()
	s.mu.Lock()
	defer s.mu.Unlock()
	w.sleeping = true
	w.sendAllLocked(protocol.PreSleep)
	if len(w.woke) > 0 {
		// A backend signalled work since the last grab: wake at once,
		// as gearmand does when a job is waiting.
		w.sleeping = false
		s.pushLocked(appendNoop)
	}
}

func (s *session) ability(p *protocol.Packet) {
	fn := p.Arg(0)
	if (p.Type == protocol.CanDo || p.Type == protocol.CanDoTimeout) && !s.ident.Allow(Work, fn) {
		s.answer(permissionDenied(Work, fn))
		return
	}
	var tenant protocol.Packet
	p = s.inAbility(p, &tenant)
	fn = p.Arg(0)
	w := s.ensureWorker()
	s.mu.Lock()
	defer s.mu.Unlock()
	switch p.Type {
	case protocol.CanDo:
		w.abilities = append(w.abilities, ability{t: p.Type, fn: append([]byte(nil), fn...), name: string(fn)})
	case protocol.CanDoTimeout:
		w.abilities = append(w.abilities, ability{t: p.Type, fn: append([]byte(nil), fn...), name: string(fn), timeout: append([]byte(nil), p.Arg(1)...)})
	case protocol.CantDo:
		kept := w.abilities[:0]
		for _, a := range w.abilities {
			if string(a.fn) != string(fn) {
				kept = append(kept, a)
			}
		}
		w.abilities = kept
	case protocol.ResetAbilities:
		w.abilities = nil
	}
	w.sendAllLocked(p.Type, p.Args...)
}

// workResult routes a WORK_* packet from the worker to the backend that
// assigned the job, with the backend's own handle.
func (s *session) workResult(p *protocol.Packet) {
	i, bh, ok := s.srv.codec().Decode(s.ident.User, p.Arg(0))
	var link *backend.Link
	if ok {
		s.mu.Lock()
		if w := s.worker; w != nil && i < len(w.links) {
			link = w.links[i]
			w.lastWork = i
			w.result(i, bh, p.Type)
		}
		s.mu.Unlock()
	}
	if !ok {
		// Not a handle this worker's user was given: gearmand's answer
		// for a job it does not know.
		s.answer(func(dst []byte) []byte {
			return protocol.AppendError(dst, "JOB_NOT_FOUND", "Job given in work result not found")
		})
		return
	}
	if link == nil {
		// The job's backend went away and its clients were told it
		// failed. Drop the result quietly: an ERROR here would reach a
		// libgearman worker while it waits for a grab reply, which it
		// treats as a protocol error.
		return
	}
	var args [8][]byte
	a := append(args[:0], p.Args...)
	a[0] = bh
	link.Packet(p.Type, a...)
}

// backendUp connects every worker session to a backend that came (back)
// up and replays its abilities there.
func (srv *Server) backendUp(i int) {
	srv.each(func(s *session) {
		s.mu.Lock()
		w := s.worker
		s.mu.Unlock()
		if w != nil {
			w.connect(i)
		}
	})
}
