package jobserver

import (
	"bytes"
	"encoding/binary"
	"math"
	"strconv"
	"time"

	"github.com/gearproxy/gearproxy/jobserver/store"
	"github.com/gearproxy/gearproxy/protocol"
)

// handle runs one request. It returns false when the connection must
// close.
func (c *conn) handle(p *protocol.Packet) bool {
	switch p.Type {
	case protocol.Text:
		return c.admin(p.Args)
	case protocol.SubmitJob, protocol.SubmitJobBg, protocol.SubmitJobHigh, protocol.SubmitJobHighBg,
		protocol.SubmitJobLow, protocol.SubmitJobLowBg, protocol.SubmitJobEpoch, protocol.SubmitJobSched,
		protocol.SubmitReduceJob, protocol.SubmitReduceJobBackground:
		c.submit(p)
	case protocol.GrabJob, protocol.GrabJobUniq, protocol.GrabJobAll:
		c.grab(p.Type)
	case protocol.WorkData, protocol.WorkWarning, protocol.WorkStatus, protocol.WorkComplete,
		protocol.WorkFail, protocol.WorkException:
		c.workResult(p)
	case protocol.PreSleep:
		s := c.s
		s.mu.Lock()
		if s.peek(c) {
			// A job arrived between the worker's last grab and its
			// sleep: wake it at once.
			c.send(appendNoop)
		} else {
			c.sleeping = true
		}
		s.mu.Unlock()
	case protocol.CanDo:
		c.canDo(p.Args[0], 0)
	case protocol.CanDoTimeout:
		ms := min(max(atoi(p.Args[1]), 0), int64(math.MaxInt64/time.Millisecond))
		c.canDo(p.Args[0], time.Duration(ms)*time.Millisecond)
	case protocol.CantDo:
		c.cantDo(p.Args[0], false)
	case protocol.ResetAbilities:
		c.cantDo(nil, true)
	case protocol.GetStatus:
		c.getStatus(p.Args[0])
	case protocol.GetStatusUnique:
		c.getStatusUnique(p.Args[0])
	case protocol.EchoReq:
		data := p.Data()
		c.s.mu.Lock()
		c.send(func(b []byte) []byte { return protocol.AppendPacket(b, protocol.Res, protocol.EchoRes, data) })
		c.s.mu.Unlock()
	case protocol.OptionReq:
		name := p.Args[0]
		c.s.mu.Lock()
		if bytes.EqualFold(name, []byte("exceptions")) {
			c.exceptions = true
			c.send(func(b []byte) []byte { return protocol.AppendPacket(b, protocol.Res, protocol.OptionRes, name) })
		} else {
			c.sendError("UNKNOWN_OPTION", "Server does not recognize given option")
		}
		c.s.mu.Unlock()
	case protocol.SetClientID:
		id := p.Args[0]
		if len(id) > 127 {
			id = id[:127]
		}
		c.s.mu.Lock()
		c.clientID = string(id)
		c.s.mu.Unlock()
	default:
		// Responses sent to the server, type 5, ALL_YOURS and the SASL
		// types, which the bundled server does not speak.
		c.s.mu.Lock()
		c.sendError("INVALID_COMMAND", "Command not expected")
		c.s.mu.Unlock()
	}
	return true
}

// sendError queues an ERROR packet. Server.mu held.
func (c *conn) sendError(code, text string) {
	c.send(func(b []byte) []byte { return protocol.AppendError(b, code, text) })
}

// beginPacket appends a response header whose size endPacket fills in.
func beginPacket(b []byte, t protocol.Type) ([]byte, int) {
	start := len(b)
	b = binary.BigEndian.AppendUint32(b, uint32(protocol.Res))
	b = binary.BigEndian.AppendUint32(b, uint32(t))
	b = append(b, 0, 0, 0, 0)
	return b, start
}

func endPacket(b []byte, start int) []byte {
	binary.BigEndian.PutUint32(b[start+8:], uint32(len(b)-start-protocol.HeaderSize))
	return b
}

func (s *Server) appendJobCreated(b []byte, id uint64) []byte {
	b, st := beginPacket(b, protocol.JobCreated)
	b = appendHandle(b, s.prefix, id)
	return endPacket(b, st)
}

