package test

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	P "github.com/gearproxy/gearproxy/protocol"
)

// Raw-packet scenarios: what no client library can express.

// quietWait is how long a scenario waits to show that a server sends
// nothing. Where the other server does send something, it comes sooner.
const quietWait = 3 * time.Second

// pipeline concatenates packets so that they leave in one write.
func pipeline(packets ...[]byte) []byte {
	var b []byte
	for _, p := range packets {
		b = append(b, p...)
	}
	return b
}

// worker opens a raw worker connection that can do the given functions.
func (e *env) worker(label string, fns ...string) *conn {
	w := e.dial(label)
	for _, f := range fns {
		w.Send(P.CanDo, f)
	}
	return w
}

// echoCheck shows that a server still serves a connection.
func (c *conn) echoCheck(data string) {
	c.e.Helper()
	c.Send(P.EchoReq, data)
	c.recv()
}

func init() {
	addScenarios(
		scenario{
			name: "raw_pipelined_submits",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Write(pipeline(
					Packet(P.SubmitJobBg, f, "u1", "a"),
					Packet(P.SubmitJob, f, "u2", "b"),
					Packet(P.SubmitJobHighBg, f, "u3", "c"),
					Packet(P.EchoReq, "ping"),
					Packet(P.GetStatus, "H:nosuch:1"),
					Packet(P.OptionReq, "bogus"),
					Packet(P.SubmitJobLow, f, "u1", "attach to a"),
					Packet(P.OptionReq, "exceptions"),
					Packet(P.SubmitJobLowBg, f, "u4", "d"),
				))
				c.recvN(9)
				w := e.worker("worker", f)
				for i := 0; i < 4; i++ {
					w.Send(P.GrabJobUniq)
					h := w.recv().Args[0]
					w.Send(P.WorkComplete, h, "done "+e.nz.handle(h))
					if i == 1 || i == 2 {
						c.recv()
					}
				}
				w.Send(P.GrabJobUniq)
				w.recv()
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
client: JOB_CREATED "H3"
client: ECHO_RES "ping"
client: STATUS_RES "H4" "0" "0" "0" "0"
client: ERROR "UNKNOWN_OPTION" "Server does not recognize given option"
client: JOB_CREATED "H1"
client: OPTION_RES "exceptions"
client: JOB_CREATED "H5"
worker: JOB_ASSIGN_UNIQ "H3" "raw_pipelined_submits.f" "u3" "c"
worker: JOB_ASSIGN_UNIQ "H1" "raw_pipelined_submits.f" "u1" "a"
client: WORK_COMPLETE "H1" "done H1"
worker: JOB_ASSIGN_UNIQ "H2" "raw_pipelined_submits.f" "u2" "b"
client: WORK_COMPLETE "H2" "done H2"
worker: JOB_ASSIGN_UNIQ "H5" "raw_pipelined_submits.f" "u4" "d"
worker: NO_JOB`,
		},
		scenario{
			name: "raw_pipelined_500",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				var b []byte
				for i := 0; i < 500; i++ {
					u := fmt.Sprintf("u%d", i-i%5/4) // every fifth repeats the unique before it
					b = append(b, Packet(P.SubmitJobBg, f, u, fmt.Sprint(i))...)
				}
				c.Write(b)
				var got []string
				for i := 0; i < 500; i++ {
					r := c.Recv()
					if r.Type != P.JobCreated {
						e.Fatalf("reply %d: %s", i, r)
					}
					got = append(got, e.nz.handle(r.Args[0]))
				}
				inOrder := true
				for i := range got {
					want := fmt.Sprintf("H%d", i-i/5+1)
					if i%5 == 4 {
						want = got[i-1]
					}
					inOrder = inOrder && got[i] == want
				}
				e.Logf("client: 500 JOB_CREATED, %d jobs, in submit order with repeats coalesced: %v", len(e.nz.handles), inOrder)
				c.SendLine("status")
				c.list()
			},
			want: `
client: 500 JOB_CREATED, 400 jobs, in submit order with repeats coalesced: true
client: raw_pipelined_500.f	400	0	0
client: .`,
		},
		scenario{
			name: "raw_coalesce_onto_running_background",
			run: func(e *env) {
				f := e.fn("f")
				bg := e.dial("bg")
				bg.Send(P.SubmitJobBg, f, "same", "bg data")
				h := bg.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJobUniq)
				w.recv()
				c := e.dial("fg")
				c.Send(P.SubmitJob, f, "same", "fg data")
				c.handle()
				w.Send(P.WorkData, h, "d")
				c.recv()
				w.Send(P.WorkComplete, h, "done")
				c.recv()
				bg.quiet(quietWait)
			},
			want: `
bg: JOB_CREATED "H1"
worker: JOB_ASSIGN_UNIQ "H1" "raw_coalesce_onto_running_background.f" "same" "bg data"
fg: JOB_CREATED "H1"
fg: WORK_DATA "H1" "d"
fg: WORK_COMPLETE "H1" "done"
bg: (nothing)`,
		},
		scenario{
			name: "raw_worker_disconnect_two_jobs",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				for _, d := range []string{"a", "b", "c"} {
					c.Send(P.SubmitJobBg, f, "", d)
					c.handle()
				}
				w1 := e.worker("w1", f)
				w1.Send(P.GrabJob)
				w1.recv()
				w1.Send(P.GrabJob)
				w1.recv()
				w1.Close()
				e.waitStatus(f, "no worker", func(total, running, workers int) bool { return workers == 0 && running == 0 })
				w2 := e.worker("w2", f)
				for i := 0; i < 4; i++ {
					w2.Send(P.GrabJob)
					w2.recv()
				}
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
client: JOB_CREATED "H3"
w1: JOB_ASSIGN "H1" "raw_worker_disconnect_two_jobs.f" "a"
w1: JOB_ASSIGN "H2" "raw_worker_disconnect_two_jobs.f" "b"
w2: JOB_ASSIGN "H3" "raw_worker_disconnect_two_jobs.f" "c"
w2: JOB_ASSIGN "H2" "raw_worker_disconnect_two_jobs.f" "b"
w2: JOB_ASSIGN "H1" "raw_worker_disconnect_two_jobs.f" "a"
w2: NO_JOB`,
		},
		scenario{
			name: "raw_coalesce_late_attach",
			run: func(e *env) {
				f := e.fn("f")
				c1 := e.dial("c1")
				c1.Send(P.SubmitJob, f, "same", "first")
				h := c1.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJobUniq)
				w.recv()
				w.Send(P.WorkData, h, "part1")
				c1.recv()
				c2 := e.dial("c2")
				c2.Send(P.SubmitJob, f, "same", "second")
				c2.handle()
				w.Send(P.WorkStatus, h, "1", "2")
				c1.recv()
				c2.recv()
				w.Send(P.WorkComplete, h, "result")
				c1.recv()
				c2.recv()
				// A new submit with the same unique after completion is
				// a new job.
				c2.Send(P.SubmitJobBg, f, "same", "third")
				c2.handle()
				c2.Send(P.GetStatus, h)
				c2.recv()
			},
			want: `
c1: JOB_CREATED "H1"
worker: JOB_ASSIGN_UNIQ "H1" "raw_coalesce_late_attach.f" "same" "first"
c1: WORK_DATA "H1" "part1"
c2: JOB_CREATED "H1"
c1: WORK_STATUS "H1" "1" "2"
c2: WORK_STATUS "H1" "1" "2"
c1: WORK_COMPLETE "H1" "result"
c2: WORK_COMPLETE "H1" "result"
c2: JOB_CREATED "H2"
c2: STATUS_RES "H1" "0" "0" "0" "0"`,
		},
		scenario{
			name: "raw_coalesce_uniques",
			run: func(e *env) {
				f, g := e.fn("f"), e.fn("g")
				c := e.dial("client")
				for _, s := range [][3]string{
					{f, "-", "x"}, {f, "-", "x"}, {f, "-", "y"},
					{f, "", "x"}, {f, "", "x"},
					{f, "u", "x"}, {f, "u", "other data"}, {g, "u", "x"}, {f, "U", "x"},
				} {
					c.Send(P.SubmitJobBg, s[0], s[1], s[2])
					c.handle()
				}
				w := e.worker("worker", f, g)
				for i := 0; i < 7; i++ {
					w.Send(P.GrabJobUniq)
					w.recv()
				}
				w.Send(P.GrabJobUniq)
				w.recv()
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
client: JOB_CREATED "H3"
client: JOB_CREATED "H4"
client: JOB_CREATED "H5"
client: JOB_CREATED "H5"
client: JOB_CREATED "H6"
client: JOB_CREATED "H7"
worker: JOB_ASSIGN_UNIQ "H6" "raw_coalesce_uniques.g" "u" "x"
worker: JOB_ASSIGN_UNIQ "H1" "raw_coalesce_uniques.f" "-" "x"
worker: JOB_ASSIGN_UNIQ "H2" "raw_coalesce_uniques.f" "-" "y"
worker: JOB_ASSIGN_UNIQ "H3" "raw_coalesce_uniques.f" "" "x"
worker: JOB_ASSIGN_UNIQ "H4" "raw_coalesce_uniques.f" "" "x"
worker: JOB_ASSIGN_UNIQ "H5" "raw_coalesce_uniques.f" "u" "x"
worker: JOB_ASSIGN_UNIQ "H7" "raw_coalesce_uniques.f" "U" "x"
worker: NO_JOB`,
		},
		scenario{
			name: "raw_priorities",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				for _, s := range []struct {
					t    P.Type
					data string
				}{
					{P.SubmitJobLowBg, "low1"}, {P.SubmitJobBg, "normal1"}, {P.SubmitJobHighBg, "high1"},
					{P.SubmitJobLowBg, "low2"}, {P.SubmitJobHighBg, "high2"}, {P.SubmitJobBg, "normal2"},
				} {
					c.Send(s.t, f, "", s.data)
					c.handle()
				}
				c.SendLine("prioritystatus")
				c.list()
				c.SendLine("status")
				c.list()
				w := e.worker("worker", f)
				for i := 0; i < 7; i++ {
					w.Send(P.GrabJob)
					w.recv()
				}
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
client: JOB_CREATED "H3"
client: JOB_CREATED "H4"
client: JOB_CREATED "H5"
client: JOB_CREATED "H6"
client: raw_priorities.f	2	2	2	0
client: .
client: raw_priorities.f	6	0	0
client: .
worker: JOB_ASSIGN "H3" "raw_priorities.f" "high1"
worker: JOB_ASSIGN "H5" "raw_priorities.f" "high2"
worker: JOB_ASSIGN "H2" "raw_priorities.f" "normal1"
worker: JOB_ASSIGN "H6" "raw_priorities.f" "normal2"
worker: JOB_ASSIGN "H1" "raw_priorities.f" "low1"
worker: JOB_ASSIGN "H4" "raw_priorities.f" "low2"
worker: NO_JOB`,
		},
		scenario{
			name: "raw_get_status",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				s := e.dial("status")
				s.Send(P.GetStatus, "H:nosuch:42")
				s.recv()
				c.Send(P.SubmitJob, f, "", "data")
				h := c.handle()
				s.Send(P.GetStatus, h)
				s.recv()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				s.Send(P.GetStatus, h)
				s.recv()
				w.Send(P.WorkStatus, h, "3", "10")
				c.recv()
				s.Send(P.GetStatus, h)
				s.recv()
				w.Send(P.WorkComplete, h, "")
				c.recv()
				s.Send(P.GetStatus, h)
				s.recv()
			},
			want: `
status: STATUS_RES "H1" "0" "0" "0" "0"
client: JOB_CREATED "H2"
status: STATUS_RES "H2" "1" "0" "0" "0"
worker: JOB_ASSIGN "H2" "raw_get_status.f" "data"
status: STATUS_RES "H2" "1" "1" "0" "0"
client: WORK_STATUS "H2" "3" "10"
status: STATUS_RES "H2" "1" "1" "3" "10"
client: WORK_COMPLETE "H2" ""
status: STATUS_RES "H2" "0" "0" "0" "0"`,
		},
		scenario{
			name: "raw_get_status_unique",
			run: func(e *env) {
				f := e.fn("f")
				u := e.fn("unique")
				s := e.dial("status")
				s.Send(P.GetStatusUnique, u)
				s.recv()
				c1, c2 := e.dial("c1"), e.dial("c2")
				c1.Send(P.SubmitJob, f, u, "data")
				h := c1.handle()
				s.Send(P.GetStatusUnique, u)
				s.recv()
				c2.Send(P.SubmitJob, f, u, "data")
				c2.handle()
				s.Send(P.GetStatusUnique, u)
				s.recv()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.WorkStatus, h, "1", "4")
				c1.recv()
				c2.recv()
				s.Send(P.GetStatusUnique, u)
				s.recv()
				w.Send(P.WorkComplete, h, "ok")
				c1.recv()
				c2.recv()
				s.Send(P.GetStatusUnique, u)
				s.recv()
				// A background job has no waiting clients.
				c1.Send(P.SubmitJobBg, f, u, "bg")
				c1.handle()
				s.Send(P.GetStatusUnique, u)
				s.recv()
			},
			want: `
status: STATUS_RES_UNIQUE "raw_get_status_unique.unique" "0" "0" "0" "0" "0"
c1: JOB_CREATED "H1"
status: STATUS_RES_UNIQUE "raw_get_status_unique.unique" "1" "0" "0" "0" "1"
c2: JOB_CREATED "H1"
status: STATUS_RES_UNIQUE "raw_get_status_unique.unique" "1" "0" "0" "0" "2"
worker: JOB_ASSIGN "H1" "raw_get_status_unique.f" "data"
c1: WORK_STATUS "H1" "1" "4"
c2: WORK_STATUS "H1" "1" "4"
status: STATUS_RES_UNIQUE "raw_get_status_unique.unique" "1" "1" "1" "4" "2"
c1: WORK_COMPLETE "H1" "ok"
c2: WORK_COMPLETE "H1" "ok"
status: STATUS_RES_UNIQUE "raw_get_status_unique.unique" "0" "0" "0" "0" "0"
c1: JOB_CREATED "H2"
status: STATUS_RES_UNIQUE "raw_get_status_unique.unique" "1" "0" "0" "0" "0"`,
		},
		scenario{
			name: "raw_get_status_unique_three_functions",
			// GET_STATUS_UNIQUE is not scoped to a function: with one
			// unique in three functions, which job answers?
			run: func(e *env) {
				f, g, h, u := e.fn("f"), e.fn("g"), e.fn("h"), e.fn("u")
				c := e.dial("client")
				c.Send(P.SubmitJob, f, u, "oldest")
				hf := c.handle()
				c.Send(P.SubmitJob, g, u, "middle")
				c.handle()
				c.Send(P.SubmitJob, h, u, "newest")
				c.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.WorkStatus, hf, "1", "2")
				c.recv()
				s := e.dial("status")
				s.Send(P.GetStatusUnique, u)
				s.recv()
				w.Send(P.WorkComplete, hf, "")
				c.recv()
				s.Send(P.GetStatusUnique, u)
				s.recv()
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
client: JOB_CREATED "H3"
worker: JOB_ASSIGN "H1" "raw_get_status_unique_three_functions.f" "oldest"
client: WORK_STATUS "H1" "1" "2"
status: STATUS_RES_UNIQUE "raw_get_status_unique_three_functions.u" "1" "0" "0" "0" "1"
client: WORK_COMPLETE "H1" ""
status: STATUS_RES_UNIQUE "raw_get_status_unique_three_functions.u" "1" "0" "0" "0" "1"`,
		},
		scenario{
			name: "raw_option_req",
			run: func(e *env) {
				c := e.dial("client")
				for _, o := range []string{"exceptions", "EXCEPTIONS", "bogus", ""} {
					c.Send(P.OptionReq, o)
					c.recv()
				}
				c.echoCheck("still here")
			},
			want: `
client: OPTION_RES "exceptions"
client: OPTION_RES "EXCEPTIONS"
client: ERROR "UNKNOWN_OPTION" "Server does not recognize given option"
client: ERROR "UNKNOWN_OPTION" "Server does not recognize given option"
client: ECHO_RES "still here"`,
		},
		scenario{
			name: "raw_response_types_to_server",
			run: func(e *env) {
				c := e.dial("client")
				for _, p := range [][]byte{
					Packet(5),
					Packet(P.Noop),
					Packet(P.JobCreated, "H:x:1"),
					Packet(P.NoJob),
					Packet(P.JobAssign, "H:x:1", "f", "d"),
					Packet(P.EchoRes, "e"),
					Packet(P.Error, "CODE", "text"),
					Packet(P.StatusRes, "H:x:1", "0", "0", "0", "0"),
					Packet(P.AllYours),
					Packet(P.OptionRes, "exceptions"),
					Packet(P.JobAssignUniq, "H:x:1", "f", "u", "d"),
					Packet(P.JobAssignAll, "H:x:1", "f", "u", "r", "d"),
					Packet(P.StatusResUnique, "u", "0", "0", "0", "0", "0"),
				} {
					c.Write(p)
					c.recv()
				}
				c.echoCheck("still here")
			},
			want: `
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ECHO_RES "still here"`,
		},
		scenario{
			name: "raw_type_0_closes",
			run: func(e *env) {
				c := e.dial("client")
				c.Write(Header(P.Req, 0, 0))
				c.closed()
				e.dial("other").echoCheck("unaffected")
			},
			want: `
client: closed
other: ECHO_RES "unaffected"`,
			gearproxyWants: `
client: ERROR "INVALID_COMMAND" "{any}"
client: closed
other: ECHO_RES "unaffected"`,
			why: "every bad input gets an ERROR naming the cause (architecture.md); gearmand closes without a word",
		},
		scenario{
			name: "raw_type_43_closes",
			run: func(e *env) {
				c := e.dial("client")
				c.Write(Packet(43, "x"))
				c.closed()
				e.dial("other").echoCheck("unaffected")
			},
			want: `
client: closed
other: ECHO_RES "unaffected"`,
			gearproxyWants: `
client: ERROR "INVALID_COMMAND" "{any}"
client: closed
other: ECHO_RES "unaffected"`,
			why: "every bad input gets an ERROR naming the cause (architecture.md); gearmand closes without a word",
		},
		scenario{
			name: "raw_missing_nul",
			run: func(e *env) {
				keep := e.dial("bystander")
				keep.Send(P.SubmitJobBg, e.fn("f"), "", "kept")
				h := keep.handle()
				c := e.dial("client")
				body := e.fn("f") + "-no-terminators"
				c.Write(append(Header(P.Req, P.SubmitJob, uint32(len(body))), body...))
				c.quiet(quietWait)
				c.Send(P.EchoReq, "after")
				c.quiet(ioTimeout)
				keep.Send(P.GetStatus, h)
				keep.recv()
			},
			want: `
bystander: JOB_CREATED "H1"
client: (nothing)
client: closed
bystander: STATUS_RES "H1" "1" "0" "0" "0"`,
			gearproxyWants: `
bystander: JOB_CREATED "H1"
client: ERROR "INVALID_PACKET" "{any}"
client: ECHO_RES "after"
bystander: STATUS_RES "H1" "1" "0" "0" "0"`,
			why: "every bad input gets an ERROR naming the cause (architecture.md); gearmand says nothing, reads into the next packet and drops the connection",
		},
		scenario{
			name: "raw_wrong_magic",
			run: func(e *env) {
				keep := e.dial("bystander")
				keep.Send(P.SubmitJobBg, e.fn("f"), "", "kept")
				h := keep.handle()
				c := e.dial("res-magic")
				c.Write(append(Header(P.Res, P.EchoReq, 1), 'x'))
				c.quiet(ioTimeout)
				c.Send(P.EchoReq, "after")
				c.quiet(ioTimeout)
				c2 := e.dial("bad-magic")
				c2.Write(append([]byte("\x00XYZ"), Header(P.Req, P.EchoReq, 1)[4:]...))
				c2.Write([]byte("x"))
				c2.quiet(ioTimeout)
				c2.Send(P.EchoReq, "after")
				c2.quiet(ioTimeout)
				keep.Send(P.GetStatus, h)
				keep.recv()
			},
			want: `
bystander: JOB_CREATED "H1"
res-magic: ERROR "INVALID_MAGIC" "Request magic expected"
res-magic: ECHO_RES "after"
bad-magic: closed
bad-magic: closed
bystander: STATUS_RES "H1" "1" "0" "0" "0"`,
			gearproxyWants: `
bystander: JOB_CREATED "H1"
res-magic: ERROR "INVALID_MAGIC" "{any}"
res-magic: closed
bad-magic: ERROR "INVALID_MAGIC" "{any}"
bad-magic: closed
bystander: STATUS_RES "H1" "1" "0" "0" "0"`,
			why: "every bad input gets an ERROR naming the cause (architecture.md); gearmand closes silently on an unknown magic; a stream with a wrong magic is not trusted to continue",
		},
		scenario{
			name: "raw_declared_size_too_large",
			run: func(e *env) {
				keep := e.dial("bystander")
				keep.Send(P.SubmitJobBg, e.fn("f"), "", "kept")
				h := keep.handle()
				c := e.dial("client")
				c.Write(append(Header(P.Req, P.SubmitJob, 1<<30), e.fn("f")+"\x00\x00data"...))
				c.quiet(quietWait)
				c.Send(P.EchoReq, "after")
				c.quiet(quietWait)
				keep.Send(P.GetStatus, h)
				keep.recv()
				keep.echoCheck("unaffected")
			},
			want: `
bystander: JOB_CREATED "H1"
client: (nothing)
client: (nothing)
bystander: STATUS_RES "H1" "1" "0" "0" "0"
bystander: ECHO_RES "unaffected"`,
			gearproxyWants: `
bystander: JOB_CREATED "H1"
client: ERROR "ARGUMENT_TOO_LARGE" "{any}"
client: closed
bystander: STATUS_RES "H1" "1" "0" "0" "0"
bystander: ECHO_RES "unaffected"`,
			why: "every bad input gets an ERROR naming the cause (architecture.md); gearmand tries to allocate the declared size, fails, and leaves the client hanging",
		},
		scenario{
			name: "raw_oversize_arguments",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("unique-65")
				c.Send(P.SubmitJobBg, f, strings.Repeat("u", 65), "x")
				c.recv()
				c.echoCheck("after")
				for _, bad := range []struct {
					label string
					p     []byte
				}{
					{"function-9000", Packet(P.SubmitJobBg, f+strings.Repeat("f", 9000), "", "x")},
					{"option-9000", Packet(P.OptionReq, strings.Repeat("o", 9000))},
				} {
					c := e.dial(bad.label)
					c.Write(bad.p)
					c.quiet(ioTimeout)
					c.Send(P.EchoReq, "after")
					c.quiet(ioTimeout)
				}
			},
			want: `
unique-65: ERROR "ARGUMENT_TOO_LARGE" "Unique value too large"
unique-65: ECHO_RES "after"
function-9000: closed
function-9000: closed
option-9000: closed
option-9000: closed`,
			gearproxyWants: `
unique-65: ERROR "ARGUMENT_TOO_LARGE" "Unique value too large"
unique-65: ECHO_RES "after"
function-9000: ERROR "ARGUMENT_TOO_LARGE" "{any}"
function-9000: ECHO_RES "after"
option-9000: ERROR "ARGUMENT_TOO_LARGE" "{any}"
option-9000: ECHO_RES "after"`,
			why: "every bad input gets an ERROR naming the cause (architecture.md); gearmand drops the connection without a word",
		},
		scenario{
			name: "raw_unique_64_bytes",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				u := strings.Repeat("u", 64)
				c.Send(P.SubmitJobBg, f, u, "x")
				c.recv()
				c.Send(P.SubmitJobBg, f, u[:63], "x")
				c.recv()
				w := e.worker("worker", f)
				w.Send(P.GrabJobUniq)
				w.recv()
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
worker: JOB_ASSIGN_UNIQ "H1" "raw_unique_64_bytes.f" "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu" "\x00x"`,
			gearproxyWants: `
client: ERROR "ARGUMENT_TOO_LARGE" "{any}"
client: JOB_CREATED "H1"
worker: JOB_ASSIGN_UNIQ "H1" "raw_unique_64_bytes.f" "uuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuuu" "x"`,
			why: "a 64-byte unique is rejected; gearmand truncates it to 63 bytes and puts a NUL in front of the data",
		},
		scenario{
			name: "raw_text_binary_mixing",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Write(pipeline(
					Packet(P.EchoReq, "one"),
					[]byte("version\n"),
					Packet(P.SubmitJobBg, f, "", "x"),
					[]byte("status\r\n"),
					Packet(P.EchoReq, "two"),
					[]byte("bogus command\n"),
				))
				c.recv()
				c.recv()
				c.recv()
				c.list()
				c.recv()
				c.recv()
			},
			want: `
client: ECHO_RES "one"
client: OK <version>
client: JOB_CREATED "H1"
client: raw_text_binary_mixing.f	1	0	0
client: .
client: ECHO_RES "two"
client: ERR UNKNOWN_COMMAND Unknown+server+commandbogus`,
		},
		scenario{
			name: "raw_admin_tokens",
			run: func(e *env) {
				c := e.dial("admin")
				c.SendLine("a b c d e")
				c.recv()
				c.SendLine("VERSION")
				c.recv()
				c.SendLine("a b c d e f")
				c.closed()
			},
			want: `
admin: ERR UNKNOWN_COMMAND Unknown+server+commanda
admin: OK <version>
admin: closed`,
			gearproxyWants: `
admin: ERR UNKNOWN_COMMAND Unknown+server+commanda
admin: OK <version>
admin: ERR ARGUMENT_TOO_LARGE {any}
admin: closed`,
			why: "every bad input gets an ERROR naming the cause (architecture.md); gearmand closes without a word",
		},
		scenario{
			name: "raw_admin_bare_newline",
			run: func(e *env) {
				c := e.dial("admin")
				// gearmand takes every line end for "\r\n" and drops
				// the last character of a line that ends in a bare "\n".
				c.Write([]byte("create function " + e.fn("bare") + "\n"))
				c.recv()
				c.SendLine("status")
				c.list()
			},
			want: `
admin: OK
admin: raw_admin_bare_newline.bar	0	0	0
admin: .`,
			gearproxyWants: `
admin: OK
admin: raw_admin_bare_newline.bare	0	0	0
admin: .`,
			why: "admin lines end at \"\\n\" with one \"\\r\" stripped; gearmand takes every line end for \"\\r\\n\" and drops the last character of a bare \"\\n\" line",
		},
		scenario{
			name: "raw_get_status_long_handle",
			run: func(e *env) {
				c := e.dial("client")
				c.Send(P.GetStatus, strings.Repeat("h", 70))
				c.quiet(ioTimeout)
				c.Send(P.EchoReq, "after")
				c.quiet(ioTimeout)
			},
			want: `
client: closed
client: closed`,
			gearproxyWants: `
client: STATUS_RES "H1" "0" "0" "0" "0"
client: ECHO_RES "after"`,
			why: "an unknown handle of any length is answered as unknown; gearmand drops the connection on a handle over 63 bytes",
		},
		scenario{
			name: "raw_can_do_timeout_requeue",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJob, f, "", "slow")
				h := c.handle()
				w1 := e.dial("w1")
				w1.Send(P.CanDoTimeout, f, "1000")
				w1.Send(P.GrabJob)
				w1.recv()
				w1.Send(P.WorkStatus, h, "1", "2")
				c.recv()
				w2 := e.worker("w2", f)
				w2.Send(P.PreSleep)
				w2.recv() // NOOP once the timeout requeues the job
				w2.Send(P.GrabJob)
				w2.recv()
				w1.Send(P.WorkComplete, h, "late")
				w1.recv()
				w2.Send(P.WorkComplete, h, "on time")
				c.recv()
			},
			want: `
client: JOB_CREATED "H1"
w1: JOB_ASSIGN "H1" "raw_can_do_timeout_requeue.f" "slow"
client: WORK_STATUS "H1" "1" "2"
w2: NOOP
w2: JOB_ASSIGN "H1" "raw_can_do_timeout_requeue.f" "slow"
w1: ERROR "JOB_NOT_FOUND" "Job given in work result not found"
client: WORK_COMPLETE "H1" "on time"`,
		},
		scenario{
			name: "raw_worker_disconnect_requeue",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJob, f, "", "job")
				h := c.handle()
				w1 := e.worker("w1", f)
				w1.Send(P.GrabJob)
				w1.recv()
				w1.Send(P.WorkStatus, h, "5", "6")
				c.recv()
				w2 := e.worker("w2", f)
				w2.Send(P.PreSleep)
				w1.Close()
				w2.recv() // NOOP once the job is requeued
				c.Send(P.GetStatus, h)
				c.recv()
				w2.Send(P.GrabJob)
				w2.recv()
				w2.Send(P.WorkComplete, h, "second try")
				c.recv()
			},
			want: `
client: JOB_CREATED "H1"
w1: JOB_ASSIGN "H1" "raw_worker_disconnect_requeue.f" "job"
client: WORK_STATUS "H1" "5" "6"
w2: NOOP
client: STATUS_RES "H1" "1" "0" "0" "0"
w2: JOB_ASSIGN "H1" "raw_worker_disconnect_requeue.f" "job"
client: WORK_COMPLETE "H1" "second try"`,
		},
		scenario{
			name: "raw_job_retries",
			run: func(e *env) {
				tg := e.fresh(ServerOptions{JobRetries: 1})
				f := e.fn("f")
				c := e.dialAddr("client", tg.Addr)
				c.Send(P.SubmitJob, f, "", "job")
				c.handle()
				w1 := e.dialAddr("w1", tg.Addr)
				w1.Send(P.CanDo, f)
				w1.Send(P.GrabJob)
				w1.recv()
				w1.Close()
				c.recv()
				w2 := e.dialAddr("w2", tg.Addr)
				w2.Send(P.CanDo, f)
				w2.Send(P.GrabJob)
				w2.recv()
			},
			want: `
client: JOB_CREATED "H1"
w1: JOB_ASSIGN "H1" "raw_job_retries.f" "job"
client: WORK_FAIL "H1"
w2: NO_JOB`,
		},
		scenario{
			name: "raw_maxqueue",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.SendLine("create function " + f)
				c.recv()
				c.SendLine("maxqueue " + f + " 2")
				c.recv()
				c.Write(pipeline(
					Packet(P.SubmitJobBg, f, "", "1"),
					Packet(P.SubmitJob, f, "", "2"),
					Packet(P.SubmitJobBg, f, "", "3"),
					Packet(P.SubmitJobHigh, f, "", "4"),
					Packet(P.EchoReq, "after"),
				))
				c.recvN(5)
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				// maxqueue counts running jobs too.
				c.Send(P.SubmitJobBg, f, "", "5")
				c.recv()
				c.SendLine("status")
				c.list()
			},
			want: `
client: OK
client: OK
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
client: ERROR "QUEUE_ERROR" "Job queue is full"
client: ERROR "QUEUE_ERROR" "Job queue is full"
client: ECHO_RES "after"
worker: JOB_ASSIGN "H1" "raw_maxqueue.f" "1"
client: ERROR "QUEUE_ERROR" "Job queue is full"
client: raw_maxqueue.f	2	1	1
client: .`,
		},
		scenario{
			name: "raw_maxqueue_per_priority",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.SendLine("create function " + f)
				c.recv()
				c.SendLine("maxqueue " + f + " 3 2 1")
				c.recv()
				c.Write(pipeline(
					Packet(P.SubmitJobLowBg, f, "", "low1"),
					Packet(P.SubmitJobLowBg, f, "", "low2"),
					Packet(P.SubmitJobBg, f, "", "normal1"),
					Packet(P.SubmitJobBg, f, "", "normal2"),
					Packet(P.SubmitJobHighBg, f, "", "high1"),
					Packet(P.SubmitJobHighBg, f, "", "high2"),
				))
				c.recvN(6)
				c.SendLine("prioritystatus")
				c.list()
			},
			want: `
client: OK
client: OK
client: JOB_CREATED "H1"
client: ERROR "QUEUE_ERROR" "Job queue is full"
client: JOB_CREATED "H2"
client: ERROR "QUEUE_ERROR" "Job queue is full"
client: JOB_CREATED "H3"
client: ERROR "QUEUE_ERROR" "Job queue is full"
client: raw_maxqueue_per_priority.f	1	1	1	0
client: .`,
		},
		scenario{
			name: "raw_maxqueue_before_function_exists",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.SendLine("maxqueue " + f + " 1")
				c.recv()
				c.Send(P.SubmitJobBg, f, "", "1")
				c.recv()
				c.Send(P.SubmitJobBg, f, "", "2")
				c.recv()
			},
			want: `
client: OK
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"`,
		},
		scenario{
			name: "raw_cancel_job",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJobBg, f, "", "doomed")
				h := c.handle()
				c.Send(P.SubmitJobBg, f, "", "kept")
				c.handle()
				a := e.dial("admin")
				a.SendLine("cancel job " + h)
				a.recv()
				a.SendLine("cancel job " + h)
				a.recv()
				c.Send(P.GetStatus, h)
				c.recv()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.GrabJob)
				w.recv()
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
admin: OK
admin: OK
client: STATUS_RES "H1" "1" "0" "0" "0"
worker: JOB_ASSIGN "H2" "raw_cancel_job.f" "kept"
worker: NO_JOB`,
			gearproxyWants: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
admin: OK
admin: ERR UNKNOWN_JOB
client: STATUS_RES "H1" "0" "0" "0" "0"
worker: JOB_ASSIGN "H2" "raw_cancel_job.f" "kept"
worker: NO_JOB`,
			why: "cancel job ends the job at once: a second cancel is ERR UNKNOWN_JOB and GET_STATUS says unknown; gearmand answers OK twice and keeps reporting the cancelled job as known",
		},
		scenario{
			name: "raw_cancel_running_job",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJob, f, "", "running")
				h := c.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				a := e.dial("admin")
				a.SendLine("cancel job " + h)
				a.recv()
				c.recv()
				w.Send(P.WorkComplete, h, "late")
				w.echoCheck("after")
				c.quiet(quietWait)
				c.Send(P.GetStatus, h)
				c.recv()
			},
			want: `
client: JOB_CREATED "H1"
worker: JOB_ASSIGN "H1" "raw_cancel_running_job.f" "running"
admin: OK
client: WORK_FAIL "H1"
worker: ECHO_RES "after"
client: WORK_COMPLETE "H1" "late"
client: STATUS_RES "H1" "0" "0" "0" "0"`,
			gearproxyWants: `
client: JOB_CREATED "H1"
worker: JOB_ASSIGN "H1" "raw_cancel_running_job.f" "running"
admin: OK
client: WORK_FAIL "H1"
worker: ECHO_RES "after"
client: (nothing)
client: STATUS_RES "H1" "0" "0" "0" "0"`,
			why: "a cancelled running job is over: its client gets WORK_FAIL and nothing after; gearmand also forwards the worker's late WORK_COMPLETE, a second final packet for one job",
		},
		scenario{
			name: "raw_create_drop_function",
			run: func(e *env) {
				f := e.fn("f")
				a := e.dial("admin")
				a.SendLine("create function " + f)
				a.recv()
				a.SendLine("status")
				a.list()
				a.SendLine("drop function " + f)
				a.recv()
				a.SendLine("status")
				a.list()
				a.SendLine("drop function " + e.fn("never"))
				a.recv()
			},
			want: `
admin: OK
admin: raw_create_drop_function.f	0	0	0
admin: .
admin: OK
admin: .
admin: ERR function not found`,
		},
		scenario{
			name: "raw_drop_function_queued",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJobBg, f, "", "queued")
				c.handle()
				a := e.dial("admin")
				a.SendLine("drop function " + f)
				a.recv()
				a.SendLine("status")
				a.list()
			},
			want: `
client: JOB_CREATED "H1"
admin: OK
admin: .`,
			gearproxyWants: `
client: JOB_CREATED "H1"
admin: ERR {any}
admin: raw_drop_function_queued.f	1	0	0
admin: .`,
			why: "drop function refuses while jobs are queued instead of orphaning them",
		},
		scenario{
			name: "raw_reduce_passthrough",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitReduceJobBackground, f, "ru", "reducer", "aggregator", "data")
				c.handle()
				c.Send(P.SubmitReduceJob, f, "ru2", "reducer2", "", "data2")
				c.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJobAll)
				w.recv()
				w.Send(P.GrabJobUniq)
				h := w.recv().Args[0]
				w.Send(P.WorkComplete, h, "reduced")
				c.recv()
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
worker: JOB_ASSIGN_ALL "H1" "raw_reduce_passthrough.f" "ru" "reducer" "data"
worker: JOB_ASSIGN_UNIQ "H2" "raw_reduce_passthrough.f" "ru2" "data2"
client: WORK_COMPLETE "H2" "reduced"`,
		},
		scenario{
			name: "raw_sleep_wakeup",
			run: func(e *env) {
				f := e.fn("f")
				w := e.worker("worker", f)
				w.Send(P.PreSleep)
				c := e.dial("client")
				c.Send(P.SubmitJobBg, f, "", "wake")
				c.handle()
				w.recv()
				w.Send(P.PreSleep)
				w.recv()
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.GrabJob)
				w.recv()
			},
			want: `
