package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/gearproxy/gearproxy/admin"
	"github.com/gearproxy/gearproxy/auth"
	"github.com/gearproxy/gearproxy/protocol"
)

// Operations (issue 7): metrics, the admin status snapshot and the
// graceful drain. The proxy calls an Observer at the points where a job
// or a connection changes state; *admin.Metrics is one, and a nil
// Observer costs one interface check.

// Observer is told what the proxy does, for metrics. Function names are as
// sent to the backend (namespaced); backend is Backend.Name. Methods are
// called from session goroutines and must not block.
type Observer interface {
	JobSubmitted(function, user, backend string)
	JobCompleted(function, user, backend string, d time.Duration)
	JobFailed(function, user, backend, reason string, d time.Duration)
	ConnectionOpened(listener string)
	ConnectionClosed(listener string)
	AuthFailure(listener, reason string)
	Denied(user, verb, reason string)
}

var _ Observer = (*admin.Metrics)(nil)

// ops is the operational state of a Server.
type ops struct {
	obs      Observer
	draining atomic.Bool
	// runningJobs counts jobs assigned to this proxy's workers whose
	// final WORK_* has not been sent yet.
	runningJobs atomic.Int64
	// limits, once a reload set them, replace those of Options.
	limits atomic.Pointer[Limits]
}

// metricFn copies a function name for a metric label only when someone
// observes: the hot path does not allocate without metrics.
func (srv *Server) metricFn(fn []byte) string {
	if srv.obs == nil {
		return ""
	}
	return string(fn)
}

// submitted counts a JOB_CREATED a backend gave session s.
func (srv *Server) submitted(fn string, s *session, p *pool) {
	if srv.obs != nil {
		srv.obs.JobSubmitted(fn, s.ident.User, p.b.Name())
	}
}

// backendLost counts a job whose clients get the proxy's own WORK_FAIL
// because its backend went away.
func (srv *Server) backendLost(j *job, p *pool) {
	if srv.obs == nil {
		return
	}
	user := ""
	if len(j.subs) > 0 {
		user = j.subs[0].ident.User
	}
	srv.obs.JobFailed(j.fn, user, p.b.Name(), admin.FailBackendLost, -1)
}

// running is a job a worker session holds: what its metrics need when its
// result comes back.
type running struct {
	fn string
	at time.Time
}

// runKey names a job by the backend that assigned it and its handle there.
type runKey struct {
	backend int
	handle  string
}

// track remembers a job just assigned to the worker (under the session
// lock), until its final WORK_* or the loss of its backend. It is kept
// with or without metrics: the drain waits for these jobs.
func (w *worker) track(i int, p *protocol.Packet) {
	if w.running == nil {
		w.running = map[runKey]running{}
	}
	fn := ""
	if len(p.Args) > 1 {
		// The function as the worker registered it: its name is kept,
		// so no string is made per job.
		for _, a := range w.abilities {
			if string(a.fn) == string(p.Args[1]) {
				fn = a.name
				break
			}
		}
		if fn == "" {
			fn = string(p.Args[1])
		}
	}
	w.running[runKey{i, string(p.Args[0])}] = running{fn: fn, at: time.Now()}
	w.s.srv.runningJobs.Add(1)
}

// result forgets a job whose final WORK_* the worker sends to backend i
// and counts it (under the session lock).
func (w *worker) result(i int, bh []byte, t protocol.Type) {
	if t != protocol.WorkComplete && t != protocol.WorkFail && t != protocol.WorkException {
		return
	}
	k := runKey{i, string(bh)}
	r, ok := w.running[k]
	if !ok {
		return
	}
	delete(w.running, k)
	srv := w.s.srv
	srv.runningJobs.Add(-1)
	if srv.obs == nil {
		return
	}
	d := time.Since(r.at)
	name, user := srv.pools()[i].b.Name(), w.s.ident.User
	switch t {
	case protocol.WorkComplete:
		srv.obs.JobCompleted(r.fn, user, name, d)
	case protocol.WorkFail:
		srv.obs.JobFailed(r.fn, user, name, admin.FailWork, d)
	default:
		srv.obs.JobFailed(r.fn, user, name, admin.FailException, d)
	}
}

// forget drops the jobs of backend i (its link went away) or, with i < 0,
// every job (the session ended); under the session lock.
func (w *worker) forget(i int) {
	for k := range w.running {
		if i < 0 || k.backend == i {
			delete(w.running, k)
			w.s.srv.runningJobs.Add(-1)
		}
	}
}

// observed wraps a session's Access so that denials are counted. It keeps
// the optional interfaces of the auth adapter (visibility, payloadAuditor)
// that tenant.go looks for.
type observed struct {
	Access
	obs  Observer
	user string
}

func (o observed) Allow(v Verb, name []byte) bool {
	if o.Access != nil && o.Access.Allow(v, name) {
		return true
	}
	o.obs.Denied(o.user, v.String(), admin.DenyACL)
	return false
}

func (o observed) Visible(fn []byte) bool {
	if v, ok := o.Access.(visibility); ok {
		return v.Visible(fn)
	}
	return o.Access != nil && (o.Access.Allow(Submit, fn) || o.Access.Allow(Work, fn))
}

func (o observed) DeniedPayload(user string, fn []byte) {
	o.obs.Denied(user, Submit.String(), admin.DenyMaxPayload)
	if a, ok := o.Access.(payloadAuditor); ok {
		a.DeniedPayload(user, fn)
	}
}

// observe wraps an identity's Access when metrics are on.
func (srv *Server) observe(id *Identity) {
	if srv.obs != nil && !id.Superuser {
		id.Access = observed{Access: id.Access, obs: srv.obs, user: id.User}
	}
}

