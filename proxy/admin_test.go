package proxy

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// adminLines sends one admin line and reads a list reply up to ".".
func adminLines(t *testing.T, addr, line string) []string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "%s\r\n", line)
	br := bufio.NewReader(c)
	var lines []string
	for {
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("%s: %v after %q", line, err, lines)
		}
		l = strings.TrimRight(l, "\r\n")
		if l == "." {
			return lines
		}
		lines = append(lines, l)
		if len(lines) == 1 && (strings.HasPrefix(l, "OK") || strings.HasPrefix(l, "ERR")) {
			return lines
		}
	}
}

func TestAdminMerged(t *testing.T) {
	srv, _, _ := startBundled(t, 3, nil)
	addr := listen(t, srv, "local")
	c := dial(t, addr)
	var handles []string
	for i := range 9 {
		c.send(protocol.SubmitJobBg, "adm", fmt.Sprintf("u%d", i), "x")
		handles = append(handles, c.expect(protocol.JobCreated)[0])
	}
	w := dial(t, addr)
	w.send(protocol.SetClientID, "my-worker")
	w.send(protocol.CanDo, "adm")
	w.send(protocol.CanDo, "other")
	w.send(protocol.EchoReq, "sync")
	w.expect(protocol.EchoRes)

	// status: the nine jobs summed over three backends, one worker (not
	// three, though it registered on every backend).
	if got := adminLines(t, addr, "status"); !contains(got, "adm\t9\t0\t1") {
		t.Fatalf("status %q", got)
	}
	if got := adminLines(t, addr, "prioritystatus"); !contains(got, "adm\t0\t9\t0\t1") {
		t.Fatalf("prioritystatus %q", got)
	}
	workers := adminLines(t, addr, "workers")
	found := false
	for _, l := range workers {
		if strings.HasSuffix(l, " 127.0.0.1 my-worker : other adm") {
			found = true
		}
	}
	if !found {
		t.Fatalf("workers %q", workers)
	}
	// show jobs lists the handles clients know.
	jobs := adminLines(t, addr, "show jobs")
	for _, h := range handles {
		if !containsPrefix(jobs, h+"\t") {
			t.Fatalf("show jobs %q lacks %q", jobs, h)
		}
	}
	if got := adminLines(t, addr, "show unique jobs"); len(got) != 9 {
		t.Fatalf("show unique jobs %q", got)
	}
	if got := adminLines(t, addr, "cancel job "+handles[4]); got[0] != "OK" {
		t.Fatalf("cancel job: %q", got)
	}
	if got := adminLines(t, addr, "cancel job H:b0:1"); !strings.HasPrefix(got[0], "ERR UNKNOWN_JOB") {
		t.Fatalf("cancel of a raw backend handle: %q", got)
	}
	if got := adminLines(t, addr, "status"); !contains(got, "adm\t8\t0\t1") {
		t.Fatalf("status after cancel %q", got)
	}
	if got := adminLines(t, addr, "version"); !strings.HasPrefix(got[0], "OK ") {
		t.Fatalf("version %q", got)
	}
	if got := adminLines(t, addr, "create function made"); got[0] != "OK" {
		t.Fatalf("create function %q", got)
	}
	if got := adminLines(t, addr, "maxqueue made 5"); got[0] != "OK" {
		t.Fatalf("maxqueue %q", got)
	}
	if got := adminLines(t, addr, "status"); !contains(got, "made\t0\t0\t0") {
		t.Fatalf("status after create %q", got)
	}
	if got := adminLines(t, addr, "shutdown"); !strings.HasPrefix(got[0], "ERR ") {
		t.Fatalf("shutdown %q", got)
	}
}

func contains(lines []string, want string) bool {
	for _, l := range lines {
		if l == want {
			return true
		}
	}
	return false
}

func containsPrefix(lines []string, prefix string) bool {
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			return true
		}
	}
	return false
}

type denyAll struct{}

func (denyAll) Allow(Verb, []byte) bool { return false }

type onlySubmitF struct{}

func (onlySubmitF) Allow(v Verb, name []byte) bool { return v == Submit && string(name) == "f" }

// The ACL seam: a denied submit gets ERROR PERMISSION_DENIED in its own
// reply slot, a denied CAN_DO an ERROR, a denied admin command ERR.
func TestAccessDenied(t *testing.T) {
	srv, _, _ := startBundled(t, 2, nil)
	addr, err := srv.Listen("127.0.0.1:0", Listener{Auth: FixedUser{User: "bob", Access: onlySubmitF{}}})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr.String())
	c.w.WritePacket(protocol.Req, protocol.SubmitJobBg, []byte("f"), []byte("1"), nil)
	c.w.WritePacket(protocol.Req, protocol.SubmitJobBg, []byte("g"), []byte("2"), nil)
	c.w.WritePacket(protocol.Req, protocol.SubmitJobBg, []byte("f"), []byte("3"), nil)
	c.w.Flush()
	c.expect(protocol.JobCreated)
	if got := c.expect(protocol.Error); got[0] != "PERMISSION_DENIED" {
		t.Fatalf("ERROR %q", got)
	}
	c.expect(protocol.JobCreated)
	c.send(protocol.CanDo, "f")
	if got := c.expect(protocol.Error); got[0] != "PERMISSION_DENIED" {
		t.Fatalf("CAN_DO: ERROR %q", got)
	}
	if got := adminLines(t, addr.String(), "status"); !strings.HasPrefix(got[0], "ERR PERMISSION_DENIED") {
		t.Fatalf("admin: %q", got)
	}
	// No Access at all denies everything.
	addr2, _ := srv.Listen("127.0.0.1:0", Listener{Auth: FixedUser{User: "nobody"}})
	d := dial(t, addr2.String())
	d.send(protocol.SubmitJob, "f", "", "x")
	if got := d.expect(protocol.Error); got[0] != "PERMISSION_DENIED" {
		t.Fatalf("ERROR %q", got)
	}
}