client: JOB_CREATED "H1"
worker: NOOP
worker: NOOP
worker: JOB_ASSIGN "H1" "raw_sleep_wakeup.f" "wake"
worker: NO_JOB`,
		},
		scenario{
			name: "raw_noop_once_per_sleep",
			run: func(e *env) {
				f, g := e.fn("f"), e.fn("g")
				w := e.worker("worker", f, g)
				w.Send(P.PreSleep)
				idle := e.dial("idle") // sleeps without abilities
				idle.Send(P.PreSleep)
				c := e.dial("client")
				c.Send(P.SubmitJobBg, g, "", "1")
				c.handle()
				c.Send(P.SubmitJobBg, f, "", "2")
				c.handle()
				w.recv()
				w.echoCheck("only one NOOP before this")
				idle.echoCheck("no NOOP before this")
				for i := 0; i < 3; i++ {
					w.Send(P.GrabJob)
					w.recv()
				}
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
worker: NOOP
worker: ECHO_RES "only one NOOP before this"
idle: ECHO_RES "no NOOP before this"
worker: JOB_ASSIGN "H1" "raw_noop_once_per_sleep.g" "1"
worker: JOB_ASSIGN "H2" "raw_noop_once_per_sleep.f" "2"
worker: NO_JOB`,
		},
		scenario{
			name: "raw_grab_variants",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				for _, d := range []string{"a", "b", "c"} {
					c.Send(P.SubmitJobBg, f, "u"+d, d)
					c.handle()
				}
				w := e.worker("worker", f)
				for _, g := range []P.Type{P.GrabJob, P.GrabJobUniq, P.GrabJobAll, P.GrabJobAll} {
					w.Send(g)
					w.recv()
				}
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
client: JOB_CREATED "H3"
worker: JOB_ASSIGN "H1" "raw_grab_variants.f" "a"
worker: JOB_ASSIGN_UNIQ "H2" "raw_grab_variants.f" "ub" "b"
worker: JOB_ASSIGN_UNIQ "H3" "raw_grab_variants.f" "uc" "c"
worker: NO_JOB`,
		},
		scenario{
			name: "raw_abilities",
			run: func(e *env) {
				f, g := e.fn("f"), e.fn("g")
				c := e.dial("client")
				c.Send(P.SubmitJobBg, f, "", "x")
				c.handle()
				w := e.dial("worker")
				w.Send(P.CanDo, f)
				w.Send(P.CanDo, f)
				w.Send(P.CantDo, f)
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.CanDo, g)
				w.Send(P.CanDo, f)
				w.Send(P.ResetAbilities)
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.CanDo, f)
				w.Send(P.GrabJob)
				w.recv()
			},
			want: `
client: JOB_CREATED "H1"
worker: NO_JOB
worker: NO_JOB
worker: JOB_ASSIGN "H1" "raw_abilities.f" "x"`,
		},
		scenario{
			name: "raw_work_from_other_worker",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJob, f, "", "x")
				h := c.handle()
				w1 := e.worker("w1", f)
				w1.Send(P.GrabJob)
				w1.recv()
				w2 := e.worker("w2", f)
				w2.Send(P.WorkComplete, h, "not mine")
				w2.recv()
				w2.Send(P.WorkComplete, "H:nosuch:1", "no job")
				w2.recv()
				w1.Send(P.WorkComplete, h, "mine")
				c.recv()
			},
			want: `
client: JOB_CREATED "H1"
w1: JOB_ASSIGN "H1" "raw_work_from_other_worker.f" "x"
w2: ERROR "JOB_NOT_FOUND" "Job given in work result not found"
w2: ERROR "JOB_NOT_FOUND" "Job given in work result not found"
client: WORK_COMPLETE "H1" "mine"`,
		},
		scenario{
			name: "raw_exception_without_option",
			run: func(e *env) {
				f := e.fn("f")
				plain := e.dial("plain")
				plain.Send(P.SubmitJob, f, "", "x")
				h1 := plain.handle()
				opt := e.dial("exceptions")
				opt.Send(P.OptionReq, "exceptions")
				opt.recv()
				opt.Send(P.SubmitJob, f, "", "y")
				h2 := opt.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.WorkException, h1, "boom")
				plain.recv()
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.WorkException, h2, "boom")
				opt.recv()
			},
			want: `
plain: JOB_CREATED "H1"
exceptions: OPTION_RES "exceptions"
exceptions: JOB_CREATED "H2"
worker: JOB_ASSIGN "H1" "raw_exception_without_option.f" "x"
plain: WORK_FAIL "H1\x00"
worker: JOB_ASSIGN "H2" "raw_exception_without_option.f" "y"
exceptions: WORK_EXCEPTION "H2" "boom"`,
			gearproxyWants: `
plain: JOB_CREATED "H1"
exceptions: OPTION_RES "exceptions"
exceptions: JOB_CREATED "H2"
worker: JOB_ASSIGN "H1" "raw_exception_without_option.f" "x"
plain: WORK_FAIL "H1"
worker: JOB_ASSIGN "H2" "raw_exception_without_option.f" "y"
exceptions: WORK_EXCEPTION "H2" "boom"`,
			why: "a client without the exceptions option gets a clean WORK_FAIL; gearmand appends a stray NUL to the handle",
		},
		scenario{
			name: "raw_epoch_wakes_worker",
			run: func(e *env) {
				f := e.fn("f")
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				due := time.Now().Add(2 * time.Second).Unix()
				c := e.dial("client")
				c.Send(P.SubmitJobEpoch, f, "", itoa(due), "later")
				c.handle()
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.PreSleep)
				// Wait until a second after the job is due; gearmand
				// never wakes the worker.
				w.quiet(time.Until(time.Unix(due+1, 0)) + time.Second)
				if now := time.Now().Unix(); now < due {
					e.Logf("worker: woken %ds before the job is due", due-now)
				}
				w.Send(P.GrabJob)
				w.recv()
			},
			want: `
worker: NO_JOB
client: JOB_CREATED "H1"
worker: NO_JOB
worker: (nothing)
worker: JOB_ASSIGN "H1" "raw_epoch_wakes_worker.f" "later"`,
			gearproxyWants: `
worker: NO_JOB
client: JOB_CREATED "H1"
worker: NO_JOB
worker: NOOP
worker: JOB_ASSIGN "H1" "raw_epoch_wakes_worker.f" "later"`,
			why: "an epoch job that falls due wakes sleeping workers; gearmand leaves them asleep",
		},
		scenario{
			name: "raw_binary_payloads",
			run: func(e *env) {
				f := e.fn("f")
				big := strings.Repeat("0123456789abcdef\x00", 1<<16) // 1.1 MiB with NULs
				c := e.dial("client")
				c.Send(P.EchoReq, "a\x00b\x00")
				c.recv()
				c.Send(P.SubmitJob, f, "", big)
				h := c.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				r := w.Recv()
				e.Logf("worker: %s %d bytes, intact %v", r.Type, len(r.Args[2]), r.Args[2] == big)
				w.Send(P.WorkData, h, "\x00data\x00")
				c.recv()
				w.Send(P.WorkComplete, h, big+big)
				r = c.Recv()
				e.Logf("client: %s %d bytes, intact %v", r.Type, len(r.Args[1]), r.Args[1] == big+big)
			},
			want: `
client: ECHO_RES "a\x00b\x00"
client: JOB_CREATED "H1"
worker: JOB_ASSIGN 1114112 bytes, intact true
client: WORK_DATA "H1" "\x00data\x00"
client: WORK_COMPLETE 2228224 bytes, intact true`,
		},
		scenario{
			name: "raw_past_epoch",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJobEpoch, f, "", "1", "epoch in the past")
				c.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJobUniq)
				w.recv()
			},
			want: `
client: JOB_CREATED "H1"
worker: JOB_ASSIGN_UNIQ "H1" "raw_past_epoch.f" "" "epoch in the past"`,
		},
		scenario{
			name: "raw_fg_client_gone_while_queued",
			run: func(e *env) {
				f, u := e.fn("f"), e.fn("u")
				c := e.dial("client")
				c.Send(P.SubmitJob, f, u, "abandoned")
				h := c.handle()
				c.Send(P.SubmitJob, f, "", "kept")
				c.handle()
				bg := e.dial("bg")
				bg.Send(P.SubmitJobBg, f, "", "background")
				bg.handle()
				c.Close()
				e.waitClients(u, 0)
				s := e.dial("status")
				s.Send(P.GetStatus, h)
				s.recv()
				w := e.worker("worker", f)
				for i := 0; i < 2; i++ {
					w.Send(P.GrabJobUniq)
					w.recv()
				}
				s.Send(P.GetStatus, h)
				s.recv()
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
bg: JOB_CREATED "H3"
status: STATUS_RES "H1" "1" "0" "0" "0"
worker: JOB_ASSIGN_UNIQ "H3" "raw_fg_client_gone_while_queued.f" "" "background"
worker: NO_JOB
status: STATUS_RES "H1" "0" "0" "0" "0"`,
		},
		scenario{
			name: "raw_fg_client_gone_while_running",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJob, f, e.fn("u"), "x")
				h := c.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				c.Close()
				w.Send(P.WorkData, h, "nobody listens")
				w.Send(P.WorkComplete, h, "done")
				w.echoCheck("worker still served")
				s := e.dial("status")
				s.Send(P.GetStatus, h)
				s.recv()
				s.Send(P.GetStatusUnique, e.fn("u"))
				s.recv()
			},
			want: `
client: JOB_CREATED "H1"
worker: JOB_ASSIGN "H1" "raw_fg_client_gone_while_running.f" "x"
worker: ECHO_RES "worker still served"
status: STATUS_RES "H1" "0" "0" "0" "0"
status: STATUS_RES_UNIQUE "raw_fg_client_gone_while_running.u" "0" "0" "0" "0" "0"`,
		},
		scenario{
			name: "raw_submit_job_sched",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJobSched, f, "", "*", "*", "*", "*", "*", "sched")
				c.quiet(ioTimeout)
				c.Send(P.EchoReq, "after")
				c.quiet(ioTimeout)
			},
			want: `
client: ERROR "INVALID_COMMAND" "Command not expected"
client: ECHO_RES "after"`,
			gearproxyWants: `
client: JOB_CREATED "H1"
client: ECHO_RES "after"`,
			why: "SUBMIT_JOB_SCHED is implemented (one-shot at the next matching minute); gearmand 1.1.20 never implemented it",
		},
		scenario{
			name: "raw_worker_holds_two_jobs",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJob, f, "", "first")
				h1 := c.handle()
				c.Send(P.SubmitJob, f, "", "second")
				h2 := c.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.WorkComplete, h2, "2")
				c.recv()
				w.Send(P.WorkFail, h1)
				c.recv()
				w.Send(P.WorkComplete, h1, "again")
				w.recv()
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
worker: JOB_ASSIGN "H1" "raw_worker_holds_two_jobs.f" "first"
worker: JOB_ASSIGN "H2" "raw_worker_holds_two_jobs.f" "second"
client: WORK_COMPLETE "H2" "2"
client: WORK_FAIL "H1"
worker: ERROR "JOB_NOT_FOUND" "Job given in work result not found"`,
		},
		scenario{
			name: "raw_submit_job_sched_runs",
			slow: true,
			run: func(e *env) {
				f := e.fn("f")
				w := e.worker("worker", f)
				w.Send(P.PreSleep)
				due := time.Now().Truncate(time.Minute).Add(time.Minute)
				c := e.dial("client")
				c.Send(P.SubmitJobSched, f, "", itoa(int64(due.Minute())), "*", "*", "*", "*", "next minute")
				c.recv()
				w.quiet(time.Until(due) + quietWait)
				if time.Now().Before(due) {
					e.Logf("worker: woken %s before the job is due", time.Until(due).Round(time.Second))
				}
				w.Send(P.GrabJob)
				w.recv()
			},
			want: `
