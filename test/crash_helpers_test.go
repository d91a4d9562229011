package test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// The crash test's machinery: a durable server kind that can be started
// again on the same data directory, raw-packet submitters and workers that
// write down what they saw, and one round of submit, SIGKILL, restart,
// drain.

// durableServer starts one kind of server with a persistent queue in dir.
type durableServer struct {
	name  string
	start func(t testing.TB, dir string) *Server
}

// gearproxyDurable is `gearproxy server -data DIR` plus extra flags.
func gearproxyDurable(extra ...string) durableServer {
	return durableServer{name: "gearproxy", start: func(t testing.TB, dir string) *Server {
		args := append([]string{"server", "-listen", "{addr}", "-data", dir}, extra...)
		return startServer(t, "gearproxy", gearproxyBinary(t), args...)
	}}
}

// gearmandSqlite is gearmand with its libsqlite3 queue in DIR (each job is
// an INSERT before JOB_CREATED and a DELETE when it ends).
func gearmandSqlite() durableServer {
	return durableServer{name: "gearmand-sqlite", start: func(t testing.TB, dir string) *Server {
		return startGearmand(t, "-q", "libsqlite3", "--libsqlite3-db="+filepath.Join(dir, "gearmand.sqlite"))
	}}
}

// crashLedger is what the clients and workers saw, keyed by unique.
type crashLedger struct {
	mu        sync.Mutex
	sent      map[string]bool
	acked     map[string]bool
	ran       [2]map[string]int // per server life: 0 before the kill, 1 after
	errors    int               // ERROR replies to submits
	ackCount  atomic.Int64
	lastError string
}

func newCrashLedger() *crashLedger {
	return &crashLedger{sent: map[string]bool{}, acked: map[string]bool{},
		ran: [2]map[string]int{{}, {}}}
}

// crashCounts summarise one round.
type crashCounts struct {
	Sent, Acked int
	// Lost: acknowledged jobs that never ran.
	Lost int
	// Reruns: jobs that ran before the kill and again after the restart
	// (running at the kill, or finished but their removal not yet
	// stored).
	Reruns int
	// UnackedKept: jobs whose JOB_CREATED never arrived (sent just before
	// the kill) that ran anyway: stored, but the reply was cut off.
	UnackedKept int
	// SameLifeDups: jobs run twice by one server life, which no worker
	// disconnect explains: a bug.
	SameLifeDups int
	Errors       int
}

func (l *crashLedger) counts() crashCounts {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := crashCounts{Sent: len(l.sent), Acked: len(l.acked), Errors: l.errors}
	for u := range l.sent {
		before, after := l.ran[0][u], l.ran[1][u]
		switch {
		case l.acked[u] && before+after == 0:
			c.Lost++
		case !l.acked[u] && before+after > 0:
			c.UnackedKept++
		}
		if before > 0 && after > 0 {
			c.Reruns++
		}
		if before > 1 || after > 1 {
			c.SameLifeDups++
		}
	}
	return c
}

// missing returns how many acknowledged jobs have not run yet, and a few
// of them for the failure message.
func (l *crashLedger) missing() (int, []string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	var some []string
	for u := range l.acked {
		if l.ran[0][u]+l.ran[1][u] == 0 {
			n++
			if len(some) < 5 {
				some = append(some, u)
			}
		}
	}
	return n, some
}

// crashConn is one raw connection: packets out through AppendPacket, in
// through protocol.Reader.
type crashConn struct {
	nc  net.Conn
	r   *protocol.Reader
	buf []byte
	pkt protocol.Packet
}

func dialCrash(addr string) (*crashConn, error) {
	nc, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return nil, err
	}
	return &crashConn{nc: nc, r: protocol.NewReader(nc, protocol.ReaderOptions{Expect: protocol.Res})}, nil
}

// queue appends a request to the unsent buffer.
func (c *crashConn) queue(t protocol.Type, args ...[]byte) {
	c.buf = protocol.AppendPacket(c.buf, protocol.Req, t, args...)
}

func (c *crashConn) flush() error {
	if len(c.buf) == 0 {
		return nil
	}
	c.nc.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := c.nc.Write(c.buf)
	c.buf = c.buf[:0]
	return err
}

// read returns the next packet; wait bounds the wait for it.
func (c *crashConn) read(wait time.Duration) (*protocol.Packet, error) {
	c.nc.SetReadDeadline(time.Now().Add(wait))
	if err := c.r.Read(&c.pkt); err != nil {
		return nil, err
	}
	return &c.pkt, nil
}

// crashSubmitter submits count background jobs of fn on one connection,
// keeping up to window of them unanswered, and records every JOB_CREATED.
// It returns when all are answered or the connection breaks (the kill).
func crashSubmitter(addr, fn string, id, count, window int, l *crashLedger) {
	c, err := dialCrash(addr)
	if err != nil {
		return
	}
	defer c.nc.Close()
	inflight := make(chan string, window)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		for u := range inflight {
			p, err := c.read(ioTimeout)
			if err != nil {
				c.nc.Close() // unblock the writer
				for range inflight {
				}
				return
			}
			l.mu.Lock()
			switch p.Type {
			case protocol.JobCreated:
				l.acked[u] = true
				l.ackCount.Add(1)
			default:
				l.errors++
				l.lastError = p.String()
			}
			l.mu.Unlock()
		}
	}()
	fnb := []byte(fn)
	data := bytes.Repeat([]byte{'d'}, 64)
	for seq := range count {
		if len(inflight) == cap(inflight) {
			if c.flush() != nil {
				break
			}
		}
		u := fmt.Sprintf("%d-%d", id, seq)
		l.mu.Lock()
		l.sent[u] = true
		l.mu.Unlock()
		c.queue(protocol.SubmitJobBg, fnb, []byte(u), data)
		inflight <- u
		if len(c.buf) >= 16<<10 {
			if c.flush() != nil {
				break
			}
		}
	}
	_ = c.flush()
	close(inflight)
	<-readerDone
}

