package test

import (
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// The differential suite: one table of scenarios (diff_*_test.go), each run
// against every Target and expected to give the same transcript, except
// where gearproxy deliberately does better than gearmand; those scenarios
// say so with gearproxyWants and why.
//
// Run it:
//
//	go test -race -run TestDiff ./test/                  # gearmand and gearproxy server
//	go test -run 'TestDiff/raw_' ./test/                 # the raw-packet scenarios only
//	DIFF_TARGETS=gearmand DIFF_PRINT=1 go test -run TestDiff/php_do ./test/
//
// DIFF_TARGETS picks the servers (gearmand, gearproxy; both by default) and
// DIFF_PRINT=1 logs every transcript, the way to write a new want: run it
// against gearmand, check the transcript against gearman-reference.md, and
// paste it. GEARPROXY_BIN runs a prebuilt binary instead of building one.
// DIFF_RUN_KNOWN=1 runs the gearproxy side of knownDiff scenarios too, and
// DIFF_SLOW=1 the scenarios that wait for the next minute.

// Flavor says which expectations a target is held to.
type Flavor int

const (
	// FlavorGearmand targets behave exactly like gearmand 1.1.20, bugs
	// included.
	FlavorGearmand Flavor = iota
	// FlavorGearproxy targets are gearproxy's own job server (standalone
	// or behind the proxy): gearmand's behaviour except the deliberate
	// differences listed in README.
	FlavorGearproxy
)

func (f Flavor) String() string {
	if f == FlavorGearproxy {
		return "gearproxy"
	}
	return "gearmand"
}

// Target is one server (or proxy) the scenarios run against. Scenarios of
// one target share it, each with its own function names, and run in
// parallel.
type Target struct {
	Name   string
	Addr   string
	Flavor Flavor
	// Pid is the process id `getpid` should report; 0 skips that check.
	Pid int

	// Optional hooks.

	// Skip returns a reason to skip a scenario on this target, or "".
	Skip func(scenario string) string
	// Fresh starts a private instance with the given options for the
	// scenarios that need server flags; nil skips those scenarios.
	Fresh func(t testing.TB, o ServerOptions) Target
	// Normalize rewrites a transcript line before it is compared (after
	// the standard normalisation of handles, pids and versions).
	Normalize func(line string) string
}

// ServerOptions are the server settings a scenario may need a private
// instance for.
type ServerOptions struct {
	// JobRetries is gearmand's --job-retries and gearproxy's -job-retries.
	JobRetries int
}

// gearmandTarget starts gearmand and describes it as a target.
func gearmandTarget(t testing.TB, o ServerOptions) Target {
	var extra []string
	if o.JobRetries > 0 {
		extra = append(extra, fmt.Sprintf("--job-retries=%d", o.JobRetries))
	}
	s := startGearmand(t, extra...)
	return Target{Name: "gearmand", Addr: s.Addr, Flavor: FlavorGearmand, Pid: s.Pid, Fresh: gearmandTarget}
}

// gearproxyTarget starts `gearproxy server` and describes it as a target.
func gearproxyTarget(t testing.TB, o ServerOptions) Target {
	var extra []string
	if o.JobRetries > 0 {
		extra = append(extra, "-job-retries", fmt.Sprint(o.JobRetries))
	}
	s := startGearproxyServer(t, extra...)
	return Target{Name: "gearproxy", Addr: s.Addr, Flavor: FlavorGearproxy, Pid: s.Pid, Fresh: gearproxyTarget}
}

// TestDiff runs the scenario table against gearmand and `gearproxy
// server`. DIFF_TARGETS=gearmand (or gearproxy) runs it against one only.
func TestDiff(t *testing.T) {
	var targets []Target
	for _, name := range strings.Split(envOr("DIFF_TARGETS", "gearmand,gearproxy"), ",") {
		switch name {
		case "gearmand":
			if err := peerMissing("gearmand"); err != nil && !inCI() {
				// Still hold gearproxy to the table.
				t.Logf("gearmand missing, running against gearproxy only: %v", err)
				continue
			}
			targets = append(targets, gearmandTarget(t, ServerOptions{}))
		case "gearproxy":
			targets = append(targets, gearproxyTarget(t, ServerOptions{}))
		default:
			t.Fatalf("DIFF_TARGETS: unknown target %q", name)
		}
	}
	runDifferential(t, targets...)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// scenario is one row of the table. run drives peers against e.Target and
// records what a user sees with e.Logf or the recording helpers; the
// transcript must equal want, line for line, where "{any}" in a want line
// matches any text.
type scenario struct {
	name  string
	needs []string // peers, see requirePeer
	run   func(e *env)
	want  string

	// gearproxyWants replaces want on FlavorGearproxy targets: a
	// deliberate difference from gearmand, explained by why.
	gearproxyWants string
	why            string

	// knownDiff names an entry of /tmp/gearproxy-notes/jobserver-diffs.md
	// that is not fixed yet: the scenario is skipped on gearproxy targets.
	knownDiff string

	// slow scenarios wait for the wall clock (up to a minute) and run
	// only with DIFF_SLOW=1, to keep the package within its time budget.
	slow bool
}

var (
	tableMu sync.Mutex
	table   []scenario
)

// addScenarios registers rows of the table; each diff_*_test.go file calls
// it from an init function.
func addScenarios(s ...scenario) {
	tableMu.Lock()
	defer tableMu.Unlock()
	table = append(table, s...)
}

func scenarios() []scenario {
	tableMu.Lock()
	defer tableMu.Unlock()
	out := append([]scenario(nil), table...)
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// runDifferential runs every scenario against every target, all in
// parallel. Subtests are named scenario/target, so -run TestX/raw_ selects
// scenarios.
func runDifferential(t *testing.T, targets ...Target) {
	seen := map[string]bool{}
	for _, sc := range scenarios() {
		if seen[sc.name] {
			t.Fatalf("duplicate scenario %q", sc.name)
		}
		seen[sc.name] = true
		t.Run(sc.name, func(t *testing.T) {
			t.Parallel()
			for _, tg := range targets {
				t.Run(tg.Name, func(t *testing.T) {
					t.Parallel()
					sc.runOn(t, tg)
				})
			}
		})
	}
}

func (sc scenario) runOn(t *testing.T, tg Target) {
	if sc.slow && os.Getenv("DIFF_SLOW") == "" {
		t.Skip("waits for the clock; set DIFF_SLOW=1 to run it")
	}
	requirePeer(t, sc.needs...)
	if tg.Skip != nil {
		if why := tg.Skip(sc.name); why != "" {
			t.Skip(why)
		}
	}
	want := sc.want
	if tg.Flavor == FlavorGearproxy {
		if sc.knownDiff != "" && os.Getenv("DIFF_RUN_KNOWN") == "" {
			t.Skipf("known difference from gearmand, not fixed yet: %s", sc.knownDiff)
		}
		if sc.gearproxyWants != "" {
			want = sc.gearproxyWants
		}
	}
	e := &env{T: t, Target: tg, prefix: sc.name + ".", nz: newNormalizer()}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("transcript so far:\n%s", e.transcript())
		}
	})
	sc.run(e)
	got := e.transcript()
	if os.Getenv("DIFF_PRINT") != "" {
		t.Logf("transcript:\n%s", got)
	}
	if !matchTranscript(want, got) {
		t.Errorf("%s on %s:\n--- got\n%s\n--- want\n%s%s", sc.name, tg.Name, got, strings.TrimSpace(want), sc.whyNote(tg))
	}
}

