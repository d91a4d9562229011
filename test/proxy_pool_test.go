package test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
	"github.com/gearproxy/gearproxy/router"
)

// backendOf tells which configured backend a client handle names, the
// way the proxy decodes it (no handle_key in these tests).
func backendOf(t testing.TB, names []string, handle string) int {
	t.Helper()
	c, err := router.NewCodec(names, nil, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, _, ok := c.Decode("local", []byte(handle))
	if !ok {
		t.Fatalf("handle %q does not decode", handle)
	}
	return b
}

// expectType reads the next reply and fails unless it has type typ.
func expectType(t testing.TB, c *RawConn, typ protocol.Type) Reply {
	t.Helper()
	r := c.Recv()
	if r.Type != typ {
		t.Fatalf("got %s, want %s", r, typ)
	}
	return r
}

func names(bs []proxyBackend) []string {
	var n []string
	for _, b := range bs {
		n = append(n, b.Name)
	}
	return n
}

// 50 pipelined SUBMIT_JOBs spread over 3 gearmand backends get their
// JOB_CREATED in submit order: the k-th reply names the backend the k-th
// unique hashes to.
func TestProxyPipelinedSubmitsOverThreeBackends(t *testing.T) {
	_, bs := gearmandBackends(t, 3)
	p := startProxyRun(t, bs, "")
	r, err := router.New([]router.Member{{Name: "gm1"}, {Name: "gm2"}, {Name: "gm3"}})
	if err != nil {
		t.Fatal(err)
	}
	c := dialRaw(t, p.Addr)
	var batch []byte
	for i := range 50 {
		typ := protocol.SubmitJobBg
		if i%2 == 0 {
			typ = protocol.SubmitJob
		}
		batch = append(batch, Packet(typ, "pipe", fmt.Sprintf("u%d", i), "x")...)
	}
	c.Write(batch)
	used := map[int]bool{}
	for i := range 50 {
		h := expectType(t, c, protocol.JobCreated).Args[0]
		want := r.Pick(router.Key([]byte("pipe"), []byte(fmt.Sprintf("u%d", i)), nil), r.All())
		if got := backendOf(t, names(bs), h); got != want {
			t.Fatalf("reply %d names backend %d; submit %d went to %d", i, got, i, want)
		}
		used[want] = true
	}
	if len(used) != 3 {
		t.Fatalf("the uniques reached only %d backends", len(used))
	}
}

// One worker through the proxy drains jobs that landed on every backend.
func TestProxyWorkerDrainsEveryBackend(t *testing.T) {
	requirePeer(t, "php")
	_, bs := gearmandBackends(t, 2)
	p := startProxyRun(t, bs, "")
	c := dialRaw(t, p.Addr)
	perBackend := map[int]int{}
	const n = 20
	for i := range n {
		c.Send(protocol.SubmitJobBg, "drain", fmt.Sprintf("job-%d", i), fmt.Sprintf("d%d", i))
		perBackend[backendOf(t, names(bs), expectType(t, c, protocol.JobCreated).Args[0])]++
	}
	if len(perBackend) != 2 {
		t.Fatalf("jobs landed on %v", perBackend)
	}
	w := runTool(t, 60*time.Second, nil, "php", testdata("php_worker.php"), p.Addr, "drain", "reverse", fmt.Sprint(n))
	if w.Exit != 0 || strings.Count(w.Stdout, "job drain") != n {
		t.Fatalf("PHP worker did not drain all %d jobs: %s", n, w)
	}
	c.SendLine("status")
	for _, l := range c.RecvList() {
		if strings.HasPrefix(l, "drain\t") && !strings.HasPrefix(l, "drain\t0\t0\t") {
			t.Fatalf("jobs left after the drain: %q", l)
		}
	}
}

const phpCoalesceClient = `<?php
[, $host, $port, $fn, $unique, $data] = $argv;
$c = new GearmanClient();
$c->addServer($host, (int)$port);
$c->setTimeout(30000);
$r = $c->doNormal($fn, $data, $unique);
printf("result=%s rc=%d\n", $r, $c->returnCode());
`

// Two PHP clients submit the same unique through the proxy in front of two
// gearmand: the worker runs the job once and both get its result.
func TestProxyCoalescingPHP(t *testing.T) {
	requirePeer(t, "php")
	_, bs := gearmandBackends(t, 2)
	p := startProxyRun(t, bs, "")
	host, port, _ := strings.Cut(p.Addr, ":")
	script := writePHP(t, phpCoalesceClient)
	admin := dialRaw(t, p.Addr)
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		for deadline := time.Now().Add(15 * time.Second); !ok(); {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	queued := func() string {
		admin.SendLine("status")
		for _, l := range admin.RecvList() {
			if strings.HasPrefix(l, "coal\t") {
				return l
			}
		}
		return ""
	}
	a := startTool(t, nil, "php", script, host, port, "coal", "same-unique", "first")
	waitFor("the first submit", func() bool { return strings.HasPrefix(queued(), "coal\t1\t") })
	b := startTool(t, nil, "php", script, host, port, "coal", "same-unique", "second")
	// The second client is attached once the job has two waiting clients.
	waitFor("the second submit", func() bool {
		admin.Send(protocol.GetStatusUnique, "same-unique")
		r := expectType(t, admin, protocol.StatusResUnique)
		return r.Args[5] == "2"
	})
	if l := queued(); !strings.HasPrefix(l, "coal\t1\t") {
		t.Fatalf("two submits of one unique made %q", l)
	}
	w := runTool(t, 30*time.Second, nil, "php", testdata("php_worker.php"), p.Addr, "coal", "reverse", "1")
	if w.Exit != 0 || strings.Count(w.Stdout, "job coal") != 1 {
		t.Fatalf("worker: %s", w)
	}
	for _, c := range []*Proc{a, b} {
		r := c.Wait(30 * time.Second)
		if r.Exit != 0 || !strings.Contains(r.Stdout, "result=tsrif rc=0") {
			t.Fatalf("client: %s", r)
		}
	}
}

// Two proxy instances with the same configuration: a job submitted through
// one is found through the other, by handle and by unique.
func TestProxyTwoInstances(t *testing.T) {
	requirePeer(t, "php")
	_, bs := gearmandBackends(t, 2)
	p1, p2 := startProxyRun(t, bs, ""), startProxyRun(t, bs, "")
	c := dialRaw(t, p1.Addr)
	var args []string
	for i := range 4 {
		u := fmt.Sprintf("two-%d", i)
		c.Send(protocol.SubmitJobBg, "twoinst", u, "x")
		args = append(args, "h:"+expectType(t, c, protocol.JobCreated).Args[0], "u:"+u)
	}
	r := runTool(t, 30*time.Second, nil, "php", append([]string{testdata("php_client.php"), p2.Addr, "status", "twoinst"}, args...)...)
	if r.Exit != 0 {
		t.Fatalf("php: %s", r)
	}
	if got := strings.Count(r.Stdout, "known=true"); got != 8 {
		t.Fatalf("through the second proxy %d of 8 lookups found the job:\n%s", got, r.Stdout)
	}
}