func (c *conn) submit(p *protocol.Packet) {
	s := c.s
	t := p.Type
	fname, unique, data := p.Args[0], p.Args[1], p.Data()
	var when int64
	var sched string
	var reducer []byte
	switch t {
	case protocol.SubmitJobEpoch:
		when = atoi(p.Args[2])
	case protocol.SubmitJobSched:
		var err error
		if when, err = schedNext(p.Args[2:7], s.now()); err != nil {
			s.mu.Lock()
			c.sendError("INVALID_ARGUMENT", "SUBMIT_JOB_SCHED: "+err.Error())
			s.mu.Unlock()
			return
		}
		sched = string(bytes.Join(p.Args[2:7], []byte(" ")))
	case protocol.SubmitReduceJob, protocol.SubmitReduceJobBackground:
		reducer = p.Args[2]
		if len(reducer) > maxReducer {
			s.mu.Lock()
			// gearmand's text, though it is the reducer that is long.
			c.sendError("ARGUMENT_TOO_LARGE", "Unique value too large")
			s.mu.Unlock()
			return
		}
	}
	if len(unique) > maxUnique {
		s.mu.Lock()
		c.sendError("ARGUMENT_TOO_LARGE", "Unique value too large")
		s.mu.Unlock()
		return
	}
	bg := t.IsBackground()
	prio := t.SubmitPriority()
	durable := bg && s.store != nil
	if durable {
		if c.persist == nil {
			c.persist = make(chan struct{}, maxPersistInFlight)
		}
		select {
		case c.persist <- struct{}{}:
		default:
			// The store lags: send what is ready, then pause this reader.
			c.out.Flush()
			c.persist <- struct{}{}
			c.out.Begin()
		}
	}

	s.mu.Lock()
	f := s.function(fname)
	if j := f.lookupUnique(unique, data); j != nil {
		// Coalesce: same handle, and a foreground submitter is attached
		// to receive the job's WORK_* from now on.
		if durable {
			<-c.persist
		}
		if bg {
			j.flags |= flagBackground // no longer abandoned with its clients
		} else {
			c.attachTo(j)
		}
		j.flags &^= flagIgnore
		if j.state == stPersisting {
			x := j.x()
			x.waiters = append(x.waiters, c.hold())
		} else {
			id := j.id
			c.send(func(b []byte) []byte { return s.appendJobCreated(b, id) })
		}
		s.mu.Unlock()
		return
	}
	if limit := f.maxQueue[prio]; limit > 0 && f.total >= limit {
		if durable {
			<-c.persist
		}
		c.sendError("QUEUE_ERROR", "Job queue is full")
		s.mu.Unlock()
		return
	}
	j := s.newJob(f, unique, data, prio, bg)
	if len(reducer) > 0 || when != 0 || sched != "" {
		x := j.x()
		x.reducer, x.when, x.sched = string(reducer), when, sched
	}
	if !bg {
		c.attachTo(j)
	}
	if !durable {
		s.enqueue(j)
		id := j.id
		c.send(func(b []byte) []byte { return s.appendJobCreated(b, id) })
		s.mu.Unlock()
		return
	}
	// Durable: JOB_CREATED waits for the Store, without the server lock,
	// so that submits on other connections share the store's commit.
	j.state = stPersisting
	x := j.x()
	x.waiters = append(x.waiters, c.hold())
	rec := j.record()
	s.persistWG.Add(1)
	s.mu.Unlock()
	if aa, ok := s.store.(store.AsyncAdder); ok {
		aa.AddAsync(rec, func(err error) { s.persisted(c, j, err) })
	} else {
		go func() { s.persisted(c, j, s.store.Add(rec)) }()
	}
}

func (c *conn) attachTo(j *job) {
	j.attach(c)
	if c.waiting == nil {
		c.waiting = make(map[*job]int)
	}
	c.waiting[j]++
}

// persisted runs once the Store has a new background job (or failed to
// take it): it queues the job and releases the JOB_CREATED (or ERROR) of
// everyone who submitted it meanwhile.
func (s *Server) persisted(c *conn, j *job, err error) {
	defer s.persistWG.Done()
	<-c.persist
	s.mu.Lock()
	var waiters []*replySlot
	if j.ext != nil {
		waiters, j.ext.waiters = j.ext.waiters, nil
	}
	var removeID uint64
	if err != nil {
		s.log.Error("store: adding job failed", "handle", s.Handle(j.id), "function", j.fn.name, "err", err)
		if j.state == stPersisting {
			s.finish(j)
		}
		for _, w := range waiters {
			w.resolve(func(b []byte) []byte { return protocol.AppendError(b, "QUEUE_ERROR", "Job could not be stored") })
		}
	} else {
		switch j.state {
		case stPersisting:
			j.flags |= flagPersisted
			s.enqueue(j)
		case stDone: // cancelled while being stored
			removeID = j.id
		}
		id := j.id
		for _, w := range waiters {
			w.resolve(func(b []byte) []byte { return s.appendJobCreated(b, id) })
		}
	}
	s.mu.Unlock()
	if removeID != 0 {
		s.storeRemove([]uint64{removeID})
	}
}

