package test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/protocol"
)

// statusRow is the row of an admin status listing for fn, "" when absent.
func statusRow(lines []string, fn string) string {
	for _, l := range lines {
		if strings.HasPrefix(l, fn+"\t") {
			return l
		}
	}
	return ""
}

func TestSecurityACL(t *testing.T) {
	t.Parallel()
	sp := startSecureProxy(t, newTestPKI(t, "ca"), "")

	t.Run("forbidden submit answers in its reply slot", func(t *testing.T) {
		c := sp.rawAuthed(t, "alice")
		c.Write(append(append(append(append(
			Packet(protocol.SubmitJobBg, "img.a", "", "1"),
			Packet(protocol.SubmitJobBg, "img.internal.keys", "", "2")...),
			Packet(protocol.SubmitJobBg, "other.fn", "", "3")...),
			Packet(protocol.SubmitReduceJobBackground, "img.map", "", "other.reduce", "", "4")...),
			Packet(protocol.SubmitJobBg, "img.b", "", "5")...))
		want := []string{"JOB_CREATED", "PERMISSION_DENIED", "PERMISSION_DENIED", "PERMISSION_DENIED", "JOB_CREATED"}
		for i, w := range want {
			r := c.Recv()
			if got := map[bool]string{true: "JOB_CREATED", false: errorCode(r)}[r.Type == protocol.JobCreated]; got != w {
				t.Fatalf("reply %d: %v, want %s", i+1, r, w)
			}
		}
		sp.waitLog(t, "acl.deny", "user=alice", "function=img.internal.keys", "rule=")
		sp.waitLog(t, "acl.deny", "user=alice", "function=other.reduce")
	})
	t.Run("forbidden CAN_DO is registered nowhere", func(t *testing.T) {
		c := sp.rawAuthed(t, "bob")
		c.Send(protocol.CanDo, "secret.fn")
		if r := c.Recv(); errorCode(r) != "PERMISSION_DENIED" {
			t.Fatalf("CAN_DO secret.fn: %v", r)
		}
		c.Send(protocol.CanDo, "img.ok")
		c.Send(protocol.EchoReq, "sync")
		c.Expect(protocol.EchoRes, "sync")
		for _, l := range sp.adminAs(t, "root", "workers") {
			if strings.Contains(l, "secret.fn") {
				t.Fatalf("denied function registered: %q", l)
			}
		}
		sp.waitLog(t, "acl.deny", "user=bob", "verb=work", "function=secret.fn")
	})
	t.Run("forbidden admin command", func(t *testing.T) {
		c := sp.rawAuthed(t, "bob")
		c.SendLine("workers")
		if r := c.Recv(); !strings.HasPrefix(r.Line, "ERR PERMISSION_DENIED") {
			t.Fatalf("workers as bob: %v", r)
		}
		c.SendLine("status")
		c.RecvList()
		sp.waitLog(t, "acl.deny", "user=bob", "verb=admin", "function=workers")
	})
	t.Run("max_payload", func(t *testing.T) {
		c := sp.rawAuthed(t, "dave")
		c.Send(protocol.SubmitJobBg, "shared.big", "", strings.Repeat("x", 1001))
		c.Send(protocol.SubmitJobBg, "shared.big", "", strings.Repeat("x", 1000))
		if r := c.Recv(); errorCode(r) != "ARGUMENT_TOO_LARGE" {
			t.Fatalf("1001 bytes for dave: %v", r)
		}
		if r := c.Recv(); r.Type != protocol.JobCreated {
			t.Fatalf("1000 bytes for dave: %v", r)
		}
		sp.waitLog(t, "acl.deny", "user=dave", "rule=max_payload")
	})
	t.Run("max_connections", func(t *testing.T) {
		for range 3 {
			sp.rawAuthed(t, "dave")
		}
		_, err := client.Dial(context.Background(), sp.clientConfig("dave", "PLAIN"))
		var se *client.ServerError
		var ae *client.AuthError
		if err == nil || !(errors.As(err, &se) && se.Code == "TOO_MANY_CONNECTIONS" || errors.As(err, &ae) || strings.Contains(err.Error(), "TOO_MANY_CONNECTIONS")) {
			t.Fatalf("a 4th connection for dave (max_connections = 3): %v", err)
		}
		t.Logf("4th connection: %v", err)
	})
}

