package proxy

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// adminTimeout bounds one admin command across all backends.
const adminTimeout = 5 * time.Second

// admin answers an admin text line. Commands that read state ask every
// healthy backend and merge; each reply is written in one piece, because
// gearadmin reads until 5 ms of silence.
func (s *session) admin(p *protocol.Packet) {
	if len(p.Args) == 0 {
		// gearmand's answer to an empty line.
		s.answer(func(dst []byte) []byte { return append(dst, "ERR UNKNOWN_COMMAND Unknown+server+command\r\n"...) })
		return
	}
	args := make([]string, len(p.Args))
	for i, a := range p.Args {
		args[i] = string(a)
	}
	cmd := strings.ToLower(args[0])
	seq := s.reserve()
	if name := adminName(args); !s.ident.Allow(Admin, []byte(name)) {
		s.fill(seq, func(dst []byte) []byte {
			return protocol.AppendTextError(dst, "PERMISSION_DENIED", "admin command "+name+" is not allowed")
		})
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(s.srv.ctx, adminTimeout)
		defer cancel()
		out := s.tenantAdmin(ctx, cmd, args)
		s.fill(seq, func(dst []byte) []byte { return append(dst, out...) })
	}()
}

// adminName is the command as ACLs name it: lower case, with the second
// word of two-word commands ("show jobs", "show unique jobs", "cancel job",
// "create function", "drop function").
func adminName(args []string) string {
	name := strings.ToLower(args[0])
	switch {
	case name == "show" && len(args) >= 3 && strings.EqualFold(args[1], "unique"):
		return "show unique " + strings.ToLower(args[2])
	case (name == "show" || name == "cancel" || name == "create" || name == "drop") && len(args) >= 2:
		return name + " " + strings.ToLower(args[1])
	}
	return name
}

func (srv *Server) adminReply(ctx context.Context, s *session, cmd string, args []string) []byte {
	switch {
	case cmd == "version":
		return protocol.AppendTextValue(nil, srv.opts.Version)
	case cmd == "getpid":
		return protocol.AppendTextValue(nil, strconv.Itoa(pid()))
	case cmd == "status":
		return srv.mergeCounts(ctx, "status", 3)
	case cmd == "prioritystatus":
		return srv.mergeCounts(ctx, "prioritystatus", 4)
	case cmd == "workers":
		return srv.workersList()
	case cmd == "show" && len(args) == 2 && strings.EqualFold(args[1], "jobs"):
		return srv.showJobs(ctx, s.ident.User)
	case cmd == "show" && len(args) == 3 && strings.EqualFold(args[1], "unique") && strings.EqualFold(args[2], "jobs"):
		return srv.concatLists(ctx, "show unique jobs")
	case cmd == "cancel" && len(args) == 3 && strings.EqualFold(args[1], "job"):
		i, bh, ok := srv.codec().Decode(s.ident.User, []byte(args[2]))
		if !ok || bytes.ContainsAny(bh, " \r\n") {
			return []byte("ERR UNKNOWN_JOB\r\n")
		}
		reply, err := srv.pools()[i].b.Admin(ctx, "cancel job "+string(bh), false)
		if err != nil {
			return protocol.AppendTextError(nil, "UNKNOWN_JOB", err.Error())
		}
		return reply
	case cmd == "maxqueue" || cmd == "create" || cmd == "drop":
		return srv.toAll(ctx, strings.Join(args, " "))
	case cmd == "shutdown":
		return protocol.AppendTextError(nil, "PERMISSION_DENIED", "shutdown is not forwarded to backends")
	}
	// Anything else (verbose, unknown commands): the first healthy
	// backend's answer, so that replies match gearmand's own.
	for i, p := range srv.pools() {
		if srv.upSet().Has(i) {
			reply, err := p.b.Admin(ctx, strings.Join(args, " "), false)
			if err == nil {
				return reply
			}
		}
	}
	return protocol.AppendTextError(nil, "NO_BACKEND", "no backend is up")
}

// ask runs an admin command on every healthy backend at once.
func (srv *Server) ask(ctx context.Context, line string, list bool) [][]byte {
	pools := srv.pools()
	replies := make([][]byte, len(pools))
	var wg sync.WaitGroup
	up := srv.upSet()
	for i, p := range pools {
		if !up.Has(i) {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := p.b.Admin(ctx, line, list)
			if err != nil {
				srv.log.Warn("admin command", "backend", p.b.Name(), "command", line, "err", err)
				return
			}
			replies[i] = r
		}()
	}
	wg.Wait()
	return replies
}