client: ERROR "INVALID_COMMAND" "Command not expected"
worker: (nothing)
worker: NO_JOB`,
			gearproxyWants: `
client: JOB_CREATED "H1"
worker: NOOP
worker: JOB_ASSIGN "H1" "raw_submit_job_sched_runs.f" "next minute"`,
			why: "SUBMIT_JOB_SCHED runs once at the next minute that matches its fields and wakes sleeping workers then; gearmand 1.1.20 never implemented it",
		},
		scenario{
			name: "raw_empty_arguments",
			run: func(e *env) {
				c := e.dial("client")
				for _, p := range [][]byte{
					Packet(P.EchoReq, ""),
					Packet(P.SubmitJobBg, e.fn("f"), "", ""),
					Packet(P.SubmitJobBg, "", "", "no function"),
					Packet(P.GetStatus, ""),
					Packet(P.GetStatusUnique, ""),
					Packet(P.SetClientID, ""),
					Packet(P.OptionReq, "exceptions"),
					Packet(P.OptionReq, "exceptions"),
				} {
					c.Write(p)
					c.quiet(quietWait)
				}
				w := e.dial("worker")
				w.Send(P.CanDo, "")
				w.Send(P.CanDo, e.fn("f"))
				w.Send(P.GrabJobUniq)
				w.recv()
				w.Send(P.GrabJobUniq)
				w.recv()
			},
			want: `
