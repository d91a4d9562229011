package proxy

import (
	"bytes"
	"context"
	"strconv"
	"strings"

	"github.com/gearproxy/gearproxy/protocol"
)

// What a session's user sees of the shared backends: its namespace is
// added to function names and unique IDs on the way in and taken off on
// the way out, its payloads are capped, and admin listings show only what
// it may submit or work on. A superuser without a namespace sees the
// backends as they are and pays for none of this.

// visibility is the part of an Access that filters admin listings without
// auditing every hidden line as a denial (the auth adapter has it).
type visibility interface {
	Visible(fn []byte) bool
}

// payloadAuditor records a submit refused for max_payload.
type payloadAuditor interface {
	DeniedPayload(user string, fn []byte)
}

func isReduce(t protocol.Type) bool {
	return t == protocol.SubmitReduceJob || t == protocol.SubmitReduceJobBackground
}

func argumentTooLarge(text string) func([]byte) []byte {
	return func(dst []byte) []byte { return protocol.AppendError(dst, "ARGUMENT_TOO_LARGE", text) }
}

// saslAfterAuth answers SASL on a session that is already authenticated
// (by its client certificate at the handshake, or by SASL before): the
// identity never changes (sasl-extension.md), and the connection stays.
func (s *session) saslAfterAuth() {
	text := "already authenticated as " + s.ident.User
	s.answer(func(dst []byte) []byte { return protocol.AppendError(dst, "AUTH_SEQUENCE", text) })
}

// admitSubmit checks what the function's ACL has not (a reduce job's
// reducer, max_payload) and moves the submit into the user's namespace.
// It returns the packet to forward (tmp when rewritten), or nil when it
// has answered the submit itself, in its reply slot.
func (s *session) admitSubmit(p, tmp *protocol.Packet) *protocol.Packet {
	reduce := isReduce(p.Type)
	if reduce && !s.ident.Allow(Submit, p.Arg(2)) {
		s.answer(permissionDenied(Submit, p.Arg(2)))
		return nil
	}
	if limit := s.ident.MaxPayload; limit > 0 && int64(len(p.Data())) > limit {
		if a, ok := s.ident.Access.(payloadAuditor); ok {
			a.DeniedPayload(s.ident.User, p.Arg(0))
		}
		s.answer(argumentTooLarge("job data of " + strconv.Itoa(len(p.Data())) + " bytes is over the user's max_payload of " + strconv.FormatInt(limit, 10)))
		return nil
	}
	ns := s.ident.Namespace
	if ns == "" {
		return p
	}
	unique, err := ns.AppendUnique(nil, p.Arg(1))
	if err != nil {
		s.answer(argumentTooLarge("Unique value too large"))
		return nil
	}
	*tmp = protocol.Packet{Magic: p.Magic, Type: p.Type, Args: append(tmp.Args[:0], p.Args...)}
	tmp.Args[0] = ns.AppendFunction(nil, p.Arg(0))
	tmp.Args[1] = unique
	if reduce {
		tmp.Args[2] = ns.AppendFunction(nil, p.Arg(2))
	}
	return tmp
}

// inAbility moves a CAN_DO, CAN_DO_TIMEOUT or CANT_DO into the namespace.
func (s *session) inAbility(p, tmp *protocol.Packet) *protocol.Packet {
	ns := s.ident.Namespace
	if ns == "" || len(p.Args) == 0 {
		return p
	}
	*tmp = protocol.Packet{Magic: p.Magic, Type: p.Type, Args: append(tmp.Args[:0], p.Args...)}
	tmp.Args[0] = ns.AppendFunction(nil, p.Arg(0))
	return tmp
}

// outAssign takes the namespace off a JOB_ASSIGN*'s function, unique and
// reducer, in place (the names only get shorter).
func (s *session) outAssign(t protocol.Type, args [][]byte) {
	ns := s.ident.Namespace
	if ns == "" || len(args) < 2 {
		return
	}
	args[1], _ = ns.StripFunction(args[1])
	if t == protocol.JobAssignUniq || t == protocol.JobAssignAll {
		args[2] = ns.StripUnique(args[2])
	}
	if t == protocol.JobAssignAll && len(args) > 3 {
		args[3], _ = ns.StripFunction(args[3])
	}
}

// statusUnique is the unique a GET_STATUS_UNIQUE asks the backends about;
// ok is false when the session must answer "unknown" itself: a tenant's
// empty or "-" unique is not in its namespace, so it could only find
// another tenant's job.
func (s *session) statusUnique(unique []byte) (asked []byte, ok bool) {
	ns := s.ident.Namespace
	if ns == "" {
		return unique, true
	}
	if len(unique) == 0 || string(unique) == "-" {
		return nil, false
	}
	asked, err := ns.AppendUnique(nil, unique)
	return asked, err == nil
}