// Tenants share function names without meeting: separate jobs under the
// same unique, no status across, listings without the other's functions,
// and the namespace never shows.
func TestSecurityTenants(t *testing.T) {
	t.Parallel()
	sp := startSecureProxy(t, newTestPKI(t, "ca"), "")
	alice, bob := sp.rawAuthed(t, "alice"), sp.rawAuthed(t, "bob")

	// Same function and unique: coalescing would hand bob alice's job.
	alice.Send(protocol.SubmitJobBg, "img.q", "same", "alice's")
	ha := alice.Recv()
	bob.Send(protocol.SubmitJobBg, "img.q", "same", "bob's")
	hb := bob.Recv()
	if ha.Type != protocol.JobCreated || hb.Type != protocol.JobCreated {
		t.Fatalf("submits: %v / %v", ha, hb)
	}
	alice.Send(protocol.SubmitJobBg, "img.q", "only-alice", "x")
	hOnly := alice.Recv()

	// The worker of each tenant gets only its own job, named as its
	// client named it.
	for _, tc := range []struct{ user, data string }{{"alice", "alice's"}, {"bob", "bob's"}} {
		w := sp.rawAuthed(t, tc.user)
		w.Send(protocol.CanDo, "img.q")
		w.Send(protocol.GrabJobUniq)
		r := w.Recv()
		if r.Type != protocol.JobAssignUniq || r.Args[1] != "img.q" || r.Args[2] != "same" && r.Args[2] != "only-alice" {
			t.Fatalf("%s's worker: %v", tc.user, r)
		}
		if r.Args[2] == "same" && r.Args[3] != tc.data {
			t.Fatalf("%s's worker got %q: another tenant's job", tc.user, r.Args[3])
		}
		w.Close()
	}

	bob.Send(protocol.GetStatusUnique, "only-alice")
	if r := bob.Recv(); r.Type != protocol.StatusResUnique || r.Args[0] != "only-alice" || r.Args[1] != "0" {
		t.Fatalf("bob asking for alice's unique: %v, want unknown", r)
	}
	alice.Send(protocol.GetStatusUnique, "only-alice")
	if r := alice.Recv(); r.Type != protocol.StatusResUnique || r.Args[0] != "only-alice" || r.Args[1] != "1" {
		t.Fatalf("alice asking for her unique: %v, want known", r)
	}
	bob.Send(protocol.GetStatus, ha.Args[0])
	if r := bob.Recv(); r.Type != protocol.StatusRes || r.Args[1] != "0" {
		t.Fatalf("bob asking for alice's handle: %v, want unknown", r)
	}

	aliceStatus := sp.adminAs(t, "alice", "status")
	if statusRow(aliceStatus, "img.q") == "" {
		t.Fatalf("alice's status has no img.q: %q", aliceStatus)
	}
	for _, l := range aliceStatus {
		if strings.Contains(l, "alice.") || strings.Contains(l, "bob") || strings.HasPrefix(l, "shared.") {
			t.Fatalf("alice's status shows %q", l)
		}
	}
	for _, l := range sp.adminAs(t, "alice", "show unique jobs") {
		if l != "same" && l != "only-alice" {
			t.Fatalf("alice's show unique jobs shows %q", l)
		}
	}
	// Workers: each tenant sees its own functions, without the prefix.
	aw, bw := sp.rawAuthed(t, "alice"), sp.rawAuthed(t, "bob")
	aw.Send(protocol.CanDo, "img.mine")
	bw.Send(protocol.CanDo, "img.bobs")
	for _, w := range []*RawConn{aw, bw} {
		w.Send(protocol.EchoReq, "sync")
		w.Expect(protocol.EchoRes, "sync")
	}
	workers := strings.Join(sp.adminAs(t, "alice", "workers"), "\n")
	if !strings.Contains(workers, ": img.mine") || strings.Contains(workers, "bobs") || strings.Contains(workers, "alice.") {
		t.Fatalf("alice's workers:\n%s", workers)
	}
	// show jobs: only alice's jobs, under her handles: queued ...
	jobs := sp.adminAs(t, "alice", "show jobs")
	seen := false
	for _, l := range jobs {
		h, _, _ := strings.Cut(l, "\t")
		if h != ha.Args[0] && h != hOnly.Args[0] {
			t.Fatalf("alice's show jobs lists %q, not one of her jobs", l)
		}
		seen = seen || h == hOnly.Args[0]
	}
	if !seen {
		t.Fatalf("alice's show jobs misses her queued job %s: %q", hOnly.Args[0], jobs)
	}
	// ... and her running ones, not bob's.
	var hRun string
	for _, user := range []string{"alice", "bob"} {
		c, runner := sp.rawAuthed(t, user), sp.rawAuthed(t, user)
		c.Send(protocol.SubmitJobBg, "img.run", "running", "x")
		h := c.Recv()
		runner.Send(protocol.CanDo, "img.run")
		runner.Send(protocol.GrabJob)
		if r := runner.Recv(); r.Type != protocol.JobAssign || r.Args[0] != h.Args[0] {
			t.Fatalf("%s's runner: %v, want %s", user, r, h.Args[0])
		}
		if user == "alice" {
			hRun = h.Args[0]
		}
	}
	jobs = sp.adminAs(t, "alice", "show jobs")
	for _, l := range jobs {
		h, _, _ := strings.Cut(l, "\t")
		if h != ha.Args[0] && h != hOnly.Args[0] && h != hRun {
			t.Fatalf("alice's show jobs lists %q, not one of her jobs", l)
		}
	}
	if !slices.ContainsFunc(jobs, func(l string) bool { return strings.HasPrefix(l, hRun+"\t") }) {
		t.Fatalf("alice's show jobs misses her running job %s: %q", hRun, jobs)
	}
	// A reduce job: function and reducer both go into the namespace and
	// come back out of it.
	alice.Send(protocol.SubmitReduceJobBackground, "img.map", "r1", "img.reduce", "", "parts")
	if r := alice.Recv(); r.Type != protocol.JobCreated {
		t.Fatalf("reduce submit: %v", r)
	}
	rw := sp.rawAuthed(t, "alice")
	rw.Send(protocol.CanDo, "img.map")
	rw.Send(protocol.GrabJobAll)
	if r := rw.Recv(); r.Type != protocol.JobAssignAll || r.Args[1] != "img.map" || r.Args[2] != "r1" || r.Args[3] != "img.reduce" || r.Args[4] != "parts" {
		t.Fatalf("JOB_ASSIGN_ALL for alice: %v", r)
	}

	// maxqueue acts on the tenant's own function, and on no other.
	ac := sp.rawAuthed(t, "alice")
	ac.SendLine("maxqueue img.q 5")
	if r := ac.Recv(); strings.TrimSpace(r.Line) != "OK" {
		t.Fatalf("alice's maxqueue on img.q: %v", r)
	}
	ac.SendLine("maxqueue secret.fn 5")
	if r := ac.Recv(); !strings.HasPrefix(r.Line, "ERR PERMISSION_DENIED") {
		t.Fatalf("alice's maxqueue on a function not hers: %v", r)
	}
	rootStatus := sp.adminAs(t, "root", "status")
	if statusRow(rootStatus, "alice.img.q") == "" || statusRow(rootStatus, "bob.img.q") == "" {
		t.Fatalf("root's status should show both namespaces: %q", rootStatus)
	}
}