client: ECHO_RES ""
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
client: STATUS_RES "" "0" "0" "0" "0"
client: STATUS_RES_UNIQUE "" "0" "0" "0" "0" "0"
client: (nothing)
client: OPTION_RES "exceptions"
client: OPTION_RES "exceptions"
worker: JOB_ASSIGN_UNIQ "H1" "raw_empty_arguments.f" "" ""
worker: JOB_ASSIGN_UNIQ "H2" "" "" "no function"`,
		},
		scenario{
			name: "raw_work_status_values",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJob, f, "", "x")
				h := c.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				s := e.dial("status")
				for _, nd := range [][2]string{{"abc", "10x"}, {"4294967295", "-1"}, {"", ""}, {" 7", "8 "}} {
					w.Send(P.WorkStatus, h, nd[0], nd[1])
					c.recv()
					s.Send(P.GetStatus, h)
					s.recv()
				}
			},
			want: `
client: JOB_CREATED "H1"
worker: JOB_ASSIGN "H1" "raw_work_status_values.f" "x"
client: WORK_STATUS "H1" "abc" "10x"
status: STATUS_RES "H1" "1" "1" "0" "10"
client: WORK_STATUS "H1" "4294967295" "-1"
status: STATUS_RES "H1" "1" "1" "4294967295" "4294967295"
client: WORK_STATUS "H1" "" ""
status: STATUS_RES "H1" "1" "1" "0" "0"
client: WORK_STATUS "H1" " 7" "8 "
status: STATUS_RES "H1" "1" "1" "7" "8"`,
		},
		scenario{
			name: "raw_admin_variants",
			run: func(e *env) {
				f := e.fn("f")
				w := e.dial("worker")
				w.Send(P.CanDo, f)
				w.Send(P.CanDo, f)
				w.Send(P.CantDo, e.fn("never"))
				w.echoCheck("sync")
				a := e.dial("admin")
				for _, l := range []string{"STATUS", "Status", "prioritystatus extra args"} {
					a.SendLine(l)
					a.list()
				}
				a.SendLine("maxqueue " + f)
				a.recv()
				a.SendLine("show")
				a.recv()
				a.SendLine("SHOW JOBS")
				a.list()
				a.echoCheck("binary after text")
			},
			want: `
