package jobserver

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/gearproxy/gearproxy/protocol"
)

// Version is what the admin command "version" reports. It is gearmand's,
// because tools compare it.
const Version = "1.1.20+ds"

// admin runs one admin text command with gearmand's exact reply formats
// (libgearman-server/text.cc). Each reply is queued in one piece:
// gearadmin reads until the connection has been quiet for 5 ms.
func (c *conn) admin(args [][]byte) bool {
	s := c.s
	argc := len(args)
	cmd := ""
	if argc > 0 {
		cmd = strings.ToLower(string(args[0]))
	}
	is := func(i int, word string) bool { return argc > i && bytes.EqualFold(args[i], []byte(word)) }

	s.mu.Lock()
	b := s.scratch[:0]
	s.scratch = nil // ours until we put it back
	var removed []uint64
	var shutdown, graceful bool
	switch {
	case argc == 0:
		b = append(b, "ERR UNKNOWN_COMMAND Unknown+server+command\r\n"...) // an empty line, as gearmand answers it
	case cmd == "workers":
		b = s.appendWorkers(b)
	case cmd == "status":
		for _, f := range s.sortedFuncs() {
			b = append(b, f.name...)
			b = appendTabUint(b, f.total)
			b = appendTabUint(b, f.running)
			b = appendTabUint(b, len(f.workers))
			b = append(b, '\n')
		}
		b = append(b, protocol.TextListEnd...)
	case cmd == "prioritystatus":
		for _, f := range s.sortedFuncs() {
			b = append(b, f.name...)
			b = appendTabUint(b, f.queuedCount(protocol.High))
			b = appendTabUint(b, f.queuedCount(protocol.Normal))
			b = appendTabUint(b, f.queuedCount(protocol.Low))
			b = appendTabUint(b, len(f.workers))
			b = append(b, '\n')
		}
		b = append(b, protocol.TextListEnd...)
	case argc >= 3 && cmd == "cancel":
		if argc == 3 && is(1, "job") {
			var ok bool
			b, removed, ok = s.cancelJob(b, args[2])
			if !ok {
				b = append(b, "ERR UNKNOWN_JOB\r\n"...)
			}
		} else {
			b = append(b, "ERR UNKNOWN_ERROR\r\n"...)
		}
	case argc >= 2 && cmd == "show":
		switch {
		case argc == 3 && is(1, "unique") && is(2, "jobs"):
			for _, j := range s.sortedJobs() {
				b = append(b, j.unique()...)
				b = append(b, '\n')
			}
			b = append(b, protocol.TextListEnd...)
		case argc == 2 && is(1, "jobs"):
			// The fourth column is gearmand's job_queued, "handed to the
			// persistent queue". With a Store it is 1 once the job is
			// durable; without one, 1 for every background job, as
			// gearmand prints with no persistent queue configured.
			for _, j := range s.sortedJobs() {
				b = appendHandle(b, s.prefix, j.id)
				b = appendTabUint(b, int(j.retries))
				b = appendTabBool(b, j.flags&flagIgnore != 0)
				b = appendTabBool(b, j.background() && (s.store == nil || j.flags&flagPersisted != 0))
				b = append(b, '\n')
			}
			b = append(b, protocol.TextListEnd...)
		default:
			b = append(b, "ERR UNKNOWN_SHOW_ARGUMENTS\r\n"...)
		}
	case cmd == "create":
		if argc == 3 && is(1, "function") {
			s.function(args[2])
			b = append(b, protocol.TextOK...)
		} else {
			b = appendArgsError(b, args[0])
		}
	case cmd == "drop":
		if argc == 3 && is(1, "function") {
			b = s.dropFunction(b, args[2])
		} else {
			b = appendArgsError(b, args[0])
		}
	case cmd == "maxqueue":
		if argc == 1 {
			b = appendArgsError(b, args[0])
			break
		}
		var limits [3]int
		for p := range limits {
			if argc > p+2 {
				limits[p] = int(max(min(atoi(args[p+2]), 1<<31-1), 0))
			}
		}
		if argc <= 3 {
			limits[1], limits[2] = limits[0], limits[0]
		}
		if f, ok := s.funcs[string(args[1])]; ok {
			f.maxQueue = limits
		}
		b = append(b, protocol.TextOK...)
	case cmd == "getpid":
		b = protocol.AppendTextValue(b, strconv.Itoa(os.Getpid()))
	case cmd == "verbose":
		b = protocol.AppendTextValue(b, s.verboseName())
	case cmd == "version":
		b = protocol.AppendTextValue(b, Version)
	case cmd == "shutdown" && s.opts.AllowShutdown && (argc == 1 || argc == 2 && is(1, "graceful")):
		b = append(b, protocol.TextOK...)
		shutdown, graceful = true, argc == 2
	default:
		b = append(b, "ERR UNKNOWN_COMMAND Unknown+server+command"...)
		b = append(b, args[0]...)
		b = append(b, "\r\n"...)
	}
	if len(removed) > 0 {
		// A cancelled job leaves the Store before the OK, without the
		// lock held.
		s.mu.Unlock()
		s.storeRemove(removed)
		s.mu.Lock()
	}
	reply := b
	c.send(func(dst []byte) []byte { return append(dst, reply...) })
	if cap(b) <= 64<<10 {
		s.scratch = b[:0]
	} else {
		s.scratch = nil
	}
	s.mu.Unlock()
	if shutdown {
		s.log.Info("shutdown requested by admin command", "remote", c.nc.RemoteAddr().String(), "graceful", graceful)
		if graceful {
			go s.Shutdown(context.Background())
		} else {
			go s.Close()
		}
	}
	return true
}

