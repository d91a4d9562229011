package test

import (
	"fmt"
	"strings"
	"time"

	P "github.com/gearproxy/gearproxy/protocol"
)

// Scenarios driven by php-gearman (libgearman underneath): the client and
// worker scripts are test/testdata/php_client.php and php_worker.php.

// toolTimeout bounds one run of a peer program (PHP, Perl, the CLIs).
const toolTimeout = 30 * time.Second

// php runs a PHP script in test/testdata to completion.
func (e *env) php(script string, args ...string) ToolResult {
	e.Helper()
	return runTool(e, toolTimeout, nil, "php", append([]string{"-d", "display_errors=stderr", testdata(script)}, args...)...)
}

// startPHP starts a PHP script in the background.
func (e *env) startPHP(script string, args ...string) *Proc {
	e.Helper()
	return startTool(e, nil, "php", append([]string{"-d", "display_errors=stderr", testdata(script)}, args...)...)
}

// phpWorker starts php_worker.php for fn: count jobs, each run as mode.
func (e *env) phpWorker(fn, mode string, count int) *Proc {
	e.Helper()
	return e.startPHP("php_worker.php", e.Target.Addr, fn, mode, fmt.Sprint(count))
}

// logResult records what a program printed and how it ended. stderr is
// recorded only when keepStderr is set: PHP warnings carry libgearman
// source lines, which are the same on every target.
func (e *env) logResult(label string, r ToolResult, keepStderr bool) {
	e.Helper()
	for _, l := range splitLines(r.Stdout) {
		e.Logf("%s: %s", label, l)
	}
	if keepStderr {
		for _, l := range splitLines(r.Stderr) {
			e.Logf("%s stderr: %s", label, l)
		}
	}
	switch {
	case r.TimedOut:
		e.Logf("%s: timed out", label)
	case r.Exit != 0:
		e.Logf("%s: exit %d", label, r.Exit)
	}
	if r.Exit != 0 || r.TimedOut {
		e.Log(label, "stderr:", r.Stderr)
	}
}

func splitLines(s string) []string {
	s = strings.TrimRight(s, "\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimSuffix(l, "\r")
	}
	return lines
}

// waitQueued waits until the target holds at least n jobs of fn (queued
// or running), polling `status`: the way to start a worker only after a
// client has submitted everything, so that priorities decide the order.
func (e *env) waitQueued(fn string, n int) {
	e.Helper()
	e.waitStatus(fn, fmt.Sprintf("at least %d jobs", n), func(total, running, workers int) bool { return total >= n })
}