// Handles are bound to the user they were given to: another user with the
// same rights, and a forged handle, get "unknown".
func TestSecurityHandles(t *testing.T) {
	t.Parallel()
	sp := startSecureProxy(t, newTestPKI(t, "ca"), "")
	carol, dave := sp.rawAuthed(t, "carol"), sp.rawAuthed(t, "dave")
	carol.Send(protocol.SubmitJobBg, "shared.slow", "", "x")
	h := carol.Recv().Args[0]
	carol.Send(protocol.GetStatus, h)
	if r := carol.Recv(); r.Args[1] != "1" {
		t.Fatalf("carol's own handle: %v", r)
	}
	forged := strings.Replace(h, h[len(h)-2:], "zz", 1)
	for _, tc := range []struct{ who, handle string }{{"dave with carol's handle", h}, {"dave with a forged handle", forged}, {"dave with a backend handle", "H:shard1:1"}} {
		dave.Send(protocol.GetStatus, tc.handle)
		r := dave.Recv()
		if r.Type != protocol.StatusRes || r.Args[0] != tc.handle || strings.Join(r.Args[1:], " ") != "0 0 0 0" {
			t.Fatalf("%s: %v, want %s 0 0 0 0", tc.who, r, tc.handle)
		}
	}
	// WORK_* for a job this session was not assigned.
	dave.Send(protocol.WorkComplete, h, "stolen")
	if r := dave.Recv(); errorCode(r) != "JOB_NOT_FOUND" {
		t.Fatalf("WORK_COMPLETE for carol's job from dave: %v", r)
	}
	carol.Send(protocol.GetStatus, h)
	if r := carol.Recv(); r.Args[1] != "1" {
		t.Fatalf("carol's job after dave's attempt: %v", r)
	}
	// Even the same user's other worker session cannot finish a job
	// assigned to this one.
	w1, w2 := sp.rawAuthed(t, "carol"), sp.rawAuthed(t, "carol")
	for _, w := range []*RawConn{w1, w2} {
		w.Send(protocol.CanDo, "shared.slow")
	}
	w1.Send(protocol.GrabJob)
	a := w1.Recv()
	if a.Type != protocol.JobAssign {
		t.Fatalf("grab: %v", a)
	}
	w2.Send(protocol.GrabJob)
	if r := w2.Recv(); r.Type != protocol.NoJob {
		t.Fatalf("second grab: %v", r)
	}
	w2.Send(protocol.WorkComplete, a.Args[0], "stolen")
	w2.Send(protocol.EchoReq, "sync")
	for {
		r := w2.Recv()
		if r.Type == protocol.EchoRes {
			break
		}
		if errorCode(r) != "JOB_NOT_FOUND" {
			t.Fatalf("WORK_COMPLETE from another session of the same user: %v", r)
		}
	}
	carol.Send(protocol.GetStatus, h)
	if r := carol.Recv(); r.Args[1] != "1" || r.Args[2] != "1" {
		t.Fatalf("carol's job after the other session's WORK_COMPLETE: %v, want known and running", r)
	}
	w1.Send(protocol.WorkComplete, a.Args[0], "done")
	w1.Send(protocol.EchoReq, "sync")
	w1.Expect(protocol.EchoRes, "sync")
	carol.Send(protocol.GetStatus, h)
	if r := carol.Recv(); r.Args[1] != "0" {
		t.Fatalf("carol's job after its own worker finished it: %v", r)
	}
}