func (c *conn) grab(t protocol.Type) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	c.sleeping, c.noopSent = false, false
	j, timeout := s.take(c)
	if j == nil {
		c.send(func(b []byte) []byte { return protocol.AppendPacket(b, protocol.Res, protocol.NoJob) })
		return
	}
	s.armTimeout(j, timeout)
	typ := protocol.JobAssign
	switch {
	case t == protocol.GrabJobUniq:
		typ = protocol.JobAssignUniq
	case t == protocol.GrabJobAll && j.reducer() != "":
		typ = protocol.JobAssignAll
	case t == protocol.GrabJobAll:
		typ = protocol.JobAssignUniq
	}
	c.send(func(b []byte) []byte {
		b, st := beginPacket(b, typ)
		b = appendHandle(b, s.prefix, j.id)
		b = append(b, 0)
		b = append(b, j.fn.name...)
		b = append(b, 0)
		if typ != protocol.JobAssign {
			b = append(b, j.unique()...)
			b = append(b, 0)
		}
		if typ == protocol.JobAssignAll {
			b = append(b, j.reducer()...)
			b = append(b, 0)
		}
		b = append(b, j.data()...)
		return endPacket(b, st)
	})
}

func (c *conn) canDo(name []byte, timeout time.Duration) {
	s := c.s
	s.mu.Lock()
	f := s.function(name)
	c.abilities = append(c.abilities, ability{fn: f, timeout: timeout})
	f.workers = append(f.workers, c)
	s.mu.Unlock()
}

// cantDo removes every registration of one function (or all with reset).
// As in gearmand, a job the worker holds through a removed registration
// goes back to the queue.
func (c *conn) cantDo(name []byte, all bool) {
	s := c.s
	s.mu.Lock()
	var removed []uint64
	kept := c.abilities[:0]
	for _, a := range c.abilities {
		if all || a.fn.name == string(name) {
			a.fn.removeWorker(c)
			continue
		}
		kept = append(kept, a)
	}
	for i := len(kept); i < len(c.abilities); i++ {
		c.abilities[i] = ability{}
	}
	c.abilities = kept
	for i := 0; i < len(c.running); {
		j := c.running[i]
		if all || j.fn.name == string(name) {
			if id, ok := s.requeue(j); ok {
				removed = append(removed, id)
			}
			continue // requeue removed c.running[i]
		}
		i++
	}
	s.mu.Unlock()
	s.storeRemove(removed)
}