func (sc scenario) whyNote(tg Target) string {
	if sc.why == "" {
		return ""
	}
	return fmt.Sprintf("\n(deliberate difference, %s side wants its own result: %s)", tg.Flavor, sc.why)
}

// matchTranscript compares line by line; "{any}" in want matches any text.
func matchTranscript(want, got string) bool {
	wl := strings.Split(strings.TrimSpace(want), "\n")
	gl := strings.Split(strings.TrimSpace(got), "\n")
	if len(wl) != len(gl) {
		return false
	}
	for i := range wl {
		// Trailing spaces are not compared: an editor may strip them
		// from the table.
		w := strings.TrimSpace(wl[i])
		gl[i] = strings.TrimRight(gl[i], " ")
		if !strings.Contains(w, "{any}") {
			if w != gl[i] {
				return false
			}
			continue
		}
		parts := strings.Split(w, "{any}")
		for j := range parts {
			parts[j] = regexp.QuoteMeta(parts[j])
		}
		if !regexp.MustCompile("^" + strings.Join(parts, ".*") + "$").MatchString(gl[i]) {
			return false
		}
	}
	return true
}

// env is what a scenario's run function works with: the testing.T, the
// target, a function-name prefix of its own and the transcript.
type env struct {
	*testing.T
	Target Target
	prefix string
	nz     *normalizer

	mu    sync.Mutex
	lines []string
}

