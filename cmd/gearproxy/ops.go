package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/gearproxy/gearproxy/admin"
	"github.com/gearproxy/gearproxy/auth"
	"github.com/gearproxy/gearproxy/backend"
	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/config"
	"github.com/gearproxy/gearproxy/proxy"
	"github.com/gearproxy/gearproxy/schedule"
)

// operations is what `gearproxy run` adds around the proxy for issue 7:
// the admin HTTP listener and its metrics, schedules, the graceful drain on
// SIGTERM and the reload of schedules and admin logins on SIGHUP. One per
// process.
type operations struct {
	log *slog.Logger
	sec *security
	// metrics and adminTLS are nil when the admin listener is off
	// (adminTLS also when it speaks plain HTTP).
	metrics  *admin.Metrics
	adminTLS *auth.TLSServer
	admin    *admin.Server
	logins   atomic.Pointer[adminLogins]
	// signals receives SIGINT and SIGTERM from startup on, so that the
	// second one, during the drain, is seen.
	signals chan os.Signal
	srv     *proxy.Server
	running *config.Config // what the process started with, for reload diffs

	mu    sync.Mutex
	sched *runningSchedules
	// cmu guards clients on its own: a submission in progress takes it
	// while stopSchedules, under mu, waits for that submission.
	cmu     sync.Mutex
	clients map[string]*scheduleClient // by schedule user ("" = built-in)
}

// scheduleUser is the identity of schedules that name no user: trusted,
// since the configuration file is.
const scheduleUser = "schedule"

// adminLogins is who may log in to the admin listener, rebuilt on SIGHUP.
type adminLogins struct {
	on        bool
	verifiers map[string]auth.Verifier
	allowed   map[string]bool // empty: superusers
	dummy     auth.Verifier
}

func newOperations(ctx context.Context, cfg *config.Config, log *slog.Logger, sec *security) (*operations, error) {
	o := &operations{log: log, sec: sec, running: cfg, signals: make(chan os.Signal, 2), clients: map[string]*scheduleClient{}}
	signal.Notify(o.signals, syscall.SIGINT, syscall.SIGTERM)
	if !cfg.Admin.AdminEnabled() {
		return o, nil
	}
	o.metrics = admin.NewMetrics(admin.MetricsOptions{Version: version, MaxFunctions: cfg.Admin.MaxFunctionLabels})
	if cfg.Admin.TLSCert != "" {
		ts, err := auth.NewTLSServer(auth.TLSConfig{Cert: cfg.Admin.TLSCert, Key: cfg.Admin.TLSKey}, log.With("listener", "admin"))
		if err != nil {
			signal.Stop(o.signals)
			return nil, fmt.Errorf("admin: %w", err)
		}
		go ts.Watch(ctx, certPollInterval)
		o.adminTLS = ts
	}
	l, err := newAdminLogins(cfg)
	if err != nil {
		signal.Stop(o.signals)
		return nil, err
	}
	o.logins.Store(l)
	return o, nil
}

func newAdminLogins(cfg *config.Config) (*adminLogins, error) {
	l := &adminLogins{on: cfg.Admin.Auth, verifiers: map[string]auth.Verifier{}, allowed: map[string]bool{}}
	if !l.on {
		return l, nil
	}
	var err error
	// Unknown names cost the same PBKDF2 as known ones.
	if l.dummy, err = auth.NewVerifier("not a password", 4096); err != nil {
		return nil, err
	}
	for _, u := range cfg.Users {
		if u.Password == "" {
			continue
		}
		v, err := auth.ParseVerifier(u.Password)
		if err != nil {
			return nil, fmt.Errorf("admin: user %s: %w", u.Name, err)
		}
		l.verifiers[u.Name] = v
	}
	for _, n := range cfg.Admin.Users {
		l.allowed[n] = true
	}
	return l, nil
}

// observer is what the proxy reports to: nil (no metrics) without an admin
// listener.
func (o *operations) observer() proxy.Observer {
	if o.metrics == nil {
		return nil
	}
	return o.metrics
}

// authenticate checks admin basic-auth credentials against the user store
// (the admin server counts and logs the failures).
func (o *operations) authenticate(name, password string) bool {
	l := o.logins.Load()
	u, ok := o.sec.users.Users().Lookup(name)
	v, hasPassword := l.verifiers[name]
	allowed := ok && hasPassword && !u.Disabled && (l.allowed[name] || len(l.allowed) == 0 && u.Superuser)
	if !allowed {
		l.dummy.CheckPassword(password)
		return false
	}
	return v.CheckPassword(password)
}