// authReason names why authentication failed, as the metric labels it.
func authReason(err error) string {
	var re *tls.RecordHeaderError
	switch {
	case errors.Is(err, ErrTooManyConnections):
		return admin.AuthTooMany
	case errors.Is(err, auth.ErrAuthRequired):
		return admin.AuthRequired
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return admin.AuthTimeout
	case errors.Is(err, auth.ErrTLSHandshake), errors.As(err, &re):
		return admin.AuthTLS
	// A client that gave up after an unoffered mechanism or packets out
	// of order (auth.FailedEnd).
	case errors.Is(err, auth.ErrMechUnsupported):
		return admin.AuthMechUnsupported
	case errors.Is(err, auth.ErrSequence):
		return admin.AuthSequence
	}
	return admin.AuthFailed
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// opened counts and logs a session that starts serving.
func (srv *Server) opened(listener string) {
	if srv.obs != nil {
		srv.obs.ConnectionOpened(listener)
	}
}

func (srv *Server) closedConn(listener string) {
	if srv.obs != nil {
		srv.obs.ConnectionClosed(listener)
	}
}

// authFailed counts a connection that did not authenticate, except a peer
// that hung up before saying anything (port probes and load balancer
// health checks do that all day; the audit log skips them too) and an
// ACME certificate authority validating the listener.
func (srv *Server) authFailed(listener string, err error) {
	if srv.obs != nil && !errors.Is(err, io.EOF) && !errors.Is(err, auth.ErrACMEChallenge) {
		srv.obs.AuthFailure(listener, authReason(err))
	}
}

// Snapshot implements admin.Source: backends with health and round-trip
// time, functions merged over the backends as the admin "status" command
// merges them, and the users with open sessions.
func (srv *Server) Snapshot(ctx context.Context) (admin.Status, error) {
	var st admin.Status
	t := srv.topo.Load()
	for _, p := range t.pools {
		addr := t.backends[p.index].Address
		st.Backends = append(st.Backends, admin.BackendStatus{Name: p.b.Name(), Address: addr, Healthy: p.b.Up(), RTT: p.b.RTT()})
	}
	for _, l := range listLines(srv.mergeCounts(ctx, "status", 3)) {
		f := strings.Split(string(l), "\t")
		if len(f) != 4 {
			continue
		}
		total, _ := strconv.Atoi(f[1])
		run, _ := strconv.Atoi(f[2])
		workers, _ := strconv.Atoi(f[3])
		st.Functions = append(st.Functions, admin.FunctionStatus{Name: f[0], Queued: max(total-run, 0), Running: run, Workers: workers})
	}
	count := map[string]int{}
	srv.each(func(s *session) { count[s.ident.User]++ })
	for u, n := range count {
		st.Users = append(st.Users, admin.UserStatus{Name: u, Connections: n})
	}
	sort.Slice(st.Users, func(a, b int) bool { return st.Users[a].Name < st.Users[b].Name })
	return st, nil
}

// Draining reports whether Drain has begun.
func (srv *Server) Draining() bool { return srv.draining.Load() }

// Drain stops the proxy gracefully: it stops accepting connections,
// refuses new submits, answers workers' grabs with NO_JOB, and waits until
// no client waits for a job or a reply and no worker holds a job, so that
// every running job's result reaches its client. Then, or when ctx ends,
// it closes everything. It returns ctx's error if the drain was cut short.
func (srv *Server) Drain(ctx context.Context) error {
	srv.draining.Store(true)
	srv.mu.Lock()
	for ln := range srv.listeners {
		ln.Close()
	}
	srv.mu.Unlock()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for srv.inFlight() {
		select {
		case <-ctx.Done():
			srv.Close()
			return fmt.Errorf("proxy: drain cut short with jobs in flight: %w", ctx.Err())
		case <-tick.C:
		}
	}
	return srv.Close()
}

// inFlight reports whether a client waits on a job or a reply, or a worker
// holds a job.
func (srv *Server) inFlight() bool {
	if srv.runningJobs.Load() > 0 {
		return true
	}
	busy := false
	srv.each(func(s *session) {
		s.mu.Lock()
		if len(s.replies) > 0 || len(s.jobs) > 0 {
			busy = true
		}
		s.mu.Unlock()
	})
	return busy
}

// refuseDraining answers a request that the proxy no longer takes while it
// drains; true if it did.
func (s *session) refuseDraining(what string) bool {
	if !s.srv.draining.Load() {
		return false
	}
	switch what {
	case "grab":
		s.answer(func(dst []byte) []byte { return protocol.AppendPacket(dst, protocol.Res, protocol.NoJob) })
	default:
		s.answer(func(dst []byte) []byte {
			return protocol.AppendError(dst, "SHUTTING_DOWN", "gearproxy is shutting down: submit to another instance")
		})
	}
	return true
}

// Limits are the server's limits that a reload may change while it runs.
// New sessions get the new MaxOutput; IdleTimeout and MaxConnections apply
// at once to every session and listener.
type Limits struct {
	MaxConnections int
	MaxOutput      int
	IdleTimeout    time.Duration
}

// SetLimits replaces the live limits; zero MaxConnections or MaxOutput
// take the defaults of Options.
func (srv *Server) SetLimits(l Limits) {
	if l.MaxConnections <= 0 {
		l.MaxConnections = 100000
	}
	if l.MaxOutput <= 0 {
		l.MaxOutput = 16 << 20
	}
	srv.limits.Store(&l)
}

// liveLimits returns the limits in force: Options until SetLimits.
func (srv *Server) liveLimits() Limits {
	if l := srv.limits.Load(); l != nil {
		return *l
	}
	return Limits{MaxConnections: srv.opts.MaxConnections, MaxOutput: srv.opts.MaxOutput, IdleTimeout: srv.opts.IdleTimeout}
}
