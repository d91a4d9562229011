package test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	P "github.com/gearproxy/gearproxy/protocol"
)

// Scenarios driven by the gearman and gearadmin command-line tools.

// hostPort splits the target address for the CLIs' -h and -p flags.
func (e *env) hostPort() []string {
	host, port, err := net.SplitHostPort(e.Target.Addr)
	if err != nil {
		e.Fatal(err)
	}
	return []string{"-h", host, "-p", port}
}

// gearman runs the gearman CLI to completion with stdin (may be "").
func (e *env) gearman(stdin string, args ...string) ToolResult {
	e.Helper()
	return runTool(e, toolTimeout, strings.NewReader(stdin), "gearman", append(e.hostPort(), args...)...)
}

// gearmanWorker starts `gearman -w` in the background.
func (e *env) gearmanWorker(args ...string) *Proc {
	e.Helper()
	return startTool(e, nil, "gearman", append(append(e.hostPort(), "-w"), args...)...)
}

// gearadmin runs gearadmin with one action.
func (e *env) gearadmin(args ...string) ToolResult {
	e.Helper()
	return runTool(e, toolTimeout, nil, "gearadmin", append(e.hostPort(), args...)...)
}

var taskCreated = regexp.MustCompile(`Task created: (\S+)`)

// markHandles marks the handles the gearman CLI prints so that the
// normalizer names them.
func markHandles(r ToolResult) ToolResult {
	r.Stdout = taskCreated.ReplaceAllString(r.Stdout, "Task created: <<$1>>")
	return r
}

// adminList records the lines of a gearadmin list that belong to this
// scenario: lines naming its functions or uniques, and `show jobs` lines of
// handles it has seen. Lines are sorted: gearmand lists in hash order.
func (e *env) adminList(label string, r ToolResult) {
	e.Helper()
	var keep []string
	for _, l := range splitLines(r.Stdout) {
		f := strings.Split(l, "\t")
		switch {
		case strings.Contains(l, e.prefix):
			keep = append(keep, e.nz.adminLine(l))
		case len(f) == 4 && e.nz.known(f[0]):
			keep = append(keep, e.nz.adminLine(l))
		}
	}
	sort.Strings(keep)
	for _, l := range keep {
		e.Logf("%s: %s", label, l)
	}
	if r.Exit != 0 || r.TimedOut || r.Stderr != "" {
		e.Logf("%s: exit %d timed out %v stderr %q", label, r.Exit, r.TimedOut, r.Stderr)
	}
}