// start serves the admin listener and runs the schedules, once the proxy
// listens. A busy admin port is logged, not fatal: the job traffic matters
// more than its dashboard.
func (o *operations) start(srv *proxy.Server, cfg *config.Config) error {
	o.srv = srv
	if cfg.Admin.AdminEnabled() {
		opts := admin.Options{
			Address: cfg.Admin.Address, Source: admin.SourceFunc(o.snapshot), Metrics: o.metrics,
			Version: version, Refresh: cfg.Admin.Refresh.Duration, Logger: o.log.With("component", "admin"),
		}
		if o.adminTLS != nil {
			opts.TLS = o.adminTLS.Config()
		}
		if cfg.Admin.Auth {
			opts.Authenticate = o.authenticate
		}
		a, err := admin.New(opts)
		if err != nil {
			return err
		}
		// admin logs the address it listens on.
		if _, err := a.Start(); err != nil {
			o.log.Error("admin listener not started: no metrics, health or status page", "addr", cfg.Admin.Address, "err", err)
		} else {
			o.admin = a
		}
	}
	sch, err := o.newScheduler(cfg)
	if err != nil {
		return err
	}
	o.mu.Lock()
	o.runSchedules(sch)
	o.mu.Unlock()
	return nil
}

// snapshot is the admin Source: the proxy's status and the schedules.
func (o *operations) snapshot(ctx context.Context) (admin.Status, error) {
	st, err := o.srv.Snapshot(ctx)
	if err != nil {
		return st, err
	}
	o.mu.Lock()
	rs := o.sched
	o.mu.Unlock()
	if rs != nil {
		for _, x := range rs.s.States() {
			st.Schedules = append(st.Schedules, admin.ScheduleStatus{Name: x.Name, Cron: x.Cron, Function: x.Function,
				Next: x.Next, Last: x.Last, LastError: x.LastError})
		}
	}
	return st, nil
}

// runningSchedules is a Scheduler and how to stop it.
type runningSchedules struct {
	s      *schedule.Scheduler
	cancel context.CancelFunc
	done   chan struct{}
}

// newScheduler builds the schedules of cfg (nil when there are none).
// Jobs go through the proxy's own submit path: a session on an in-memory
// connection, as the schedule's user. That reuses routing, namespaces,
// ACLs and metrics exactly as a client gets them, with no port and no
// password to configure.
func (o *operations) newScheduler(cfg *config.Config) (*schedule.Scheduler, error) {
	if len(cfg.Schedules) == 0 {
		return nil, nil
	}
	users := map[string]string{}
	var scheds []schedule.Schedule
	for _, c := range cfg.Schedules {
		prio, err := schedule.ParsePriority(c.Priority)
		if err != nil {
			return nil, fmt.Errorf("schedule %s: %w", c.Name, err)
		}
		loc, err := c.Location()
		if err != nil {
			return nil, fmt.Errorf("schedule %s: %w", c.Name, err)
		}
		users[c.Name] = c.User
		scheds = append(scheds, schedule.Schedule{Name: c.Name, Cron: c.Cron, Function: c.Function,
			Payload: []byte(c.Payload), Priority: prio, Location: loc})
	}
	sub := schedule.SubmitterFunc(func(ctx context.Context, j schedule.Job) error {
		return o.submit(ctx, users[j.Schedule], j)
	})
	return schedule.New(scheds, sub, schedule.Options{Logger: o.log.With("component", "schedule")})
}

// runSchedules starts sch (under o.mu).
func (o *operations) runSchedules(sch *schedule.Scheduler) {
	if sch == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	rs := &runningSchedules{s: sch, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(rs.done)
		sch.Run(ctx)
	}()
	o.sched = rs
}

// stopSchedules stops the running schedules and waits for a submission in
// progress (under o.mu).
func (o *operations) stopSchedules() {
	if rs := o.sched; rs != nil {
		rs.cancel()
		<-rs.done
		o.sched = nil
	}
}

// scheduleClient is a client session of the proxy on an in-memory
// connection, acting as one user.
type scheduleClient struct {
	ln *pipeListener
	c  *client.Client
}

