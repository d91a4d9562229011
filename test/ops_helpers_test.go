package test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// opsProxy is a `gearproxy run` with its admin listener on a port of its
// own (the default 127.0.0.1:4780 would be shared by every test proxy).
type opsProxy struct {
	*Server
	Admin string // host:port of the admin listener
	// Work is a second listener (user "local") that nothing probes, so
	// that its connection counts are the test's own. It is configured
	// first, so it listens before Addr, which the harness waits for.
	Work string
}

// startOpsProxy runs `gearproxy run`; extra goes at the top level of the
// configuration, before any table.
func startOpsProxy(t testing.TB, backends []proxyBackend, extra string) *opsProxy {
	t.Helper()
	return startOpsProxyAdmin(t, backends, extra, "")
}

// startOpsProxyAdmin is startOpsProxy with more [admin] keys.
func startOpsProxyAdmin(t testing.TB, backends []proxyBackend, extra, adminKeys string) *opsProxy {
	t.Helper()
	admin, work := freeAddr(t), freeAddr(t)
	s := startProxyRun(t, backends, fmt.Sprintf("%s\n[admin]\naddress = %q\n%s\n[[listener]]\naddress = %q\nuser = \"local\"\n", extra, admin, adminKeys, work))
	if err := waitForPort(admin, s.Pid, s.Exited(), 15*time.Second); err != nil {
		t.Fatalf("admin listener %s: %v\n%s", admin, err, s.Log())
	}
	return &opsProxy{Server: s, Admin: admin, Work: work}
}

// get fetches a path of the admin listener.
func (p *opsProxy) get(t testing.TB, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + p.Admin + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// metrics scrapes /metrics into series ("name{labels}") and values.
func (p *opsProxy) metrics(t testing.TB) map[string]float64 {
	t.Helper()
	code, body := p.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d %s", code, body)
	}
	m := map[string]float64{}
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		l := sc.Text()
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err != nil {
			t.Fatalf("/metrics line %q: %v", l, err)
		}
		m[l[:i]] = v
	}
	return m
}

// sum adds up the series of a metric whose labels include every one of
// want (each `key="value"`).
func sum(m map[string]float64, name string, want ...string) float64 {
	total := 0.0
	for series, v := range m {
		labels, ok := strings.CutPrefix(series, name)
		if !ok || (labels != "" && labels[0] != '{') {
			continue
		}
		match := true
		for _, w := range want {
			if !strings.Contains(labels, w) {
				match = false
			}
		}
		if match {
			total += v
		}
	}
	return total
}

// opsWorker works through addr until the test ends: the job's data says
// how it ends, "fail" with WORK_FAIL, anything else with WORK_COMPLETE of
// the same data, after hold.
func opsWorker(t testing.TB, addr string, hold time.Duration, fns ...string) {
	t.Helper()
	g, err := dialGear(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.conn.Close() })
	for _, fn := range fns {
		if err := g.send(protocol.CanDo, fn); err != nil {
			t.Fatal(err)
		}
	}
	// The echo comes back after the abilities are registered: a test
	// may then look for this worker at once.
	if err := g.send(protocol.EchoReq, "registered"); err != nil {
		t.Fatal(err)
	}
	for {
		typ, _, err := g.recv(ioTimeout)
		if err != nil {
			t.Fatalf("worker registration: %v", err)
		}
		if typ == protocol.EchoRes {
			break
		}
	}
	go func() {
		for {
			if g.send(protocol.GrabJob) != nil {
				return
			}
			typ, args, err := g.recv(time.Hour)
			for err == nil && typ == protocol.Noop {
				typ, args, err = g.recv(time.Hour)
			}
			if err != nil {
				return
			}
			switch typ {
			case protocol.NoJob:
				if g.send(protocol.PreSleep) != nil {
					return
				}
				for typ != protocol.Noop {
					if typ, _, err = g.recv(time.Hour); err != nil {
						return
					}
				}
			case protocol.JobAssign:
				time.Sleep(hold)
				if args[2] == "fail" {
					err = g.send(protocol.WorkFail, args[0])
				} else {
					err = g.send(protocol.WorkComplete, args[0], args[2])
				}
				if err != nil {
					return
				}
			}
		}
	}()
}

// runJob submits a foreground job on c and waits for its end: the final
// packet type and, for WORK_COMPLETE, its data.
func opsJob(t testing.TB, c *RawConn, fn, unique, data string) (protocol.Type, string) {
	t.Helper()
	c.Send(protocol.SubmitJob, fn, unique, data)
	r := c.Recv()
	if r.Type != protocol.JobCreated {
		t.Fatalf("submit %s: got %s, want JOB_CREATED", fn, r)
	}
	for {
		r2 := c.Recv()
		if r2.Args[0] != r.Args[0] {
			t.Fatalf("result for another handle: %s", r2)
		}
		switch r2.Type {
		case protocol.WorkComplete:
			return r2.Type, r2.Args[1]
		case protocol.WorkFail, protocol.WorkException:
			return r2.Type, ""
		}
	}
}
