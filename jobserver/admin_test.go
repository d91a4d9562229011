package jobserver

import (
	"fmt"
	"net"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

func sleepBriefly() { time.Sleep(5 * time.Millisecond) }

func TestAdminCommands(t *testing.T) {
	s, addr := testServer(t, Options{})
	a, c, w := dial(t, addr), dial(t, addr), dial(t, addr)
	c.send(protocol.SubmitJobBg, "f", "u1", "1")
	c.expect(protocol.JobCreated, "H:test:1")
	c.send(protocol.SubmitJobHighBg, "f", "", "2")
	c.expect(protocol.JobCreated, "H:test:2")
	c.send(protocol.SubmitJobLow, "g", "u3", "3")
	c.expect(protocol.JobCreated, "H:test:3")
	w.send(protocol.SetClientID, "worker-1")
	w.canDo("g", "f", "g")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign, "H:test:3") // the second "g" is the newest registration
	_ = s

	tests := []struct {
		cmd  string
		list bool
		want string // regexp
	}{
		{"status", true, "^f\t2\t0\t1\ng\t1\t1\t2\n\\.\n$"},
		{"STATUS", true, "^f\t2\t0\t1\ng\t1\t1\t2\n\\.\n$"},
		{"prioritystatus", true, "^f\t1\t1\t0\t1\ng\t0\t0\t0\t2\n\\.\n$"},
		{"workers", true, `^(\d+ 127\.0\.0\.1 (worker-1 : g f g|- :)\n){3}\.\n$`},
		{"show jobs", true, "^H:test:1\t0\t0\t1\nH:test:2\t0\t0\t1\nH:test:3\t0\t0\t0\n\\.\n$"},
		{"show unique jobs", true, "^u1\n\nu3\n\\.\n$"},
		{"show", false, "^ERR UNKNOWN_COMMAND Unknown\\+server\\+commandshow\r\n$"},
		{"show foo", false, "^ERR UNKNOWN_SHOW_ARGUMENTS\r\n$"},
		{"version", false, "^OK 1\\.1\\.20\\+ds\n$"},
		{"getpid", false, fmt.Sprintf("^OK %d\n$", os.Getpid())},
		{"verbose", false, "^OK ERROR\n$"},
		{"maxqueue", false, "^ERR INVALID_ARGUMENTS An\\+incomplete\\+set\\+of\\+arguments\\+was\\+sent\\+to\\+this\\+command\\+maxqueue\r\n$"},
		{"cancel job H:test:99", false, "^ERR UNKNOWN_JOB\r\n$"},
		{"cancel", false, "^ERR UNKNOWN_COMMAND Unknown\\+server\\+commandcancel\r\n$"},
		{"cancel x y", false, "^ERR UNKNOWN_ERROR\r\n$"},
		{"create function", false, "^ERR INVALID_ARGUMENTS .*create\r\n$"},
		{"create function h", false, "^OK\r\n$"},
		{"drop function h", false, "^OK\r\n$"},
		{"drop function h", false, "^ERR function not found\r\n$"},
		{"drop function f", false, "^ERR there are still connected workers or executing clients\r\n$"},
		{"shutdown", false, "^ERR UNKNOWN_COMMAND Unknown\\+server\\+commandshutdown\r\n$"},
		{"", false, "^ERR UNKNOWN_COMMAND Unknown\\+server\\+command\r\n$"},
		{"   ", false, "^ERR UNKNOWN_COMMAND Unknown\\+server\\+command\r\n$"},
		{"bogus", false, "^ERR UNKNOWN_COMMAND Unknown\\+server\\+commandbogus\r\n$"},
		{"cancel job H:test:2", false, "^OK\r\n$"},
		{"status", true, "^f\t1\t0\t1\ng\t1\t1\t2\n\\.\n$"},
	}
	for _, tt := range tests {
		got := a.admin(tt.cmd, tt.list)
		if !regexp.MustCompile(tt.want).MatchString(got) {
			t.Errorf("%q: got %q, want %q", tt.cmd, got, tt.want)
		}
	}
}