// tenantAdmin runs an admin command the user may run, as the user sees
// the backends: a function argument must be one it may submit or work and
// goes into its namespace; listings come back filtered.
func (s *session) tenantAdmin(ctx context.Context, cmd string, args []string) []byte {
	i := 0
	switch {
	case cmd == "maxqueue":
		i = 1
	case (cmd == "create" || cmd == "drop") && len(args) > 1 && strings.EqualFold(args[1], "function"):
		i = 2
	}
	if i > 0 && i < len(args) {
		if !s.sees([]byte(args[i])) {
			return protocol.AppendTextError(nil, "PERMISSION_DENIED", "function "+args[i]+" is not yours")
		}
		if ns := string(s.ident.Namespace); ns != "" {
			args = append([]string(nil), args...)
			args[i] = ns + args[i]
		}
	}
	return s.filterAdmin(cmd, args, s.srv.adminReply(ctx, s, cmd, args))
}

// sees reports whether the user may see a function (named as the user
// names it): one it may submit or work on.
func (s *session) sees(name []byte) bool {
	if s.ident.Superuser {
		return true
	}
	if v, ok := s.ident.Access.(visibility); ok {
		return v.Visible(name)
	}
	return s.ident.Allow(Submit, name) || s.ident.Allow(Work, name)
}

// visible reports whether an admin listing shows a backend function to
// this user, and under which name.
func (s *session) visible(fn []byte) ([]byte, bool) {
	name, ok := s.ident.Namespace.StripFunction(fn)
	if !ok {
		return nil, false
	}
	return name, s.sees(name)
}

// filterAdmin cuts an admin reply down to what the user may see: status
// and prioritystatus rows and workers' functions it may submit or work,
// its own jobs in show jobs, its own uniques in show unique jobs.
func (s *session) filterAdmin(cmd string, args []string, out []byte) []byte {
	if s.ident.Superuser || bytes.HasPrefix(out, []byte("ERR ")) {
		return out
	}
	switch {
	case cmd == "status" || cmd == "prioritystatus":
		return s.filterLines(out, func(l []byte) []byte {
			fn, rest, _ := bytes.Cut(l, []byte("\t"))
			name, ok := s.visible(fn)
			if !ok {
				return nil
			}
			return append(append(append([]byte(nil), name...), '\t'), rest...)
		})
	case cmd == "workers":
		return s.filterLines(out, func(l []byte) []byte {
			head, fns, _ := bytes.Cut(l, []byte(" :"))
			kept := append(append([]byte(nil), head...), " :"...)
			n := 0
			for _, fn := range bytes.Fields(fns) {
				if name, ok := s.visible(fn); ok {
					kept = append(append(kept, ' '), name...)
					n++
				}
			}
			if n == 0 {
				return nil
			}
			return kept
		})
	case cmd == "show" && len(args) == 2:
		running := s.srv.runningFunctions()
		return s.filterLines(out, func(l []byte) []byte {
			h, _, _ := bytes.Cut(l, []byte("\t"))
			if s.ownJob(h, running) {
				return l
			}
			return nil
		})
	case cmd == "show" && len(args) == 3:
		ns := s.ident.Namespace
		return s.filterLines(out, func(l []byte) []byte {
			if ns == "" || !bytes.HasPrefix(l, []byte(ns)) {
				// Without a namespace nothing says whose a unique
				// is: a non-superuser sees none.
				return nil
			}
			return ns.StripUnique(l)
		})
	}
	return out
}

// ownJob reports whether a client handle in show jobs names a job, queued
// or running (running: runningFunctions), of a function this user may see.
func (s *session) ownJob(h []byte, running map[runKey]string) bool {
	i, bh, ok := s.srv.codec().Decode(s.ident.User, h)
	if !ok {
		return false
	}
	q := &s.srv.pools()[i].queue
	q.mu.Lock()
	j := q.byHandle[string(bh)]
	fn := ""
	if j != nil {
		fn = j.fn
	}
	q.mu.Unlock()
	if fn == "" {
		fn = running[runKey{i, string(bh)}]
	}
	if fn == "" {
		return false
	}
	_, ok = s.visible([]byte(fn))
	return ok
}

// runningFunctions maps every job a worker of this proxy runs to its
// function, for show jobs.
func (srv *Server) runningFunctions() map[runKey]string {
	m := map[runKey]string{}
	srv.each(func(s *session) {
		s.mu.Lock()
		if w := s.worker; w != nil {
			for k, r := range w.running {
				m[k] = r.fn
			}
		}
		s.mu.Unlock()
	})
	return m
}

// filterLines rewrites each line of an admin list reply (nil drops it).
func (s *session) filterLines(reply []byte, keep func([]byte) []byte) []byte {
	var out []byte
	for _, l := range listLines(reply) {
		if k := keep(l); k != nil {
			out = append(append(out, k...), '\n')
		}
	}
	return append(out, protocol.TextListEnd...)
}