// fn returns a function name private to this scenario.
func (e *env) fn(name string) string { return e.prefix + name }

// Logf appends a line to the transcript, normalised.
func (e *env) Logf(format string, args ...any) {
	line := visible(e.nz.text(fmt.Sprintf(format, args...)))
	// Clients print the server address (Perl's handles carry it).
	line = strings.ReplaceAll(line, e.Target.Addr, "<server>")
	if e.Target.Normalize != nil {
		line = e.Target.Normalize(line)
	}
	e.mu.Lock()
	e.lines = append(e.lines, line)
	e.mu.Unlock()
}

// visible escapes control characters other than tab, so that a stray NUL
// or a binary blob shows in the transcript.
func visible(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 0x20 && c != '\t') || c == 0x7f {
			fmt.Fprintf(&b, "\\x%02x", c)
		} else {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func (e *env) transcript() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.lines, "\n")
}

// fresh returns a private instance of the target started with o, or skips
// the scenario when the target cannot start one.
func (e *env) fresh(o ServerOptions) Target {
	if e.Target.Fresh == nil {
		e.Skip("target cannot start a private instance")
	}
	return e.Target.Fresh(e, o)
}

// conn is a raw connection whose replies go into the transcript, each
// prefixed with the connection's label.
type conn struct {
	*RawConn
	e     *env
	label string
}

// dial opens a raw connection to the target.
func (e *env) dial(label string) *conn {
	return e.dialAddr(label, e.Target.Addr)
}

func (e *env) dialAddr(label, addr string) *conn {
	return &conn{RawConn: dialRaw(e, addr), e: e, label: label}
}

// recv reads one reply and records it.
func (c *conn) recv() Reply {
	c.e.Helper()
	r := c.Recv()
	c.e.Logf("%s: %s", c.label, c.e.nz.reply(r))
	return r
}

// recvN records the next n replies.
func (c *conn) recvN(n int) []Reply {
	c.e.Helper()
	out := make([]Reply, n)
	for i := range out {
		out[i] = c.recv()
	}
	return out
}

// handle reads a JOB_CREATED, records it and returns the real handle.
func (c *conn) handle() string {
	c.e.Helper()
	r := c.recv()
	if r.Type != protocol.JobCreated || len(r.Args) != 1 {
		c.e.Fatalf("%s: expected JOB_CREATED, got %s", c.label, r)
	}
	return r.Args[0]
}

// list reads an admin list reply and records the lines that mention this
// scenario's functions (other scenarios share the server), sorted.
func (c *conn) list() {
	c.e.Helper()
	var keep []string
	for _, l := range c.RecvList() {
		if strings.Contains(l, c.e.prefix) {
			keep = append(keep, c.e.nz.adminLine(l))
		}
	}
	sort.Strings(keep)
	for _, l := range keep {
		c.e.Logf("%s: %s", c.label, l)
	}
	c.e.Logf("%s: .", c.label)
}

// closed waits for the server to close the connection and records what
// came before.
func (c *conn) closed() {
	c.e.Helper()
	for _, r := range c.WaitClosed() {
		c.e.Logf("%s: %s", c.label, c.e.nz.reply(r))
	}
	c.e.Logf("%s: closed", c.label)
}

// quiet records whether nothing arrives within d, or what did.
func (c *conn) quiet(d time.Duration) {
	c.e.Helper()
	r, err := c.Next(d)
	switch err {
	case nil:
		c.e.Logf("%s: %s", c.label, c.e.nz.reply(r))
	case ErrQuiet:
		c.e.Logf("%s: (nothing)", c.label)
	default:
		c.e.Logf("%s: closed", c.label)
	}
}