// waitClients waits until n foreground clients wait on the job with
// unique u, polling GET_STATUS_UNIQUE.
func (e *env) waitClients(u string, n int) {
	e.Helper()
	c := dialRaw(e, e.Target.Addr)
	defer c.Close()
	deadline := time.Now().Add(ioTimeout)
	for {
		c.Send(P.GetStatusUnique, u)
		r := c.Recv()
		if r.Type == P.StatusResUnique && len(r.Args) == 6 && r.Args[5] == fmt.Sprint(n) {
			return
		}
		if time.Now().After(deadline) {
			e.Fatalf("%s: %d clients not waiting after %s (last %s)", u, n, ioTimeout, r)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitStatus polls `status` until the line of fn satisfies ok.
func (e *env) waitStatus(fn, what string, ok func(total, running, workers int) bool) {
	e.Helper()
	a := dialRaw(e, e.Target.Addr)
	defer a.Close()
	deadline := time.Now().Add(ioTimeout)
	for {
		a.SendLine("status")
		for _, l := range a.RecvList() {
			f := strings.Split(l, "\t")
			if len(f) == 4 && f[0] == fn {
				var total, running, workers int
				fmt.Sscan(f[1], &total)
				fmt.Sscan(f[2], &running)
				fmt.Sscan(f[3], &workers)
				if ok(total, running, workers) {
					return
				}
			}
		}
		if time.Now().After(deadline) {
			e.Fatalf("%s: not %s after %s", fn, what, ioTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func init() {
	php := []string{"php"}
	addScenarios(
		scenario{
			name:  "php_do",
			needs: php,
			run: func(e *env) {
				f := e.fn("f")
				w := e.phpWorker(f, "reverse", 3)
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "do", f), false)
				e.logResult("worker", w.Wait(toolTimeout), false)
			},
			want: `
client: doNormal: 'lamroNod-daolyap' rc=SUCCESS
client: doHigh: 'hgiHod-daolyap' rc=SUCCESS
client: doLow: 'woLod-daolyap' rc=SUCCESS
worker: job php_do.f payload-doNormal reverse
worker: job php_do.f payload-doHigh reverse
worker: job php_do.f payload-doLow reverse
worker: worker done: ping true`,
		},
		scenario{
			name:  "php_do_loop",
			needs: php,
			run: func(e *env) {
				f := e.fn("f")
				w := e.phpWorker(f, "chatty", 1)
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "do_loop", f), false)
				e.logResult("worker", w.Wait(toolTimeout), false)
			},
			want: `
client: SUCCESS 'data1:loopdata2:loopdone:loop' handle=
worker: job php_do_loop.f loop chatty
worker: worker done: ping true`,
		},
		scenario{
			name:  "php_worker_send_complete_and_status",
			needs: php,
			run: func(e *env) {
				f, g := e.fn("f"), e.fn("g")
				w := e.phpWorker(f, "complete", 3)
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "do", f), false)
				e.logResult("worker", w.Wait(toolTimeout), false)
				w2 := e.phpWorker(g, "status", 1)
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "do_loop", g), false)
				e.logResult("worker", w2.Wait(toolTimeout), false)
			},
			want: `
client: doNormal: 'explicit:payload-doNormal' rc=SUCCESS
client: doHigh: 'explicit:payload-doHigh' rc=SUCCESS
client: doLow: 'explicit:payload-doLow' rc=SUCCESS
worker: job php_worker_send_complete_and_status.f payload-doNormal complete
worker: job php_worker_send_complete_and_status.f payload-doHigh complete
worker: job php_worker_send_complete_and_status.f payload-doLow complete
worker: worker done: ping true
client: SUCCESS 'ok:loop' handle=
worker: job php_worker_send_complete_and_status.g loop status
worker: worker done: ping true`,
		},
		scenario{
			name:  "php_background_and_status",
			needs: php,
			run: func(e *env) {
				f := e.fn("f")
				u := e.fn("u")
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "background", f, u), false)
				handles := []string{e.nz.real["H1"], e.nz.real["H2"], e.nz.real["H3"]}
				e.logResult("worker", e.phpWorkerRun(f, "unique", 3), false)
				args := []string{e.Target.Addr, "status", f}
				for i, h := range handles {
					args = append(args, "h:"+h, fmt.Sprintf("u:%s-%d", u, i+1))
				}
				e.logResult("client", e.php("php_client.php", args...), false)
			},
			want: `
client: doBackground: H1 rc=SUCCESS
client: doHighBackground: H2 rc=SUCCESS
client: doLowBackground: H3 rc=SUCCESS
client: jobStatus H1: known=true running=false 0/0
client: jobStatusByUniqueKey php_background_and_status.u-1: known=true running=false 0/0
client: jobStatus H2: known=true running=false 0/0
client: jobStatusByUniqueKey php_background_and_status.u-2: known=true running=false 0/0
client: jobStatus H3: known=true running=false 0/0
client: jobStatusByUniqueKey php_background_and_status.u-3: known=true running=false 0/0
worker: job php_background_and_status.f bg-doHighBackground unique
worker: job php_background_and_status.f bg-doBackground unique
worker: job php_background_and_status.f bg-doLowBackground unique
worker: worker done: ping true
client: jobStatus H1: known=false running=false 0/0
client: jobStatusByUniqueKey php_background_and_status.u-1: known=false running=false 0/0
client: jobStatus H2: known=false running=false 0/0
client: jobStatusByUniqueKey php_background_and_status.u-2: known=false running=false 0/0
client: jobStatus H3: known=false running=false 0/0
client: jobStatusByUniqueKey php_background_and_status.u-3: known=false running=false 0/0`,
		},
		scenario{
			name:  "php_job_status_running",
			needs: php,
			run: func(e *env) {
				f := e.fn("f")
				u := e.fn("u")
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "bg_unique", f, u), false)
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				h := w.recv().Args[0]
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "status", f, "h:"+h, "u:"+u), false)
				w.Send(P.WorkStatus, h, "3", "7")
				w.echoCheck("status sent")
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "status", f, "h:"+h, "u:"+u), false)
				w.Send(P.WorkComplete, h, "")
				w.echoCheck("complete sent")
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "status", f, "h:"+h, "u:"+u), false)
			},
			want: `
client: doBackground: H1 rc=SUCCESS
worker: JOB_ASSIGN "H1" "php_job_status_running.f" "data"
client: jobStatus H1: known=true running=true 0/0
client: jobStatusByUniqueKey php_job_status_running.u: known=true running=true 0/0
worker: ECHO_RES "status sent"
client: jobStatus H1: known=true running=true 3/7
client: jobStatusByUniqueKey php_job_status_running.u: known=true running=true 3/7
worker: ECHO_RES "complete sent"
client: jobStatus H1: known=false running=false 0/0
client: jobStatusByUniqueKey php_job_status_running.u: known=false running=false 0/0`,
		},
		scenario{
			name:  "php_worker_timeout_requeue",
			needs: php,
			run: func(e *env) {
				f := e.fn("f")
				slow := e.startPHP("php_worker.php", e.Target.Addr, f, "sleep3", "1", "1")
				e.waitStatus(f, "a worker", func(_, _, workers int) bool { return workers == 1 })
				c := e.startPHP("php_client.php", e.Target.Addr, "do1", f)
				e.waitStatus(f, "running", func(_, running, _ int) bool { return running == 1 })
				fast := e.phpWorker(f, "reverse", 1)
				e.logResult("client", c.Wait(toolTimeout), false)
				e.logResult("fast worker", fast.Wait(toolTimeout), false)
				e.logResult("slow worker", slow.Wait(toolTimeout), false)
			},
			want: `
client: doNormal: 'x' rc=SUCCESS
fast worker: job php_worker_timeout_requeue.f x reverse
fast worker: worker done: ping true
slow worker: job php_worker_timeout_requeue.f x sleep3
slow worker: worker done: ping false`,
		},
		// libgearman cuts a unique to 63 bytes before sending it, so real
		// clients never meet the 64-byte rejection (raw_unique_64_bytes).
		scenario{
			name:  "php_unique_64_bytes",
			needs: php,
			run: func(e *env) {
				f := e.fn("f")
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "bg_unique", f, strings.Repeat("u", 64)), false)
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "bg_unique", f, strings.Repeat("v", 63)), false)
			},
			want: `
client: doBackground: H1 rc=SUCCESS
client: doBackground: H2 rc=SUCCESS`,
		},
		scenario{
			name:  "php_coalesce_two_clients",
			needs: php,
			run: func(e *env) {
				f, u := e.fn("f"), e.fn("u")
				c1 := e.startPHP("php_client.php", e.Target.Addr, "do_unique", f, u, "first")
				e.waitClients(u, 1)
				c2 := e.startPHP("php_client.php", e.Target.Addr, "do_unique", f, u, "second")
				e.waitClients(u, 2)
				w := e.phpWorker(f, "reverse", 1)
				e.logResult("client1", c1.Wait(toolTimeout), false)
				e.logResult("client2", c2.Wait(toolTimeout), false)
				e.logResult("worker", w.Wait(toolTimeout), false)
			},
			want: `
client1: doNormal: 'tsrif' rc=SUCCESS
client2: doNormal: 'tsrif' rc=SUCCESS
worker: job php_coalesce_two_clients.f first reverse
worker: worker done: ping true`,
		},
		scenario{
			name:  "php_worker_id_in_workers",
			needs: []string{"php", "gearadmin"},
			run: func(e *env) {
				f := e.fn("f")
				w := e.phpWorker(f, "reverse", 1)
				e.waitStatus(f, "a worker", func(_, _, workers int) bool { return workers == 1 })
				e.adminList("workers", e.gearadmin("--workers"))
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "do1", f), false)
				e.logResult("worker", w.Wait(toolTimeout), false)
			},
			want: `
workers: <fd> 127.0.0.1 php-php_worker_id_in_workers.f : php_worker_id_in_workers.f
client: doNormal: 'x' rc=SUCCESS
worker: job php_worker_id_in_workers.f x reverse
worker: worker done: ping true`,
		},
		scenario{
			name:  "php_tasks_every_callback",
			needs: php,
			run: func(e *env) {
				f := e.fn("f")
				c := e.startPHP("php_client.php", e.Target.Addr, "tasks", f)
				e.waitQueued(f, 6)
				w := e.phpWorker(f, "chatty", 6)
				e.logResult("client", c.Wait(toolTimeout), false)
				e.logResult("worker", w.Wait(toolTimeout), false)
			},
			want: `
client: created H1
client: created H2
client: created H3
client: created H4
client: created H5
client: created H6
client: data H5 data1:high
client: warning H5 warning1:high
client: status H5 1/2
client: data H5 data2:high
client: status H5 2/2
client: complete H5 done:high SUCCESS
client: data H6 data1:normal
client: warning H6 warning1:normal
client: status H6 1/2
client: data H6 data2:normal
client: status H6 2/2
client: complete H6 done:normal SUCCESS
client: data H4 data1:low
client: warning H4 warning1:low
client: status H4 1/2
client: data H4 data2:low
client: status H4 2/2
client: complete H4 done:low SUCCESS
client: runTasks: true rc=SUCCESS
worker: job php_tasks_every_callback.f high-bg chatty
worker: job php_tasks_every_callback.f high chatty
worker: job php_tasks_every_callback.f normal-bg chatty
worker: job php_tasks_every_callback.f normal chatty
worker: job php_tasks_every_callback.f low-bg chatty
worker: job php_tasks_every_callback.f low chatty
worker: worker done: ping true`,
		},
		scenario{
			name:  "php_tasks_fail",
			needs: php,
			run: func(e *env) {
				f := e.fn("f")
				w := e.phpWorker(f, "fail", 1)
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "task1", f), false)
				e.logResult("worker", w.Wait(toolTimeout), false)
			},
			want: `
client: created H1
client: fail H1 SUCCESS
client: runTasks: true rc=SUCCESS
worker: job php_tasks_fail.f x fail
worker: worker done: ping true`,
		},
		scenario{
			name:  "php_tasks_exception",
			needs: php,
			run: func(e *env) {
				f := e.fn("f")
				w := e.phpWorker(f, "exception", 1)
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "task1", f), false)
				e.logResult("worker", w.Wait(toolTimeout), false)
			},
			want: `
client: created H1
client: exception H1 boom:x
client: runTasks: true rc=SUCCESS
worker: job php_tasks_exception.f x exception
worker: worker done: ping true`,
		},
		scenario{
			name:  "php_do_exception_and_fail",
			needs: php,
			run: func(e *env) {
				f, g := e.fn("f"), e.fn("g")
				w := e.phpWorker(f, "exception", 1)
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "do1", f), false)
				e.logResult("worker", w.Wait(toolTimeout), false)
				w2 := e.phpWorker(g, "fail", 1)
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "do1", g), false)
				e.logResult("worker", w2.Wait(toolTimeout), false)
			},
			want: `
client: doNormal: '' rc=WORK_EXCEPTION
worker: job php_do_exception_and_fail.f x exception
worker: worker done: ping true
client: doNormal: '' rc=WORK_FAIL
worker: job php_do_exception_and_fail.g x fail
worker: worker done: ping true`,
		},
		scenario{
			name:  "php_echo",
			needs: php,
			run: func(e *env) {
				f := e.fn("f")
				w := e.phpWorker(f, "reverse", 1)
				e.logResult("client", e.php("php_client.php", e.Target.Addr, "echo", f), false)
				c := e.dial("raw")
				c.Send(P.SubmitJobBg, f, "", "abc")
				c.handle()
				e.logResult("worker", w.Wait(toolTimeout), false)
			},
			want: `
client: ping: true
raw: JOB_CREATED "H1"
worker: job php_echo.f abc reverse
worker: worker done: ping true`,
		},
	)
}

// phpWorkerRun runs php_worker.php to completion.
func (e *env) phpWorkerRun(fn, mode string, count int) ToolResult {
	e.Helper()
	return e.phpWorker(fn, mode, count).Wait(toolTimeout)
}
