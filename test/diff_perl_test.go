package test

import (
	"fmt"
	"strings"

	P "github.com/gearproxy/gearproxy/protocol"
)

// Scenarios driven by Perl's Gearman::Client and Gearman::Worker
// (test/testdata/perl_client.pl and perl_worker.pl).

// perl runs a Perl script in test/testdata to completion.
func (e *env) perl(script string, args ...string) ToolResult {
	e.Helper()
	return runTool(e, toolTimeout, nil, "perl", append([]string{testdata(script)}, args...)...)
}

// perlWorker starts perl_worker.pl for fn: count jobs, each run as mode.
func (e *env) perlWorker(fn, mode string, count int) *Proc {
	e.Helper()
	return startTool(e, nil, "perl", testdata("perl_worker.pl"), e.Target.Addr, fn, mode, fmt.Sprint(count))
}

func init() {
	both := []string{"perl", "perl-worker"}
	addScenarios(
		scenario{
			name:  "perl_do_task",
			needs: both,
			run: func(e *env) {
				f := e.fn("f")
				w := e.perlWorker(f, "reverse", 3)
				e.logResult("client", e.perl("perl_client.pl", e.Target.Addr, "do", f), false)
				e.logResult("worker", w.Wait(toolTimeout), false)
			},
			want: `
client: do_task normal: lamron-gra
client: do_task high: hgih-gra
client: do_task low: wol-gra
worker: job perl_do_task.f arg-normal reverse
worker: job perl_do_task.f arg-high reverse
worker: job perl_do_task.f arg-low reverse
worker: worker done`,
		},
		scenario{
			name:  "perl_background_status",
			needs: both,
			run: func(e *env) {
				f := e.fn("f")
				e.logResult("client", e.perl("perl_client.pl", e.Target.Addr, "background", f, e.fn("u")), false)
				handles := []string{e.Target.Addr + "//" + e.nz.real["H1"], e.Target.Addr + "//" + e.nz.real["H2"]}
				e.logResult("worker", e.perlWorker(f, "status", 2).Wait(toolTimeout), false)
				e.logResult("client", e.perl("perl_client.pl", append([]string{e.Target.Addr, "status", f}, handles...)...), false)
			},
			want: `
client: dispatch_background 1: <server>//H1
client: dispatch_background 2: <server>//H2
client: get_status <server>//H1: known=1 running=0 progress=0/0
client: get_status <server>//H2: known=1 running=0 progress=0/0
worker: job perl_background_status.f bg1 status
worker: job perl_background_status.f bg2 status
worker: worker done
client: get_status <server>//H1: known=0 running=0 progress=0/0
client: get_status <server>//H2: known=0 running=0 progress=0/0`,
		},
		scenario{
			name:  "perl_unique_64_bytes",
			needs: []string{"perl"},
			run: func(e *env) {
				f := e.fn("f")
				e.logResult("client", e.perl("perl_client.pl", e.Target.Addr, "bg_unique", f, strings.Repeat("u", 64)), true)
				e.logResult("client", e.perl("perl_client.pl", e.Target.Addr, "bg_unique", f, strings.Repeat("v", 63)), true)
				w := e.worker("worker", f)
				w.Send(P.GrabJobUniq)
				w.recv()
				w.Send(P.GrabJobUniq)
				w.recv()
			},
			want: `
client: dispatch_background: <server>//H1
client: dispatch_background: <server>//H2
worker: JOB_ASSIGN_UNIQ "H1" "perl_unique_64_bytes.f" "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu" "\x00data"
worker: JOB_ASSIGN_UNIQ "H2" "perl_unique_64_bytes.f" "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv" "data"`,
			gearproxyWants: `
client stderr: Unimplemented packet type: error [ARGUMENT_TOO_LARGE\x00{any}] at /usr/share/perl5/Gearman/Client.pm line {any}.
client: exit 255
client: dispatch_background: <server>//H1
worker: JOB_ASSIGN_UNIQ "H1" "perl_unique_64_bytes.f" "vvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvvv" "data"
worker: NO_JOB`,
			why: "a 64-byte unique is rejected with ERROR ARGUMENT_TOO_LARGE (Perl, which does not cut uniques as libgearman does, dies on it); gearmand truncates the unique and corrupts the data with a NUL",
		},
		scenario{
			name:  "perl_taskset_callbacks",
			needs: both,
			run: func(e *env) {
				f := e.fn("f")
				w := e.perlWorker(f, "chatty", 3)
				e.logResult("client", e.perl("perl_client.pl", e.Target.Addr, "taskset", f), false)
				e.logResult("worker", w.Wait(toolTimeout), false)
			},
			want: `
client: one data data1:one
client: one warning warning1:one
client: one complete done:one
client: two data data1:two
client: two warning warning1:two
client: two complete done:two
client: three data data1:three
client: three warning warning1:three
client: three complete done:three
client: taskset done
worker: job perl_taskset_callbacks.f one chatty
worker: job perl_taskset_callbacks.f two chatty
worker: job perl_taskset_callbacks.f three chatty
worker: worker done`,
		},
		scenario{
			name:  "perl_worker_send_work_status",
			needs: both,
			run: func(e *env) {
				f := e.fn("f")
				w := e.perlWorker(f, "send_status", 1)
				e.logResult("client", e.perl("perl_client.pl", e.Target.Addr, "exceptions", f, "on"), false)
				e.logResult("worker", w.Wait(toolTimeout), false)
			},
			want: `
client: task fail
client: taskset done
worker: job perl_worker_send_work_status.f x send_status
worker: worker done`,
			gearproxyWants: `
client: task complete done:x
client: taskset done
worker: job perl_worker_send_work_status.f x send_status
worker: worker done`,
			why: "a malformed WORK_* from a worker (Perl's two-argument WORK_STATUS) is logged and dropped and the rest of the stream works; gearmand reads into the next packet, loses the WORK_COMPLETE and the client's task fails after its timeout",
		},
		scenario{
			name:  "perl_worker_fail_and_die",
			needs: both,
			run: func(e *env) {
				f, g := e.fn("f"), e.fn("g")
				w := e.perlWorker(f, "fail", 1)
				e.logResult("client", e.perl("perl_client.pl", e.Target.Addr, "exceptions", f, "on"), false)
				e.logResult("worker", w.Wait(toolTimeout), false)
				w2 := e.perlWorker(g, "die", 1)
				e.logResult("client", e.perl("perl_client.pl", e.Target.Addr, "exceptions", g, "on"), false)
				e.logResult("worker", w2.Wait(toolTimeout), false)
			},
			want: `
client: task fail
client: taskset done
worker: job perl_worker_fail_and_die.f x fail
worker: worker done
client: task exception \x05\x0b
client: \x07boom:x
client:
client: taskset done
worker: job perl_worker_fail_and_die.g x die
worker: worker done`,
		},
		scenario{
			name:  "perl_exception_with_option",
			needs: []string{"perl"},
			run: func(e *env) {
				f := e.fn("f")
				w := e.worker("worker", f)
				c := startTool(e, nil, "perl", testdata("perl_client.pl"), e.Target.Addr, "exceptions", f, "on")
				w.Send(P.PreSleep)
				w.recv()
				w.Send(P.GrabJob)
				h := w.recv().Args[0]
				w.Send(P.WorkException, h, "boom")
				e.logResult("client", c.Wait(toolTimeout), false)
			},
			want: `
worker: NOOP
worker: JOB_ASSIGN "H1" "perl_exception_with_option.f" "x"
client: task exception boom
client: taskset done`,
		},
		scenario{
			name:  "perl_exception_without_option",
			needs: []string{"perl"},
			run: func(e *env) {
				f := e.fn("f")
				w := e.worker("worker", f)
				c := startTool(e, nil, "perl", testdata("perl_client.pl"), e.Target.Addr, "exceptions", f, "off")
				w.Send(P.PreSleep)
				w.recv()
				w.Send(P.GrabJob)
				h := w.recv().Args[0]
				w.Send(P.WorkException, h, "boom")
				e.logResult("client", c.Wait(toolTimeout), true)
			},
			want: `
worker: NOOP
worker: JOB_ASSIGN "H1" "perl_exception_without_option.f" "x"
client stderr: Job server failure: Got work_fail for unknown handle: H1\x00 at /usr/share/perl5/Gearman/ResponseParser/Taskset.pm line 45.
client stderr:  at {any}/testdata/perl_client.pl line {any}.
client: exit 255`,
			gearproxyWants: `
worker: NOOP
worker: JOB_ASSIGN "H1" "perl_exception_without_option.f" "x"
client: task fail
client: taskset done`,
			why: "a client without the exceptions option gets a clean WORK_FAIL; gearmand's stray NUL kills Perl's client",
		},
	)
}