func appendArgsError(b, cmd []byte) []byte {
	b = append(b, "ERR INVALID_ARGUMENTS An+incomplete+set+of+arguments+was+sent+to+this+command+"...)
	b = append(b, cmd...)
	return append(b, "\r\n"...)
}

func appendTabUint(b []byte, n int) []byte {
	b = append(b, '\t')
	return strconv.AppendUint(b, uint64(n), 10)
}

func appendTabBool(b []byte, v bool) []byte {
	if v {
		return append(b, "\t1"...)
	}
	return append(b, "\t0"...)
}

// verboseName is the log level in gearmand's words.
func (s *Server) verboseName() string {
	ctx := context.Background()
	switch {
	case s.log.Enabled(ctx, slog.LevelDebug):
		return "DEBUG"
	case s.log.Enabled(ctx, slog.LevelInfo):
		return "INFO"
	case s.log.Enabled(ctx, slog.LevelWarn):
		return "WARNING"
	}
	return "ERROR"
}

// appendWorkers lists every connection, newest first, as
// "fd ip client-id : functions", the functions newest registration first.
func (s *Server) appendWorkers(b []byte) []byte {
	for c := s.conns; c != nil; c = c.next {
		b = strconv.AppendInt(b, int64(c.id), 10)
		b = append(b, ' ')
		b = append(b, c.host...)
		b = append(b, ' ')
		if c.clientID == "" {
			b = append(b, '-')
		} else {
			b = append(b, c.clientID...)
		}
		b = append(b, " :"...)
		for i := len(c.abilities) - 1; i >= 0; i-- {
			b = append(b, ' ')
			b = append(b, c.abilities[i].fn.name...)
		}
		b = append(b, '\n')
	}
	return append(b, protocol.TextListEnd...)
}

func (s *Server) sortedFuncs() []*function {
	fs := make([]*function, 0, len(s.funcs))
	for _, f := range s.funcs {
		fs = append(fs, f)
	}
	slices.SortFunc(fs, func(a, b *function) int { return strings.Compare(a.name, b.name) })
	return fs
}

func (s *Server) sortedJobs() []*job {
	js := make([]*job, 0, s.jobs.len())
	s.jobs.each(func(j *job) { js = append(js, j) })
	slices.SortFunc(js, func(a, b *job) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	return js
}

// cancelJob ends a job: WORK_FAIL to its clients and out of the Store. A
// queued job leaves the queue at once (gearmand leaves it counted until a
// worker would get it); a running one runs on with its results going
// nowhere.
func (s *Server) cancelJob(b []byte, h []byte) ([]byte, []uint64, bool) {
	id, ok := parseHandle(s.prefix, h)
	if !ok {
		return b, nil, false
	}
	j := s.jobs.get(id)
	if j == nil {
		return b, nil, false
	}
	s.failClients(j)
	var removed []uint64
	if j.state == stRunning {
		for _, c := range j.clearClients() {
			if n := c.waiting[j]; n <= 1 {
				delete(c.waiting, j)
			} else {
				c.waiting[j] = n - 1
			}
		}
		j.flags |= flagIgnore
		j.flags &^= flagBackground
		j.fn.unindexUnique(j) // a new submit of this unique starts afresh
		if j.flags&flagPersisted != 0 {
			j.flags &^= flagPersisted
			removed = append(removed, j.id)
		}
	} else if rid, ok := s.finish(j); ok {
		removed = append(removed, rid)
	}
	return append(b, protocol.TextOK...), removed, true
}

// dropFunction forgets a function nobody uses. gearmand matches the name
// case-insensitively and drops a function with queued jobs, orphaning
// them; we refuse while any job remains.
func (s *Server) dropFunction(b []byte, name []byte) []byte {
	var f *function
	for _, ff := range s.sortedFuncs() {
		if strings.EqualFold(ff.name, string(name)) {
			f = ff
			break
		}
	}
	switch {
	case f == nil:
		return append(b, "ERR function not found\r\n"...)
	case len(f.workers) > 0 || f.running > 0:
		return append(b, "ERR there are still connected workers or executing clients\r\n"...)
	case f.total > 0:
		return append(b, "ERR there are still queued jobs\r\n"...)
	}
	delete(s.funcs, f.name)
	return append(b, protocol.TextOK...)
}