// workResult forwards a worker's WORK_* packet to the job's clients.
func (c *conn) workResult(p *protocol.Packet) {
	s := c.s
	h := p.Args[0]
	s.mu.Lock()
	var j *job
	if id, ok := parseHandle(s.prefix, h); ok {
		if jj := s.jobs.get(id); jj != nil && jj.state == stRunning && jj.worker == c {
			j = jj
		}
	}
	if j == nil {
		text := "Job given in work result not found"
		switch p.Type {
		case protocol.WorkData, protocol.WorkWarning:
			text = "Job does not exist on server"
		case protocol.WorkException:
			text = "An exception was received for a job that does not exist"
		}
		c.sendError("JOB_NOT_FOUND", text)
		s.mu.Unlock()
		return
	}
	var removeID uint64
	var remove bool
	switch p.Type {
	case protocol.WorkData, protocol.WorkWarning, protocol.WorkComplete:
		typ, data := p.Type, p.Data()
		j.eachClient(func(cl *conn) {
			cl.send(func(b []byte) []byte { return protocol.AppendPacket(b, protocol.Res, typ, h, data) })
		})
		if typ == protocol.WorkComplete {
			removeID, remove = s.finish(j)
		}
	case protocol.WorkStatus:
		num, den := p.Args[1], p.Args[2]
		x := j.x()
		// gearmand keeps (uint32_t)atoi(): the low 32 bits.
		x.numerator = strconv.FormatUint(uint64(uint32(atoi(num))), 10)
		x.denominator = strconv.FormatUint(uint64(uint32(atoi(den))), 10)
		j.eachClient(func(cl *conn) {
			cl.send(func(b []byte) []byte {
				return protocol.AppendPacket(b, protocol.Res, protocol.WorkStatus, h, num, den)
			})
		})
	case protocol.WorkException:
		data := p.Data()
		j.eachClient(func(cl *conn) {
			if cl.exceptions {
				cl.send(func(b []byte) []byte {
					return protocol.AppendPacket(b, protocol.Res, protocol.WorkException, h, data)
				})
			} else {
				// gearmand sends "handle\0" here, which hangs the
				// gearman CLI and kills Perl's client: send a clean
				// WORK_FAIL.
				cl.send(func(b []byte) []byte { return protocol.AppendPacket(b, protocol.Res, protocol.WorkFail, h) })
			}
		})
		removeID, remove = s.finish(j)
	case protocol.WorkFail:
		j.eachClient(func(cl *conn) {
			cl.send(func(b []byte) []byte { return protocol.AppendPacket(b, protocol.Res, protocol.WorkFail, h) })
		})
		removeID, remove = s.finish(j)
	}
	s.mu.Unlock()
	if remove {
		s.storeRemove([]uint64{removeID})
	}
}

func (c *conn) getStatus(h []byte) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	var j *job
	if id, ok := parseHandle(s.prefix, h); ok {
		j = s.jobs.get(id)
	}
	known, running, num, den := "0", "0", "0", "0"
	if j != nil {
		known = "1"
		if j.state == stRunning {
			running = "1"
		}
		num, den = j.status()
	}
	c.send(func(b []byte) []byte {
		b, st := beginPacket(b, protocol.StatusRes)
		b = append(b, h...)
		for _, f := range [...]string{known, running, num, den} {
			b = append(b, 0)
			b = append(b, f...)
		}
		return endPacket(b, st)
	})
}

func (j *job) status() (num, den string) {
	if j.ext == nil || j.ext.numerator == "" {
		return "0", "0"
	}
	return j.ext.numerator, j.ext.denominator
}

// getStatusUnique looks the unique up in every function, as gearmand does.
func (c *conn) getStatusUnique(u []byte) {
	s := c.s
	s.mu.Lock()
	defer s.mu.Unlock()
	var j *job
	if len(u) > 0 {
		// The newest job with this unique in any function, as gearmand
		// answers (its unique hash chains insert at the head), and
		// not one that depends on map order.
		for _, f := range s.funcs {
			if jj := f.uniques[string(u)]; jj != nil && (j == nil || jj.id > j.id) {
				j = jj
			}
		}
	}
	fields := [5]string{"0", "0", "0", "0", "0"}
	if j != nil {
		fields[0] = "1"
		if j.state == stRunning {
			fields[1] = "1"
		}
		fields[2], fields[3] = j.status()
		fields[4] = strconv.Itoa(j.clientCount())
	}
	c.send(func(b []byte) []byte {
		b, st := beginPacket(b, protocol.StatusResUnique)
		b = append(b, u...)
		for _, f := range fields {
			b = append(b, 0)
			b = append(b, f...)
		}
		return endPacket(b, st)
	})
}

// atoi parses like glibc's strtol, which gearmand's atoi and strtoll
// calls come down to: leading white space, an optional sign, digits;
// anything after them is ignored, no digits give 0, and a value out of
// range saturates at the int64 bounds.
func atoi(b []byte) int64 {
	i := 0
	for i < len(b) && (b[i] == ' ' || b[i] >= '\t' && b[i] <= '\r') {
		i++
	}
	neg := false
	if i < len(b) && (b[i] == '-' || b[i] == '+') {
		neg = b[i] == '-'
		i++
	}
	var n uint64 // magnitude, capped at 2^63
	for ; i < len(b) && b[i] >= '0' && b[i] <= '9'; i++ {
		if n > (1<<63)/10 {
			n = 1 << 63
			continue
		}
		n = n*10 + uint64(b[i]-'0')
		n = min(n, 1<<63)
	}
	switch {
	case neg:
		return -int64(n) // -2^63 stays -2^63
	case n >= 1<<63:
		return 1<<63 - 1
	}
	return int64(n)
}