func init() {
	cli := []string{"gearman"}
	admin := []string{"gearadmin"}
	addScenarios(
		scenario{
			name:  "cli_foreground",
			needs: cli,
			run: func(e *env) {
				f := e.fn("f")
				w := e.gearmanWorker("-f", f, "-c", "3", "--", "tr", "a-z", "A-Z")
				e.logResult("client", e.gearman("", "-f", f, "hello world"), true)
				e.logResult("client", e.gearman("line one\n", "-f", f), true)
				e.logResult("client", e.gearman("", "-u", e.fn("u"), "-I", "-f", f, "high"), true)
				e.logResult("worker", w.Wait(toolTimeout), true)
			},
			want: `
client: HELLO WORLD
client: LINE ONE
client: HIGH`,
		},
		scenario{
			name:  "cli_lines_and_prefix",
			needs: cli,
			run: func(e *env) {
				f := e.fn("f")
				w := e.gearmanWorker("-f", f, "-c", "2", "--", "tr", "a-z", "A-Z")
				e.logResult("client", e.gearman("first\nsecond\n", "-P", "-n", "-f", f), true)
				e.logResult("worker", w.Wait(toolTimeout), true)
				g := e.fn("g")
				w2 := e.gearmanWorker("-n", "-f", g, "-c", "1", "--", "printf", `a\nb\nc\n`)
				e.logResult("client", e.gearman("", "-s", "-f", g), true)
				e.logResult("worker", w2.Wait(toolTimeout), true)
			},
			want: `
client: cli_lines_and_prefix.f: FIRST
client: cli_lines_and_prefix.f: SECOND
client: a
client: a
client: b
client: a
client: b
client: c`,
		},
		scenario{
			name:  "cli_background_priorities",
			needs: cli,
			run: func(e *env) {
				f := e.fn("f")
				e.logResult("client", e.gearman("", "-b", "-L", "-f", f, "low"), true)
				e.logResult("client", e.gearman("", "-b", "-f", f, "-u", e.fn("u"), "normal"), true)
				e.logResult("client", markHandles(e.gearman("", "-v", "-b", "-I", "-f", f, "high")), true)
				// Submitting the same unique again joins the queued job.
				e.logResult("client", e.gearman("", "-b", "-f", f, "-u", e.fn("u"), "normal again"), true)
				e.waitQueued(f, 3)
				out := filepath.Join(e.TempDir(), "order")
				w := e.gearmanWorker("-f", f, "-c", "3", "--", "sh", "-c", "cat >> "+out+"; echo >> "+out)
				e.logResult("worker", w.Wait(toolTimeout), true)
				b, err := os.ReadFile(out)
				if err != nil {
					e.Fatal(err)
				}
				for _, l := range splitLines(string(b)) {
					e.Logf("ran: %s", l)
				}
			},
			want: `
client: Task created: H1
ran: high
ran: normal
ran: low`,
		},
		scenario{
			name:  "cli_unique_64_bytes",
			needs: cli,
			run: func(e *env) {
				f := e.fn("f")
				e.logResult("client", markHandles(e.gearman("", "-v", "-b", "-f", f, "-u", strings.Repeat("u", 64), "x")), true)
				e.logResult("client", markHandles(e.gearman("", "-v", "-b", "-f", f, "-u", strings.Repeat("v", 63), "x")), true)
				w := e.worker("worker", f)
				w.Send(P.GrabJobUniq)
				w.recv()
				w.Send(P.GrabJobUniq)
				w.recv()
			},
			want: `
client: Task created: H1
client: Task created: H2
worker: JOB_ASSIGN_UNIQ "H1" "cli_unique_64_bytes.f" "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu" "x"
worker: JOB_ASSIGN_UNIQ "H2" "cli_unique_64_bytes.f" "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv" "x"`,
		},
		scenario{
			name:  "cli_coalesce_two_clients",
			needs: cli,
			run: func(e *env) {
				f, u := e.fn("f"), e.fn("u")
				c1 := startTool(e, nil, "gearman", append(e.hostPort(), "-f", f, "-u", u, "first")...)
				e.waitClients(u, 1)
				c2 := startTool(e, nil, "gearman", append(e.hostPort(), "-f", f, "-u", u, "second")...)
				e.waitClients(u, 2)
				w := e.gearmanWorker("-f", f, "-c", "1", "--", "tr", "a-z", "A-Z")
				e.logResult("client1", c1.Wait(toolTimeout), true)
				e.logResult("client2", c2.Wait(toolTimeout), true)
				e.logResult("worker", w.Wait(toolTimeout), true)
			},
			want: `
client1: FIRST
client2: FIRST`,
		},
		scenario{
			name:  "cli_work_fail",
			needs: cli,
			run: func(e *env) {
				f := e.fn("f")
				w := e.worker("worker", f)
				c := startTool(e, nil, "gearman", append(e.hostPort(), "-f", f, "x")...)
				w.Send(P.PreSleep)
				w.recv()
				w.Send(P.GrabJob)
				h := w.recv().Args[0]
				w.Send(P.WorkFail, h)
				e.logResult("client", c.Wait(toolTimeout), true)
			},
			want: `
worker: NOOP
worker: JOB_ASSIGN "H1" "cli_work_fail.f" "x"
client stderr: Job failed
client: exit 1`,
		},
		scenario{
			name:  "cli_exception_without_option",
			needs: cli,
			run: func(e *env) {
				f := e.fn("f")
				w := e.worker("worker", f)
				// -t bounds the wait: on gearmand the CLI never sees the
				// end of the job.
				c := startTool(e, nil, "gearman", append(e.hostPort(), "-t", "3000", "-f", f, "x")...)
				w.Send(P.PreSleep)
				w.recv()
				w.Send(P.GrabJob)
				h := w.recv().Args[0]
				w.Send(P.WorkException, h, "boom")
				e.logResult("client", c.Wait(toolTimeout), true)
			},
			want: `
worker: NOOP
worker: JOB_ASSIGN "H1" "cli_exception_without_option.f" "x"
client stderr: gearman: gearman_client_run_tasks : gearman_wait(GEARMAN_TIMEOUT) timeout reached, 1 servers were poll(), no servers were available, pipe:false -> libgearman/universal.cc:346: pid(N)`,
			gearproxyWants: `
worker: NOOP
worker: JOB_ASSIGN "H1" "cli_exception_without_option.f" "x"
client stderr: Job failed
client: exit 1`,
			why: "a client without the exceptions option gets a clean WORK_FAIL; gearmand's stray NUL leaves the gearman CLI waiting until its timeout",
		},
		scenario{
			name:  "admin_lists",
			needs: admin,
			run: func(e *env) {
				f, g := e.fn("f"), e.fn("g")
				c := e.dial("client")
				c.Send(P.SubmitJobBg, f, e.fn("u1"), "1")
				c.handle()
				c.Send(P.SubmitJobHighBg, f, e.fn("u2"), "2")
				c.handle()
				c.Send(P.SubmitJobLowBg, g, e.fn("u3"), "3")
				c.handle()
				w := e.dial("worker")
				w.Send(P.SetClientID, e.fn("worker"))
				w.Send(P.CanDo, f)
				w.Send(P.GrabJob)
				w.recv()
				e.adminList("status", e.gearadmin("--status"))
				e.adminList("priority-status", e.gearadmin("--priority-status"))
				e.adminList("workers", e.gearadmin("--workers"))
				e.adminList("show-unique-jobs", e.gearadmin("--show-unique-jobs"))
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
client: JOB_CREATED "H3"
worker: JOB_ASSIGN "H2" "admin_lists.f" "2"
status: admin_lists.f	2	1	1
status: admin_lists.g	1	0	0
priority-status: admin_lists.f	0	1	0	1
priority-status: admin_lists.g	0	0	1	0
workers: <fd> 127.0.0.1 admin_lists.worker : admin_lists.f
show-unique-jobs: admin_lists.u1
show-unique-jobs: admin_lists.u2
show-unique-jobs: admin_lists.u3`,
		},
		scenario{
			name:  "admin_show_jobs",
			needs: admin,
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJobBg, f, "", "1")
				c.handle()
				c.Send(P.SubmitJobHighBg, f, "", "2")
				c.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				e.adminList("show-jobs", e.gearadmin("--show-jobs"))
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
worker: JOB_ASSIGN "H2" "admin_show_jobs.f" "2"
show-jobs: H1	0	0	1
show-jobs: H2	0	0	1`,
		},
		scenario{
			name:  "admin_getpid_version",
			needs: admin,
			run: func(e *env) {
				r := e.gearadmin("--getpid")
				switch pid := strings.TrimSpace(r.Stdout); {
				case e.Target.Pid == 0:
					e.Logf("getpid: not checked")
				case pid == fmt.Sprint(e.Target.Pid):
					e.Logf("getpid: the server's pid")
				default:
					e.Logf("getpid: %q, want %d", pid, e.Target.Pid)
				}
				r = e.gearadmin("--server-version")
				if regexp.MustCompile(`^\d+\.\d+\S*\n?$`).MatchString(r.Stdout) {
					e.Logf("server-version: a version")
				} else {
					e.Logf("server-version: %q", r.Stdout)
				}
			},
			want: `
getpid: the server's pid
server-version: a version`,
		},
		scenario{
			name:  "admin_create_drop_function",
			needs: admin,
			run: func(e *env) {
				f := e.fn("f")
				e.logResult("create", e.gearadmin("--create-function", f), true)
				e.adminList("status", e.gearadmin("--status"))
				e.logResult("drop", e.gearadmin("--drop-function", f), true)
				e.adminList("status", e.gearadmin("--status"))
				e.logResult("drop", e.gearadmin("--drop-function", f), true)
			},
			want: `
create: OK
status: admin_create_drop_function.f	0	0	0
drop: OK
drop stderr: Error: function not found`,
		},
		scenario{
			name:  "admin_drop_function_queued",
			needs: admin,
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJobBg, f, "", "queued")
				c.handle()
				e.logResult("drop", e.gearadmin("--drop-function", f), true)
				e.adminList("status", e.gearadmin("--status"))
			},
			want: `
client: JOB_CREATED "H1"
drop: OK`,
			gearproxyWants: `
client: JOB_CREATED "H1"
drop stderr: Error: {any}
status: admin_drop_function_queued.f	1	0	0`,
			why: "drop function refuses while jobs are queued instead of orphaning them",
		},
		scenario{
			name:  "admin_cancel_job",
			needs: admin,
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJobBg, f, "", "doomed")
				h := c.handle()
				e.logResult("cancel", e.gearadmin("--cancel-job", h), true)
				e.logResult("cancel", e.gearadmin("--cancel-job", "H:nosuch:1"), true)
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
			},
			want: `
client: JOB_CREATED "H1"
cancel: OK
cancel stderr: Error: UNKNOWN_JOB
worker: NO_JOB`,
		},
	)
}

// known reports whether h is a handle this scenario has seen.
func (n *normalizer) known(h string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.handles[h]
	return ok
}