worker: ECHO_RES "sync"
admin: raw_admin_variants.f	0	0	2
admin: .
admin: raw_admin_variants.f	0	0	2
admin: .
admin: raw_admin_variants.f	0	0	0	2
admin: .
admin: OK
admin: ERR UNKNOWN_COMMAND Unknown+server+commandshow
admin: .
admin: ECHO_RES "binary after text"`,
		},
		scenario{
			name: "raw_admin_leading_space",
			run: func(e *env) {
				a := e.dial("admin")
				a.SendLine(" version")
				a.quiet(quietWait)
				a.SendLine("version")
				a.quiet(quietWait)
			},
			want: `
admin: ERR UNKNOWN_COMMAND Unknown+server+command
admin: OK <version>`,
			gearproxyWants: `
admin: OK <version>
admin: OK <version>`,
			why: "empty tokens (leading or repeated spaces) are skipped; gearmand splits on every space and takes the empty first token for the command",
		},
		scenario{
			name: "raw_work_status_overflow",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJob, f, "", "x")
				h := c.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.WorkStatus, h, "99999999999999999999", "4294967296")
				c.recv()
				c.Send(P.GetStatus, h)
				c.recv()
			},
			want: `
client: JOB_CREATED "H1"
worker: JOB_ASSIGN "H1" "raw_work_status_overflow.f" "x"
client: WORK_STATUS "H1" "99999999999999999999" "4294967296"
client: STATUS_RES "H1" "1" "1" "4294967295" "0"`,
		},
		scenario{
			name: "raw_admin_empty_line",
			run: func(e *env) {
				a := e.dial("admin")
				a.SendLine("")
				a.quiet(quietWait)
			},
			want: `