// crashWorker grabs jobs of fn until its connection breaks or is closed,
// recording each assignment in life, and completes every job at once.
func crashWorker(c *crashConn, fn string, life int, l *crashLedger) {
	defer c.nc.Close()
	c.queue(protocol.CanDo, []byte(fn))
	c.queue(protocol.GrabJobUniq)
	for {
		if c.flush() != nil {
			return
		}
		p, err := c.read(time.Minute)
		if err != nil {
			return
		}
		switch p.Type {
		case protocol.JobAssignUniq:
			l.mu.Lock()
			l.ran[life][string(p.Arg(2))]++
			l.mu.Unlock()
			c.queue(protocol.WorkComplete, p.Arg(0), nil)
			c.queue(protocol.GrabJobUniq)
		case protocol.NoJob:
			c.queue(protocol.PreSleep)
		case protocol.Noop:
			c.queue(protocol.GrabJobUniq)
		}
	}
}

// startCrashWorkers starts n workers on addr and returns a function that
// stops them and waits.
func startCrashWorkers(t testing.TB, addr, fn string, n, life int, l *crashLedger) (stop func()) {
	var wg sync.WaitGroup
	var conns []*crashConn
	for range n {
		c, err := dialCrash(addr)
		if err != nil {
			t.Fatalf("worker dial %s: %v", addr, err)
		}
		conns = append(conns, c)
		wg.Go(func() { crashWorker(c, fn, life, l) })
	}
	return func() {
		for _, c := range conns {
			c.nc.Close()
		}
		wg.Wait()
	}
}

// adminStatus returns fn's total (queued + running) from the `status`
// admin command, or -1 when the function is not listed.
func adminStatus(addr, fn string) (int, error) {
	c, err := dialCrash(addr)
	if err != nil {
		return 0, err
	}
	defer c.nc.Close()
	c.nc.SetDeadline(time.Now().Add(ioTimeout))
	if _, err := c.nc.Write([]byte("status\r\n")); err != nil {
		return 0, err
	}
	total := -1
	buf := make([]byte, 0, 4096)
	tmp := make([]byte, 4096)
	for !bytes.HasSuffix(buf, []byte("\n.\n")) && !bytes.Equal(buf, []byte(".\n")) {
		n, err := c.nc.Read(tmp)
		if err != nil {
			return 0, fmt.Errorf("status: %w (have %q)", err, buf)
		}
		buf = append(buf, tmp[:n]...)
	}
	for _, line := range strings.Split(string(buf), "\n") {
		f := strings.Split(line, "\t")
		if len(f) == 4 && f[0] == fn {
			total, _ = strconv.Atoi(f[1])
		}
	}
	return total, nil
}

// crashRound submits jobs background jobs on 8 connections while 4
// workers run, SIGKILLs the server once a random share of them is
// acknowledged, restarts it on the same directory and drains it.
func crashRound(t *testing.T, kind durableServer, jobs int, rng *rand.Rand, drainLimit time.Duration) crashCounts {
	t.Helper()
	const submitters, workers, window = 8, 4, 64
	dir, err := os.MkdirTemp(workDir, "crash-"+kind.name+"-")
	if err != nil {
		t.Fatal(err)
	}
	fn := "crash"
	l := newCrashLedger()
	killAt := int64(jobs/10 + rng.IntN(jobs*8/10))

	srv := kind.start(t, dir)
	stopWorkers := startCrashWorkers(t, srv.Addr, fn, workers, 0, l)
	var subs sync.WaitGroup
	for i := range submitters {
		n := jobs / submitters
		if i < jobs%submitters {
			n++
		}
		subs.Go(func() { crashSubmitter(srv.Addr, fn, i, n, window, l) })
	}
	allDone := make(chan struct{})
	go func() { subs.Wait(); close(allDone) }()
	for l.ackCount.Load() < killAt {
		select {
		case <-allDone:
			t.Fatalf("%s: submitters ended with %d of %d acknowledged before the kill point %d (errors %d, last %s)",
				kind.name, l.ackCount.Load(), jobs, killAt, l.errors, l.lastError)
		case <-time.After(200 * time.Microsecond):
		}
	}
	srv.Kill()
	<-allDone
	stopWorkers()
	killedAt := l.counts()

	srv = kind.start(t, dir)
	stopWorkers = startCrashWorkers(t, srv.Addr, fn, workers, 1, l)
	deadline := time.Now().Add(drainLimit)
	for {
		total, err := adminStatus(srv.Addr, fn)
		if err != nil {
			t.Fatalf("%s after restart: %v", kind.name, err)
		}
		missing, _ := l.missing()
		if total <= 0 && missing == 0 {
			break
		}
		if total <= 0 || time.Now().After(deadline) {
			// Drained (or given up) with acknowledged jobs that never
			// ran: they are lost. Give straggling completions a moment.
			time.Sleep(200 * time.Millisecond)
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	stopWorkers()
	srv.Kill()
	c := l.counts()
	t.Logf("%s: kill after %d acknowledged (point %d): sent %d, acknowledged %d, ran before kill %d; after restart: lost %d, re-run %d, unacknowledged but kept %d, duplicates within one life %d",
		kind.name, killedAt.Acked, killAt, c.Sent, c.Acked, len(l.ran[0]), c.Lost, c.Reruns, c.UnackedKept, c.SameLifeDups)
	if c.Lost > 0 {
		_, some := l.missing()
		t.Logf("%s: lost jobs include %v", kind.name, some)
	}
	return c
}