func (o *operations) submit(ctx context.Context, user string, j schedule.Job) error {
	c, err := o.scheduleClient(ctx, user)
	if err != nil {
		return err
	}
	prio := map[schedule.Priority]client.Priority{schedule.Normal: client.Normal, schedule.High: client.High, schedule.Low: client.Low}[j.Priority]
	t, err := c.Submit(ctx, client.Job{Function: j.Function, Unique: j.Unique, Data: j.Data, Priority: prio, Background: true}, nil)
	if err != nil {
		return err
	}
	// JOB_CREATED, or the ERROR that refused the job (the Scheduler
	// retries).
	_, err = t.Wait(ctx)
	return err
}

func (o *operations) scheduleClient(ctx context.Context, user string) (*client.Client, error) {
	o.cmu.Lock()
	defer o.cmu.Unlock()
	if sc := o.clients[user]; sc != nil {
		return sc.c, nil
	}
	ln := newPipeListener()
	var a proxy.Authenticator = proxy.FixedUser{User: scheduleUser, Superuser: true}
	if user != "" {
		// Through the gate, so that the user's namespace and ACL apply
		// and a reload that disables the user reaches this session.
		a = &proxy.Gate{Name: "schedule", FixedUser: user, Users: o.sec.users, Conns: o.sec.conns, Audit: o.sec.audit, Live: o.sec.live}
	}
	go o.srv.Serve(ln, proxy.Listener{Auth: a, Name: "schedule"})
	c, err := client.Dial(ctx, client.Config{Addr: "schedule:0", ClientID: "gearproxy-schedule",
		Dial: func(ctx context.Context, _, _ string) (net.Conn, error) { return ln.dial(ctx) }})
	if err != nil {
		ln.Close()
		return nil, err
	}
	o.clients[user] = &scheduleClient{ln: ln, c: c}
	return c, nil
}

// closeClients ends the schedules' sessions.
func (o *operations) closeClients() {
	o.cmu.Lock()
	defer o.cmu.Unlock()
	for u, sc := range o.clients {
		sc.c.Close()
		sc.ln.Close()
		delete(o.clients, u)
	}
}

// shutdown drains the proxy: schedules stop first (nothing fires during
// the drain), /readyz says draining, then the proxy finishes the jobs in
// flight for at most timeout, or until a second SIGINT/SIGTERM.
func (o *operations) shutdown(srv *proxy.Server, timeout time.Duration) {
	o.mu.Lock()
	o.stopSchedules()
	o.mu.Unlock()
	if o.admin != nil {
		o.admin.SetDraining(true)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		// The first signal is the one that started the shutdown.
		for n := 0; n < 2; n++ {
			select {
			case <-o.signals:
			case <-ctx.Done():
				return
			}
		}
		o.log.Warn("second signal: stopping at once")
		cancel()
	}()
	o.log.Info("draining: no new connections, submits or grabs; waiting for jobs in flight", "drain_timeout", timeout)
	if err := srv.Drain(ctx); err != nil {
		o.log.Warn("drain", "err", err)
	} else {
		o.log.Info("drained: every job in flight finished")
	}
	o.closeClients()
}

// close releases what newOperations and start took.
func (o *operations) close() {
	signal.Stop(o.signals)
	o.mu.Lock()
	o.stopSchedules()
	o.mu.Unlock()
	o.closeClients()
	if o.admin != nil {
		o.admin.Close()
	}
}