admin: ERR UNKNOWN_COMMAND Unknown+server+command`,
		},
		scenario{
			name: "raw_admin_trailing_spaces",
			run: func(e *env) {
				a := e.dial("admin")
				a.SendLine("version  ")
				a.quiet(quietWait)
				a.quiet(quietWait)
				a.SendLine("status  ")
				a.list()
				a.quiet(quietWait)
				a.echoCheck("after")
			},
			want: `
admin: OK <version>
admin: (nothing)
admin: .
admin: (nothing)
admin: ECHO_RES "after"`,
		},
		scenario{
			name: "raw_epoch_odd_values",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				future := itoa(time.Now().Add(time.Hour).Unix())
				for _, ep := range []string{"abc", "", "-5", "0", future} {
					c.Send(P.SubmitJobEpoch, f, "", ep, "epoch "+ep)
					c.quiet(quietWait)
				}
				w := e.worker("worker", f)
				for i := 0; i < 5; i++ {
					w.Send(P.GrabJob)
					w.recv()
				}
				c.SendLine("status")
				c.list()
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
client: JOB_CREATED "H3"
client: JOB_CREATED "H4"
client: JOB_CREATED "H5"
worker: JOB_ASSIGN "H1" "raw_epoch_odd_values.f" "epoch abc"
worker: JOB_ASSIGN "H2" "raw_epoch_odd_values.f" "epoch "
worker: JOB_ASSIGN "H3" "raw_epoch_odd_values.f" "epoch -5"
worker: JOB_ASSIGN "H4" "raw_epoch_odd_values.f" "epoch 0"
worker: NO_JOB
client: raw_epoch_odd_values.f	5	4	1
client: .`,
		},
		scenario{
			name: "raw_can_do_timeout_values",
			run: func(e *env) {
				f, g := e.fn("f"), e.fn("g")
				c := e.dial("client")
				c.Send(P.SubmitJob, f, "", "no timeout")
				c.handle()
				c.Send(P.SubmitJob, g, "", "short timeout")
				c.handle()
				w1 := e.dial("w1")
				w1.Send(P.CanDoTimeout, f, "0")
				w1.Send(P.GrabJob)
				w1.recv()
				w1b := e.dial("w1b")
				w1b.Send(P.CanDoTimeout, g, "1")
				w1b.Send(P.GrabJob)
				w1b.recv()
				w2 := e.worker("w2", f, g)
				w2.Send(P.PreSleep)
				w2.recv() // the short timeout requeues g's job
				w2.Send(P.GrabJob)
				w2.recv()
				w2.Send(P.GrabJob)
				w2.recv()
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
w1: JOB_ASSIGN "H1" "raw_can_do_timeout_values.f" "no timeout"
w1b: JOB_ASSIGN "H2" "raw_can_do_timeout_values.g" "short timeout"
w2: NOOP
w2: JOB_ASSIGN "H2" "raw_can_do_timeout_values.g" "short timeout"
w2: NO_JOB`,
		},
		scenario{
			name: "raw_can_do_timeout_two_jobs_one_worker",
			run: func(e *env) {
				f, g := e.fn("f"), e.fn("g")
				c := e.dial("client")
				c.Send(P.SubmitJob, g, "", "short timeout")
				c.handle()
				c.Send(P.SubmitJob, f, "", "no timeout")
				c.handle()
				w1 := e.dial("w1")
				w1.Send(P.CanDo, f)
				w1.Send(P.CanDoTimeout, g, "1000") // scanned first: g's job comes first
				w1.Send(P.GrabJob)
				w1.recv()
				w1.Send(P.GrabJob)
				w1.recv()
				w2 := e.worker("w2", g)
				w2.Send(P.PreSleep)
				// gearmand keeps one timer per connection, for the job
				// it grabbed last: g's timeout is forgotten there.
				w2.quiet(time.Second + quietWait)
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
w1: JOB_ASSIGN "H1" "raw_can_do_timeout_two_jobs_one_worker.g" "short timeout"
w1: JOB_ASSIGN "H2" "raw_can_do_timeout_two_jobs_one_worker.f" "no timeout"
w2: (nothing)`,
			gearproxyWants: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
w1: JOB_ASSIGN "H1" "raw_can_do_timeout_two_jobs_one_worker.g" "short timeout"
w1: JOB_ASSIGN "H2" "raw_can_do_timeout_two_jobs_one_worker.f" "no timeout"
w2: NOOP`,
			why: "every assignment of every job has its own CAN_DO_TIMEOUT timer; gearmand keeps one per connection, for the job grabbed last, and forgets the others",
		},
		scenario{
			name: "raw_coalesce_keeps_first_priority",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJobLowBg, f, "u", "low first")
				c.handle()
				c.Send(P.SubmitJobBg, f, "", "normal")
				c.handle()
				fg := e.dial("fg")
				fg.Send(P.SubmitJobHigh, f, "u", "high joins")
				fg.handle()
				c.SendLine("prioritystatus")
				c.list()
				w := e.worker("worker", f)
				w.Send(P.GrabJobUniq)
				w.recv()
				c.SendLine("prioritystatus")
				c.list()
				w.Send(P.GrabJobUniq)
				h := w.recv().Args[0]
				w.Send(P.WorkComplete, h, "done")
				fg.recv()
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
fg: JOB_CREATED "H1"
client: raw_coalesce_keeps_first_priority.f	0	1	1	0
client: .
worker: JOB_ASSIGN_UNIQ "H2" "raw_coalesce_keeps_first_priority.f" "" "normal"
client: raw_coalesce_keeps_first_priority.f	0	0	1	1
client: .
worker: JOB_ASSIGN_UNIQ "H1" "raw_coalesce_keeps_first_priority.f" "u" "low first"
fg: WORK_COMPLETE "H1" "done"`,
		},
		scenario{
			name: "raw_epoch_coalesce",
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				later := itoa(time.Now().Add(time.Hour).Unix())
				u := e.fn("u") // GET_STATUS_UNIQUE is not scoped to a function
				c.Send(P.SubmitJobEpoch, f, u, later, "in an hour")
				c.handle()
				c.Send(P.SubmitJobBg, f, u, "now")
				c.handle()
				c.Send(P.GetStatusUnique, u)
				c.recv()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H1"
client: STATUS_RES_UNIQUE "raw_epoch_coalesce.u" "1" "0" "0" "0" "0"
worker: NO_JOB`,
		},
		scenario{
			name: "raw_abilities_change_while_running",
			// RESET_ABILITIES hands the worker's running job back to the
			// queue, at its tail; the worker's result is then JOB_NOT_FOUND.
			run: func(e *env) {
				f := e.fn("f")
				c := e.dial("client")
				c.Send(P.SubmitJob, f, "", "one")
				h1 := c.handle()
				c.Send(P.SubmitJob, f, "", "two")
				c.handle()
				w := e.worker("worker", f)
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.ResetAbilities)
				w.Send(P.WorkComplete, h1, "still mine")
				w.quiet(quietWait)
				c.quiet(quietWait)
				w.Send(P.CanDo, f)
				w.Send(P.GrabJob)
				w.recv()
				w.Send(P.CantDo, f)
				w.Close()
				w2 := e.worker("w2", f)
				w2.Send(P.PreSleep)
				w2.recv()
				w2.Send(P.GrabJob)
				w2.recv()
			},
			want: `
client: JOB_CREATED "H1"
client: JOB_CREATED "H2"
worker: JOB_ASSIGN "H1" "raw_abilities_change_while_running.f" "one"
worker: ERROR "JOB_NOT_FOUND" "Job given in work result not found"
client: (nothing)
worker: JOB_ASSIGN "H2" "raw_abilities_change_while_running.f" "two"
w2: NOOP
w2: JOB_ASSIGN "H1" "raw_abilities_change_while_running.f" "one"`,
		},
		scenario{
			name: "raw_set_client_id_workers",
			run: func(e *env) {
				f, g := e.fn("f"), e.fn("g")
				w := e.dial("worker")
				w.Send(P.SetClientID, e.fn("id"))
				w.Send(P.CanDo, f)
				w.Send(P.CanDo, g)
				w2 := e.worker("anon", e.fn("h"))
				w2.echoCheck("sync")
				w.echoCheck("sync")
				a := e.dial("admin")
				a.SendLine("workers")
				a.list()
			},
			want: `
anon: ECHO_RES "sync"
worker: ECHO_RES "sync"
admin: <fd> 127.0.0.1 - : raw_set_client_id_workers.h
admin: <fd> 127.0.0.1 raw_set_client_id_workers.id : raw_set_client_id_workers.g raw_set_client_id_workers.f
admin: .`,
		},
	)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