// normalizer replaces what legitimately differs between servers: job
// handles become H1, H2... in order of appearance; pids, versions and file
// descriptor numbers become placeholders.
type normalizer struct {
	mu      sync.Mutex
	handles map[string]string
	real    map[string]string
}

func newNormalizer() *normalizer {
	return &normalizer{handles: map[string]string{}, real: map[string]string{}}
}

// handle returns the stable name of a real handle.
func (n *normalizer) handle(h string) string {
	if h == "" {
		return ""
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if name, ok := n.handles[h]; ok {
		return name
	}
	name := fmt.Sprintf("H%d", len(n.handles)+1)
	n.handles[h] = name
	n.real[name] = h
	return name
}

// handleArg names the handle in an argument that may carry trailing NULs
// (gearmand's WORK_FAIL) and keeps those NULs visible.
func (n *normalizer) handleArg(a string) string {
	h := strings.TrimRight(a, "\x00")
	return n.handle(h) + a[len(h):]
}

var (
	markedHandle = regexp.MustCompile(`<<([^<>]*)>>`)
	// libgearman's error messages end in the client's pid.
	clientPid = regexp.MustCompile(`pid\(\d+\)`)
)

// text normalises a free-form line: handles printed by scripts as
// <<handle>>, and handles already seen.
func (n *normalizer) text(s string) string {
	s = clientPid.ReplaceAllString(s, "pid(N)")
	s = markedHandle.ReplaceAllStringFunc(s, func(m string) string {
		return n.handle(m[2 : len(m)-2])
	})
	n.mu.Lock()
	known := make([]string, 0, len(n.handles))
	for h := range n.handles {
		known = append(known, h)
	}
	n.mu.Unlock()
	sort.Slice(known, func(i, j int) bool { return len(known[i]) > len(known[j]) })
	for _, h := range known {
		if strings.Contains(s, h) {
			s = strings.ReplaceAll(s, h, n.handles[h])
		}
	}
	return s
}

// handleFirst lists the packet types whose first field is a job handle.
var handleFirst = map[protocol.Type]bool{
	protocol.JobCreated: true, protocol.JobAssign: true, protocol.JobAssignUniq: true,
	protocol.JobAssignAll: true, protocol.WorkStatus: true, protocol.WorkComplete: true,
	protocol.WorkFail: true, protocol.WorkException: true, protocol.WorkData: true,
	protocol.WorkWarning: true, protocol.StatusRes: true,
}

// reply formats a reply for the transcript.
func (n *normalizer) reply(r Reply) string {
	if r.Type == protocol.Text {
		return n.adminLine(r.Line)
	}
	var b strings.Builder
	b.WriteString(r.Type.String())
	for i, a := range r.Args {
		if i == 0 && handleFirst[r.Type] {
			a = n.handleArg(a)
		}
		fmt.Fprintf(&b, " %q", a)
	}
	if r.Magic != protocol.Res {
		fmt.Fprintf(&b, " (magic %s)", r.Magic)
	}
	return b.String()
}

var (
	versionLine = regexp.MustCompile(`^OK \d+\.\d+[^ ]*$`)
	pidLine     = regexp.MustCompile(`^OK \d+$`)
	workersLine = regexp.MustCompile(`^\d+ `)
)

// adminLine normalises an admin text reply line: handles, the version,
// the pid and the fd column of `workers`.
func (n *normalizer) adminLine(l string) string {
	l = strings.TrimSuffix(l, "\r")
	switch {
	case versionLine.MatchString(l):
		return "OK <version>"
	case pidLine.MatchString(l):
		return "OK <pid>"
	case workersLine.MatchString(l) && strings.Contains(l, " : "):
		l = "<fd>" + l[strings.IndexByte(l, ' '):]
	}
	if f := strings.SplitN(l, "\t", 2); len(f) == 2 && strings.Count(l, "\t") == 3 && looksLikeHandle(f[0]) {
		// A `show jobs` line starts with a handle.
		l = n.handle(f[0]) + "\t" + f[1]
	}
	return n.text(l)
}

// looksLikeHandle accepts gearmand's H:host:N and gearproxy's prefix:N.
func looksLikeHandle(s string) bool {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 || i == len(s)-1 {
		return false
	}
	for _, r := range s[i+1:] {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}