func TestDropFunctionRefusesQueuedJobs(t *testing.T) {
	_, addr := testServer(t, Options{})
	a, c := dial(t, addr), dial(t, addr)
	c.send(protocol.SubmitJobBg, "f", "", "1")
	c.expect(protocol.JobCreated)
	if got := a.admin("drop function f", false); got != "ERR there are still queued jobs\r\n" {
		t.Fatalf("drop with a queued job: %q", got)
	}
	a.admin("cancel job H:test:1", false)
	if got := a.admin("drop function F", false); got != "OK\r\n" { // case-insensitive, as gearmand
		t.Fatalf("drop: %q", got)
	}
	if got := a.admin("status", true); got != ".\n" {
		t.Fatalf("status after drop: %q", got)
	}
}

func TestCancelJobFailsClients(t *testing.T) {
	_, addr := testServer(t, Options{})
	a, c, w := dial(t, addr), dial(t, addr), dial(t, addr)
	c.send(protocol.SubmitJob, "f", "", "queued")
	c.expect(protocol.JobCreated, "H:test:1")
	c.send(protocol.SubmitJob, "f", "", "running")
	c.expect(protocol.JobCreated, "H:test:2")
	if got := a.admin("cancel job H:test:1", false); got != "OK\r\n" {
		t.Fatalf("cancel: %q", got)
	}
	c.expect(protocol.WorkFail, "H:test:1")
	w.canDo("f")
	w.send(protocol.GrabJob)
	w.expect(protocol.JobAssign, "H:test:2")
	a.admin("cancel job H:test:2", false)
	c.expect(protocol.WorkFail, "H:test:2")
	w.send(protocol.WorkComplete, "H:test:2", "nobody hears")
	w.sync()
	c.sync() // nothing else arrived for c
	if got := a.admin("status", true); got != "f\t0\t0\t1\n.\n" {
		t.Fatalf("status: %q", got)
	}
}

func TestAdminShutdown(t *testing.T) {
	for _, graceful := range []bool{false, true} {
		s, addr := testServer(t, Options{AllowShutdown: true})
		a := dial(t, addr)
		cmd := "shutdown"
		if graceful {
			cmd = "shutdown graceful"
			c := dial(t, addr)
			c.send(protocol.SubmitJobBg, "f", "", "1")
			c.expect(protocol.JobCreated)
		}
		if got := a.admin(cmd, false); got != "OK\r\n" {
			t.Fatalf("%s: %q", cmd, got)
		}
		if graceful {
			select {
			case <-s.Done():
				t.Fatal("graceful shutdown did not wait for the queued job")
			case <-time.After(50 * time.Millisecond):
			}
			// The admin connection still works; ending the last job
			// completes the shutdown.
			a.admin("cancel job H:test:1", false)
		}
		<-s.Done()
	}
}

func TestMixedTextAndBinary(t *testing.T) {
	_, addr := testServer(t, Options{})
	c := dial(t, addr)
	var b []byte
	b = append(b, "status\r\n"...)
	b = protocol.AppendPacket(b, protocol.Req, protocol.SubmitJobBg, []byte("f"), nil, []byte("x"))
	b = append(b, "status\n"...)
	c.write(b)
	if got := c.line(); got != ".\n" {
		t.Fatalf("first status: %q", got)
	}
	c.expect(protocol.JobCreated, "H:test:1")
	if got := c.line() + c.line(); got != "f\t1\t0\t0\n.\n" {
		t.Fatalf("second status: %q", got)
	}
}

func TestWorkersShowsConnectionsWithoutFunctions(t *testing.T) {
	_, addr := testServer(t, Options{})
	a := dial(t, addr)
	got := a.admin("workers", true)
	if !regexp.MustCompile(`^\d+ 127\.0\.0\.1 - :\n\.\n$`).MatchString(got) {
		t.Fatalf("workers: %q", got)
	}
	if strings.Count(got, "\n") != 2 {
		t.Fatalf("workers: %q", got)
	}
}

// A graceful shutdown stops Serve with ErrServerClosed at once, while the
// server keeps serving its connections until the last job ends.
func TestGracefulShutdownStopsServe(t *testing.T) {
	s, err := New(Options{AllowShutdown: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(l) }()
	c := dial(t, l.Addr().String())
	c.send(protocol.SubmitJobBg, "f", "", "x")
	c.expect(protocol.JobCreated)
	if got := c.admin("shutdown graceful", false); got != "OK\r\n" {
		t.Fatalf("shutdown graceful: %q", got)
	}
	if err := <-served; err != ErrServerClosed {
		t.Fatalf("Serve returned %v", err)
	}
	c.sync() // still served
	c.admin("cancel job "+s.Handle(1), false)
	<-s.Done()
}