// reload applies what a changed file may change live, after the security
// reload accepted it: schedules, admin logins and certificate. What needs
// a restart is named in a log line and left as it runs.
func (o *operations) reload(file string) {
	cfg, err := config.Load(file)
	if err != nil {
		return // the security reload logged it and kept everything
	}
	run := o.running
	refuse := func(what string) {
		o.log.Error("reload: "+what+" cannot change while running: restart to apply", "file", file)
	}
	if !slices.EqualFunc(cfg.Listeners, run.Listeners, func(a, b config.Listener) bool { return a.Address == b.Address }) {
		refuse("listener addresses")
	}
	if cfg.Admin.Address != run.Admin.Address || cfg.Admin.TLSCert != run.Admin.TLSCert || cfg.Admin.TLSKey != run.Admin.TLSKey {
		refuse("the admin address and certificate paths")
	}
	if !reflect.DeepEqual(cfg.Backends, run.Backends) {
		if err := o.addBackends(cfg.Backends); err != nil {
			o.log.Error("reload: backend list kept: "+err.Error(), "file", file)
		}
	}
	if cfg.Limits.MaxPacketSize != run.Limits.MaxPacketSize || cfg.Limits.HandleCache != run.Limits.HandleCache {
		refuse("[limits] max_packet_size and handle_cache")
	}
	if cfg.Health != run.Health {
		refuse("[health]")
	}
	if l := cfg.Limits; l.MaxConnections != run.Limits.MaxConnections || l.MaxOutput != run.Limits.MaxOutput || l.IdleTimeout != run.Limits.IdleTimeout {
		o.srv.SetLimits(proxy.Limits{MaxConnections: l.MaxConnections, MaxOutput: l.MaxOutput, IdleTimeout: l.IdleTimeout.Duration})
		run.Limits.MaxConnections, run.Limits.MaxOutput, run.Limits.IdleTimeout = l.MaxConnections, l.MaxOutput, l.IdleTimeout
		o.log.Info("reload: limits applied", "max_connections", l.MaxConnections, "max_output", l.MaxOutput, "idle_timeout", l.IdleTimeout.Duration)
	}
	if cfg.Log.Format != run.Log.Format {
		refuse("[log] format")
	}
	if cfg.Log.Level != run.Log.Level {
		if ll, ok := o.log.Handler().(liveLevel); ok {
			ll.level.Set(logLevel(cfg.Log.Level))
			run.Log.Level = cfg.Log.Level
			o.log.Info("reload: log level set", "level", cfg.Log.Level)
		}
	}
	if l, err := newAdminLogins(cfg); err != nil {
		o.log.Error("reload: admin logins kept", "err", err)
	} else if o.metrics != nil {
		o.logins.Store(l)
	}
	if o.adminTLS != nil {
		if err := o.adminTLS.Reload(); err != nil {
			o.log.Error("reload: admin certificate kept", "err", err)
		}
	}
	if !reflect.DeepEqual(cfg.Schedules, run.Schedules) {
		sch, err := o.newScheduler(cfg)
		if err != nil {
			o.log.Error("reload: schedules kept", "err", err)
			return
		}
		// A firing at the very moment of the swap may be submitted by
		// both: the same unique coalesces it on its backend.
		o.mu.Lock()
		o.stopSchedules()
		o.runSchedules(sch)
		o.mu.Unlock()
		o.running.Schedules = cfg.Schedules
		o.log.Info("reload: schedules replaced", "schedules", len(cfg.Schedules))
	}
}

// pipeListener hands the proxy in-memory connections (backend.Pipe), for
// the schedules' sessions.
type pipeListener struct {
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), done: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

func (l *pipeListener) dial(ctx context.Context) (net.Conn, error) {
	mine, theirs := backend.Pipe()
	select {
	case l.conns <- theirs:
		return mine, nil
	case <-l.done:
		return nil, net.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "memory" }
func (pipeAddr) String() string  { return "schedule" }

// waitReloads serves SIGHUP until ctx ends: users, ACLs and certificates
// first (all or nothing), then, if those were accepted, the rest.
func (o *operations) waitReloads(ctx context.Context, file string) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-o.sec.hup:
			if err := o.sec.reload(file); err != nil {
				o.sec.log.Error("reload refused: still running the previous configuration", "err", err)
				continue
			}
			o.reload(file)
		}
	}
}

// backendAddress is what the status page shows for a backend.
func backendAddress(b config.Backend) string {
	if b.Bundled {
		return "bundled"
	}
	return b.Address
}

// addBackends applies a backend list that appends job servers at
// addresses to the running one; anything else (removing, renaming,
// reordering, changing, or adding a bundled one, which would need its
// store opened and closed with the process) needs a restart.
func (o *operations) addBackends(next []config.Backend) error {
	run := o.running.Backends
	if len(next) <= len(run) || !reflect.DeepEqual(next[:len(run)], run) {
		return errors.New("only adding backends at the end of the list can happen while running: restart to apply")
	}
	var add []proxy.Backend
	for _, b := range next[len(run):] {
		if b.Bundled {
			return fmt.Errorf("backend %s: adding a bundled backend needs a restart", b.Name)
		}
		add = append(add, proxy.Backend{Name: b.Name, Weight: b.Weight, Links: b.Links, Address: b.Address, Dial: backend.TCPDialer(b.Address)})
	}
	if err := o.srv.AddBackends(add); err != nil {
		return err
	}
	o.running.Backends = next
	o.log.Info("reload: backends added", "added", len(add), "backends", len(next))
	return nil
}

// liveLevel is the process's log handler with the level it filters at,
// which a reload may change; loggers derived with With share the level.
type liveLevel struct {
	slog.Handler
	level *slog.LevelVar
}

// logLevel maps a validated [log] level to slog's.
func logLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}