// listLines returns the lines of a list reply without the final ".".
func listLines(reply []byte) [][]byte {
	if bytes.HasPrefix(reply, []byte("ERR ")) {
		return nil
	}
	var lines [][]byte
	for _, l := range bytes.Split(reply, []byte("\n")) {
		l = bytes.TrimSuffix(l, []byte("\r"))
		if len(l) == 0 || string(l) == "." {
			continue
		}
		lines = append(lines, l)
	}
	return lines
}

// mergeCounts merges status (3 counts) or prioritystatus (4 counts): job
// counts add up over backends; the last column, workers, is the largest
// seen, because every worker session registers on every backend.
func (srv *Server) mergeCounts(ctx context.Context, cmd string, counts int) []byte {
	type row struct{ n []int64 }
	rows := map[string]*row{}
	for _, reply := range srv.ask(ctx, cmd, true) {
		for _, l := range listLines(reply) {
			f := strings.Split(string(l), "\t")
			if len(f) != counts+1 {
				continue
			}
			r := rows[f[0]]
			if r == nil {
				r = &row{n: make([]int64, counts)}
				rows[f[0]] = r
			}
			for k := 1; k <= counts; k++ {
				v, _ := strconv.ParseInt(f[k], 10, 64)
				if k == counts {
					r.n[k-1] = max(r.n[k-1], v)
				} else {
					r.n[k-1] += v
				}
			}
		}
	}
	names := make([]string, 0, len(rows))
	for n := range rows {
		names = append(names, n)
	}
	sort.Strings(names)
	var out []byte
	for _, n := range names {
		out = append(out, n...)
		for _, v := range rows[n].n {
			out = append(out, '\t')
			out = strconv.AppendInt(out, v, 10)
		}
		out = append(out, '\n')
	}
	return append(out, protocol.TextListEnd...)
}

// showJobs lists every backend's jobs with the handles clients know.
func (srv *Server) showJobs(ctx context.Context, user string) []byte {
	var out []byte
	for i, reply := range srv.ask(ctx, "show jobs", true) {
		for _, l := range listLines(reply) {
			h, rest, _ := bytes.Cut(l, []byte("\t"))
			out = srv.codec().Encode(out, user, i, h)
			out = append(out, '\t')
			out = append(out, rest...)
			out = append(out, '\n')
		}
	}
	return append(out, protocol.TextListEnd...)
}

func (srv *Server) concatLists(ctx context.Context, cmd string) []byte {
	var out []byte
	for _, reply := range srv.ask(ctx, cmd, true) {
		for _, l := range listLines(reply) {
			out = append(out, l...)
			out = append(out, '\n')
		}
	}
	return append(out, protocol.TextListEnd...)
}

// toAll applies a command that changes state (maxqueue, create function,
// drop function) to every healthy backend; the first error wins.
//
// A function exists only on the backends its jobs or workers reached, so
// "not found" from some backends is no error when another one had it.
func (srv *Server) toAll(ctx context.Context, line string) []byte {
	var ok, notFound []byte
	for _, r := range srv.ask(ctx, line, false) {
		switch {
		case r == nil:
		case bytes.HasPrefix(r, []byte("OK")):
			if ok == nil {
				ok = r
			}
		case bytes.Contains(bytes.ToLower(r), []byte("not found")) || bytes.Contains(bytes.ToLower(r), []byte("not+found")):
			if notFound == nil {
				notFound = r
			}
		default:
			return r
		}
	}
	switch {
	case ok != nil:
		return ok
	case notFound != nil:
		return notFound
	}
	return protocol.AppendTextError(nil, "NO_BACKEND", "no backend is up")
}

// workersList is gearmand's `workers` for the proxy's own sessions: the
// backends only see the proxy's links, while the proxy knows each peer's
// address, client ID (SET_CLIENT_ID) and abilities.
func (srv *Server) workersList() []byte {
	type line struct {
		id   uint64
		text string
	}
	var lines []line
	srv.each(func(s *session) {
		host, _, err := net.SplitHostPort(s.remote)
		if err != nil {
			host = s.remote
		}
		s.mu.Lock()
		id := s.clientID
		if id == "" {
			id = "-"
		}
		var b strings.Builder
		fmt.Fprintf(&b, "%d %s %s :", s.id, host, id)
		if w := s.worker; w != nil {
			// Newest registration first, as gearmand lists them.
			for k := len(w.abilities) - 1; k >= 0; k-- {
				b.WriteByte(' ')
				b.Write(w.abilities[k].fn)
			}
		}
		s.mu.Unlock()
		lines = append(lines, line{s.id, b.String()})
	})
	sort.Slice(lines, func(i, j int) bool { return lines[i].id < lines[j].id })
	var out []byte
	for _, l := range lines {
		out = append(out, l.text...)
		out = append(out, '\n')
	}
	return append(out, protocol.TextListEnd...)
}
