package test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/connect/connecttest"
	"github.com/gearproxy/gearproxy/protocol"
)

// connectUser and connectPassword are the SASL user every connect test
// logs in as; connectCertUser logs in with a client certificate whose
// common name is connectCertCN.
const (
	connectUser     = "alice"
	connectPassword = "s3cret"
	connectCertUser = "worker"
	connectCertCN   = "worker.example"
)

// connectUpstream starts the TLS + SASL server that `gearproxy connect`
// talks to: `gearproxy run` with users and ACLs, in front of a fresh
// gearmand (see startConnectProxy).
func connectUpstream(t *testing.T) (connecttest.Upstream, *connecttest.PKI) {
	t.Helper()
	gearmand := startGearmand(t)
	return startConnectProxy(t, []proxyBackend{{Name: "gm1", Addr: gearmand.Addr}})
}

// connectForbidden is a function alice and worker may neither submit nor
// work: the connect.* rule allows it, a deny rule takes it back.
const connectForbidden = "connect.secret.report"

// connectProxyConfig is the part of the connect tests' gearproxy
// configuration after the listener: users and their ACLs. alice logs in
// with a password (its SCRAM verifier is %[1]s); worker with a client
// certificate whose CN is %[2]s. Both may submit and work connect.* (and
// reverse, the function of examples/) but not connect.secret.*, and may run
// the admin status command only.
const connectProxyConfig = `
[[user]]
name = "alice"
password = "%[1]s"
groups = ["connect"]

[[user]]
name = "worker"
certificates = ["CN=%[2]s"]
groups = ["connect"]

[[group]]
name = "connect"
[group.allow]
submit = ["connect.*", "reverse"]
work = ["connect.*", "reverse"]
admin = ["status"]
[group.deny]
submit = ["connect.secret.*"]
work = ["connect.secret.*"]
`

// startConnectProxy runs `gearproxy run` as connect's upstream: one TLS
// listener (a server certificate for connecttest.ServerName from a new
// test PKI, whose CA also verifies client certificates) offering every
// mechanism, the users of connectProxyConfig, and the given backends.
func startConnectProxy(t *testing.T, backends []proxyBackend) (connecttest.Upstream, *connecttest.PKI) {
	t.Helper()
	pki := connecttest.NewPKI(t)
	server := pki.Issue(t, connecttest.ServerName)
	users := fmt.Sprintf(connectProxyConfig, verifier(t, connectPassword), connectCertCN)
	bin := gearproxyBinary(t)
	lastLog := ""
	for range 3 {
		dir, err := os.MkdirTemp(workDir, "connect-proxy-")
		if err != nil {
			t.Fatal(err)
		}
		addr := freeAddr(t)
		var b strings.Builder
		fmt.Fprintf(&b, `data_dir = %q
handle_key = "connect-test"

[[listener]]
address = %q
sasl = ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-256", "PLAIN", "EXTERNAL"]
auth_timeout = "10s"
[listener.tls]
cert = %q
key = %q
client_ca = %q
client_auth = "request"
cert_mapping = ["cn"]
`, filepath.Join(dir, "data"), addr, server.CertFile, server.KeyFile, pki.CAFile)
		for _, be := range backends {
			if be.Addr == "" {
				fmt.Fprintf(&b, "\n[[backend]]\nname = %q\nbundled = true\n", be.Name)
			} else {
				fmt.Fprintf(&b, "\n[[backend]]\nname = %q\naddress = %q\n", be.Name, be.Addr)
			}
		}
		b.WriteString(users)
		config := filepath.Join(dir, "gearproxy.toml")
		if err := os.WriteFile(config, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		// nil means the process exited before it listened, most likely
		// because another test took the free port first: try another.
		lastLog = filepath.Join(dir, "stderr.log")
		if s := startProcess(t, "gearproxy-run", addr, lastLog, bin, "run", "-config", config); s != nil {
			return connecttest.Upstream{Addr: addr, ServerName: connecttest.ServerName, CAFile: pki.CAFile, Pool: pki.Pool}, pki
		}
	}
	t.Fatalf("gearproxy run with TLS + SASL did not start:\n%s", tail(lastLog, 3000))
	return connecttest.Upstream{}, nil
}

// startConnect runs `gearproxy connect` against up with a password (from a
// -password-file) and extra flags; it listens on a free 127.0.0.1 port.
func startConnect(t *testing.T, up connecttest.Upstream, password string, extra ...string) *Server {
	t.Helper()
	args := []string{"connect", "-listen", "{addr}", "-server", up.Addr, "-server-name", up.ServerName,
		"-ca", up.CAFile, "-log-level", "debug"}
	if password != "" {
		file := filepath.Join(t.TempDir(), "password")
		if err := os.WriteFile(file, []byte(password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		args = append(args, "-user", connectUser, "-password-file", file)
	}
	return startServer(t, "connect", gearproxyBinary(t), append(args, extra...)...)
}

// logLines counts the lines of s's log that contain every one of words.
func logLines(s *Server, words ...string) int {
	n := 0
	for _, line := range strings.Split(s.Log(), "\n") {
		all := line != ""
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			n++
		}
	}
	return n
}

func wantOutput(t *testing.T, what string, r ToolResult, want string) {
	t.Helper()
	if r.Exit != 0 || r.Stdout != want {
		t.Fatalf("%s:\n%s\nwant stdout:\n%s", what, r, want)
	}
}

// TestConnectPHP: a php-gearman worker and a php-gearman client, each
// through its own `gearproxy connect`, to gearproxy with TLS, SCRAM and
// ACLs: round trip, background jobs with jobStatus, and gearadmin --status
// (an admin command alice's ACL allows). TestConnectPHPForbidden has the
// refused function.
func TestConnectPHP(t *testing.T) {
	t.Parallel()
	requirePeer(t, "gearmand", "php", "gearadmin")
	up, _ := connectUpstream(t)
	workerSide := startConnect(t, up, connectPassword, "-mechanism", "SCRAM-SHA-256")
	clientSide := startConnect(t, up, connectPassword)

	worker := startTool(t, nil, "php", testdata("php_worker.php"), workerSide.Addr, "connect.reverse", "reverse", "3")
	r := runTool(t, 30*time.Second, nil, "php", testdata("php_client.php"), clientSide.Addr, "do", "connect.reverse")
	wantOutput(t, "php client do", r, "doNormal: 'lamroNod-daolyap' rc=SUCCESS\n"+
		"doHigh: 'hgiHod-daolyap' rc=SUCCESS\ndoLow: 'woLod-daolyap' rc=SUCCESS\n")
	if w := worker.Wait(30 * time.Second); w.Exit != 0 {
		t.Fatalf("php worker:\n%s", w)
	}

	// Background jobs with no worker yet: queued, known, not running.
	r = runTool(t, 30*time.Second, nil, "php", testdata("php_client.php"), clientSide.Addr, "background", "connect.bg", "cu")
	out := regexpHandles(r.Stdout)
	wantOutput(t, "php client background", ToolResult{Stdout: out, Exit: r.Exit, Stderr: r.Stderr}, ""+
		"doBackground: <<H>> rc=SUCCESS\ndoHighBackground: <<H>> rc=SUCCESS\ndoLowBackground: <<H>> rc=SUCCESS\n"+
		"jobStatus <<H>>: known=true running=false 0/0\njobStatusByUniqueKey cu-1: known=true running=false 0/0\n"+
		"jobStatus <<H>>: known=true running=false 0/0\njobStatusByUniqueKey cu-2: known=true running=false 0/0\n"+
		"jobStatus <<H>>: known=true running=false 0/0\njobStatusByUniqueKey cu-3: known=true running=false 0/0\n")

	// gearadmin through connect sees them queued.
	host, port, _ := net.SplitHostPort(clientSide.Addr)
	r = runTool(t, 30*time.Second, nil, "gearadmin", "-h", host, "-p", port, "--status")
	if r.Exit != 0 || !strings.Contains(r.Stdout, "connect.bg\t3\t0\t0\n") {
		t.Fatalf("gearadmin --status through connect:\n%s", r)
	}

	// A worker drains them through its connect.
	w := runTool(t, 30*time.Second, nil, "php", testdata("php_worker.php"), workerSide.Addr, "connect.bg", "reverse", "3")
	if w.Exit != 0 || strings.Count(w.Stdout, "job connect.bg") != 3 {
		t.Fatalf("php worker of background jobs:\n%s", w)
	}
	r = runTool(t, 30*time.Second, nil, "gearadmin", "-h", host, "-p", port, "--status")
	if r.Exit != 0 || !strings.Contains(r.Stdout, "connect.bg\t0\t0\t0\n") {
		t.Fatalf("gearadmin --status after the worker:\n%s", r)
	}
	for _, s := range []*Server{workerSide, clientSide} {
		if n := logLines(s, "upstream failed"); n != 0 {
			t.Fatalf("%s logged failures:\n%s", s.Name, s.Log())
		}
		if logLines(s, "relay open", "user=alice") == 0 || logLines(s, "relay closed", "reason=") == 0 {
			t.Fatalf("%s: no relay open/closed lines:\n%s", s.Name, s.Log())
		}
	}
}

// regexpHandles replaces job handles printed as <<handle>> by <<H>>.
func regexpHandles(s string) string {
	var b strings.Builder
	for {
		i := strings.Index(s, "<<")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		j := strings.Index(s[i:], ">>")
		if j < 0 {
			b.WriteString(s)
			return b.String()
		}
		b.WriteString(s[:i] + "<<H>>")
		s = s[i+j+2:]
	}
}

// phpAddServer is what every PHP user runs first: addServer sends
// OPTION_REQ exceptions and waits for the answer, then a job. Refused, the
// job fails with GEARMAN_SERVER_ERROR (18) and error() names the cause.
const phpAddServer = `<?php
[, $host, $port] = $argv;
$c = new GearmanClient();
$c->setTimeout(10000);
try {
    $c->addServer($host, (int)$port);
    $r = $c->doNormal('connect.none', 'x');
    printf("doNormal: %s rc=%d error=%s\n", var_export($r, true), $c->returnCode(), $c->error());
} catch (Throwable $e) {
    printf("%s: %s; error(): %s\n", get_class($e), $e->getMessage(), $c->error());
}
`

// TestConnectPHPRefused: a wrong password and an unknown server CA reach
// the PHP user as a clear error at once (no hang): the first job fails and
// $client->error() names the cause. And the connect log
// names the cause once however many connections fail.
func TestConnectPHPRefused(t *testing.T) {
	t.Parallel()
	requirePeer(t, "gearmand", "php")
	up, _ := connectUpstream(t)
	other := connecttest.NewPKI(t)
	untrusted := up
	untrusted.CAFile = other.CAFile
	tests := []struct {
		name     string
		up       connecttest.Upstream
		password string
		cause    string // in the connect log and in what PHP reports
	}{
		{"wrong password", up, "wrong", "AUTH_FAILED"},
		{"unknown server CA", untrusted, connectPassword, "certificate signed by unknown authority"},
	}
	script := writePHP(t, phpAddServer)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startConnect(t, tt.up, tt.password)
			host, port, _ := net.SplitHostPort(s.Addr)
			for i := range 3 {
				r := runTool(t, 30*time.Second, nil, "php", script, host, port)
				if r.TimedOut || r.Exit != 0 || !strings.Contains(r.Stdout, "doNormal: '' rc=18") || !strings.Contains(r.Stdout, tt.cause) {
					t.Fatalf("php run %d:\n%s", i, r)
				}
				t.Logf("php sees: %s", strings.TrimSpace(r.Stdout))
			}
			// A worker's first GRAB_JOB gets the ERROR: work() fails.
			w := runTool(t, 30*time.Second, nil, "php", testdata("php_worker.php"), s.Addr, "connect.none", "reverse", "1")
			if w.TimedOut || w.Exit != 3 {
				t.Fatalf("php worker:\n%s", w)
			}
			t.Logf("php worker sees: %s %s", strings.TrimSpace(w.Stdout), strings.TrimSpace(w.Stderr))
			if n := logLines(s, "upstream failed", tt.cause); n != 1 {
				t.Fatalf("%d log lines name %q, want 1:\n%s", n, tt.cause, s.Log())
			}
		})
	}
}

// TestConnectListenLoopbackOnly: a non-loopback listen address is refused
// unless -listen-insecure says otherwise.
func TestConnectListenLoopbackOnly(t *testing.T) {
	t.Parallel()
	bin := gearproxyBinary(t)
	password := filepath.Join(t.TempDir(), "password")
	os.WriteFile(password, []byte("x"), 0o600)
	_, port, _ := net.SplitHostPort(freeAddr(t))
	args := []string{"connect", "-listen", "0.0.0.0:" + port, "-server", "127.0.0.1:1", "-user", "u", "-password-file", password}
	r := runTool(t, 30*time.Second, nil, bin, args...)
	if r.Exit != 1 || !strings.Contains(r.Stderr, "not loopback") {
		t.Fatalf("non-loopback listen:\n%s", r)
	}
	s := startServer(t, "connect", bin, append(args[:2:2], append([]string{"{addr}", "-listen-insecure"}, args[3:]...)...)...)
	if !s.Stop(ioTimeout) {
		t.Fatalf("-listen-insecure connect did not stop on SIGTERM:\n%s", s.Log())
	}
	// A password flag does not exist: it would show in ps.
	r = runTool(t, 30*time.Second, nil, bin, "connect", "-server", "127.0.0.1:1", "-password", "x")
	if r.Exit != 2 {
		t.Fatalf("-password accepted:\n%s", r)
	}
}

// TestConnectGoClient: the Go client without TLS or SASL through `gearproxy
// connect` using each mechanism, to a Go worker connected directly with TLS
// + SCRAM.
func TestConnectGoClient(t *testing.T) {
	t.Parallel()
	requirePeer(t, "gearmand")
	up, pki := connectUpstream(t)
	cert := pki.Issue(t, connectCertCN)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w, err := client.NewWorker(client.Config{Addr: up.Addr,
		TLS:         &tls.Config{RootCAs: up.Pool, ServerName: up.ServerName},
		Credentials: &client.Credentials{Mechanism: client.MechSCRAM, Username: connectUser, Password: connectPassword}})
	if err != nil {
		t.Fatal(err)
	}
	w.Register("connect.go.reverse", 0, func(ctx context.Context, j *client.WorkerJob) ([]byte, error) {
		b := []byte(string(j.Data))
		for i, k := 0, len(b)-1; i < k; i, k = i+1, k-1 {
			b[i], b[k] = b[k], b[i]
		}
		return b, nil
	})
	go w.Run(ctx)
	tests := []struct {
		mechanism string
		password  string
		extra     []string
	}{
		{"PLAIN", connectPassword, nil},
		{"SCRAM-SHA-256", connectPassword, nil},
		{"SCRAM-SHA-256-PLUS", connectPassword, nil},
		{"EXTERNAL", "", []string{"-cert", cert.CertFile, "-key", cert.KeyFile}},
	}
	for _, tt := range tests {
		t.Run(tt.mechanism, func(t *testing.T) {
			s := startConnect(t, up, tt.password, append([]string{"-mechanism", tt.mechanism}, tt.extra...)...)
			c, err := client.Dial(ctx, client.Config{Addr: s.Addr})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			jctx, jcancel := context.WithTimeout(ctx, ioTimeout)
			defer jcancel()
			got, err := c.Do(jctx, client.Job{Function: "connect.go.reverse", Data: []byte("through " + tt.mechanism)})
			if want := reverse("through " + tt.mechanism); err != nil || string(got) != want {
				t.Fatalf("Do: %q, %v; want %q", got, err, want)
			}
			user := connectUser
			if tt.mechanism == "EXTERNAL" {
				user = connectCertUser
			}
			if logLines(s, "relay open", "user="+user) == 0 {
				t.Fatalf("no relay open as %s:\n%s", user, s.Log())
			}
		})
	}
}

func reverse(s string) string {
	b := []byte(s)
	for i, k := 0, len(b)-1; i < k; i, k = i+1, k-1 {
		b[i], b[k] = b[k], b[i]
	}
	return string(b)
}

// TestConnectSIGTERMDrains: on SIGTERM `gearproxy connect` stops
// accepting, keeps open relays working until -drain-timeout, then closes
// them and exits 0.
func TestConnectSIGTERMDrains(t *testing.T) {
	t.Parallel()
	requirePeer(t, "gearmand")
	up, _ := connectUpstream(t)
	s := startConnect(t, up, connectPassword, "-drain-timeout", "2s")
	c := dialRaw(t, s.Addr)
	c.Send(protocol.EchoReq, "before")
	c.Expect(protocol.EchoRes, "before")
	if err := syscall.Kill(s.Pid, syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := waitClosedPort(s.Addr); err != nil {
		t.Fatal(err)
	}
	c.Send(protocol.EchoReq, "draining")
	c.Expect(protocol.EchoRes, "draining")
	select {
	case <-s.Exited():
	case <-time.After(ioTimeout):
		t.Fatalf("connect did not exit after the drain timeout:\n%s", s.Log())
	}
	c.WaitClosed()
	if s.cmd.ProcessState.ExitCode() != 0 || logLines(s, "drain timeout") != 1 {
		t.Fatalf("exit %d:\n%s", s.cmd.ProcessState.ExitCode(), s.Log())
	}
}

// waitClosedPort waits until addr refuses connections.
func waitClosedPort(addr string) error {
	deadline := time.Now().Add(ioTimeout)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return nil
		}
		c.Close()
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s still accepts connections", addr)
}

// TestConnectPasswordFromEnv: without -password-file the password comes
// from GEARPROXY_PASSWORD.
func TestConnectPasswordFromEnv(t *testing.T) {
	t.Parallel()
	requirePeer(t, "gearmand")
	up, _ := connectUpstream(t)
	s := startServer(t, "connect", "env", "GEARPROXY_PASSWORD="+connectPassword, gearproxyBinary(t),
		"connect", "-listen", "{addr}", "-server", up.Addr, "-server-name", up.ServerName, "-ca", up.CAFile, "-user", connectUser)
	c := dialRaw(t, s.Addr)
	c.Send(protocol.EchoReq, "env")
	c.Expect(protocol.EchoRes, "env")
	if logLines(s, "relay open", "user="+connectUser) == 0 {
		t.Fatalf("no relay open:\n%s", s.Log())
	}
}

// phpForbidden submits a function the user may not submit, in the ways a
// PHP user would, and prints what PHP shows of the refusal: the return
// value, returnCode() and error(), or the exception.
const phpForbidden = `<?php
require %q;
[, $host, $port, $fn] = $argv;
$c = new GearmanClient();
$c->setTimeout(10000);
$c->addServer($host, (int)$port);
foreach (['doNormal', 'doBackground'] as $call) {
    try {
        $r = $c->$call($fn, 'x');
        printf("%%s: %%s rc=%%s error=%%s\n", $call, var_export($r, true), rc($c->returnCode()), $c->error());
    } catch (Throwable $e) {
        printf("%%s: %%s: %%s\n", $call, get_class($e), $e->getMessage());
    }
}
// The same client goes on: an allowed background job is queued.
$c->doBackground('connect.allowed.after', 'x');
printf("then: %%s\n", rc($c->returnCode()));
`

// TestConnectPHPForbidden: a function the ACL forbids surfaces to PHP as
// an error naming PERMISSION_DENIED, on the client and on the worker side,
// and the connection stays usable.
func TestConnectPHPForbidden(t *testing.T) {
	t.Parallel()
	requirePeer(t, "gearmand", "php")
	up, _ := connectUpstream(t)
	s := startConnect(t, up, connectPassword, "-mechanism", "SCRAM-SHA-256")
	host, port, _ := net.SplitHostPort(s.Addr)
	r := runTool(t, 30*time.Second, nil, "php", writePHP(t, fmt.Sprintf(phpForbidden, testdata("php_common.php"))), host, port, connectForbidden)
	// libgearman's error() ends with its source line and pid: compare
	// up to the proxy's text.
	denied := "rc=SERVER_ERROR error=_client_run_tasks(GEARMAN_SERVER_ERROR) PERMISSION_DENIED:submit " + connectForbidden + " is not allowed -> "
	lines := strings.Split(r.Stdout, "\n")
	if r.Exit != 0 || len(lines) != 4 || !strings.HasPrefix(lines[0], "doNormal: '' "+denied) ||
		!strings.HasPrefix(lines[1], "doBackground: '' "+denied) || lines[2] != "then: SUCCESS" {
		t.Fatalf("php client of a forbidden function:\n%s", r)
	}
	t.Logf("php error(): %s", strings.TrimPrefix(lines[0], "doNormal: '' "))
	// The worker's CAN_DO is refused in the reply slot it does not
	// have: libgearman meets the ERROR at its next GRAB_JOB and work()
	// fails instead of waiting for jobs it will never get.
	w := runTool(t, 30*time.Second, nil, "php", testdata("php_worker.php"), s.Addr, connectForbidden, "reverse", "1")
	if w.Exit != 3 || w.Stdout != "work: UNEXPECTED_PACKET\n" || !strings.Contains(w.Stderr, "unexpected packet:GEARMAN_ERROR") {
		t.Fatalf("php worker of a forbidden function:\n%s", w)
	}
	if n := logLines(s, "upstream failed"); n != 0 {
		t.Fatalf("a refused function is not an upstream failure:\n%s", s.Log())
	}
}

// TestConnectGoClientDirect: the Go client needs no sidecar. Against a
// bare gearmand it speaks plain Gearman (no TLS, no SASL); to gearproxy it
// speaks TLS and logs in with each mechanism, and a function its ACL
// forbids comes back as a PERMISSION_DENIED server error.
func TestConnectGoClientDirect(t *testing.T) {
	t.Parallel()
	requirePeer(t, "gearmand")
	gearmand := startGearmand(t)
	up, pki := startConnectProxy(t, []proxyBackend{{Name: "gm1", Addr: gearmand.Addr}})
	cert := pki.Issue(t, connectCertCN)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tlsConfig := func(certs ...tls.Certificate) *tls.Config {
		return &tls.Config{RootCAs: up.Pool, ServerName: up.ServerName, Certificates: certs}
	}
	// One worker on each server: plain on gearmand, and on the proxy
	// logged in by its certificate alone (no SASL at all).
	runWorker := func(cfg client.Config) {
		w, err := client.NewWorker(cfg)
		if err != nil {
			t.Fatal(err)
		}
		w.Register("connect.direct", 0, func(ctx context.Context, j *client.WorkerJob) ([]byte, error) {
			return []byte(reverse(string(j.Data))), nil
		})
		done := make(chan error, 1)
		go func() { done <- w.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil && ctx.Err() == nil {
				t.Errorf("worker on %s: %v", cfg.Addr, err)
			}
		})
	}
	runWorker(client.Config{Addr: gearmand.Addr})
	runWorker(client.Config{Addr: up.Addr, TLS: tlsConfig(cert.TLS)})

	password := &client.Credentials{Username: connectUser, Password: connectPassword}
	tests := []struct {
		name string
		cfg  client.Config
	}{
		{"bare gearmand", client.Config{Addr: gearmand.Addr}},
		{"PLAIN", client.Config{Addr: up.Addr, TLS: tlsConfig(), Credentials: withMechanism(password, client.MechPlain)}},
		{"SCRAM-SHA-256", client.Config{Addr: up.Addr, TLS: tlsConfig(), Credentials: withMechanism(password, client.MechSCRAM)}},
		{"SCRAM-SHA-256-PLUS", client.Config{Addr: up.Addr, TLS: tlsConfig(), Credentials: withMechanism(password, client.MechSCRAMPlus)}},
		{"EXTERNAL", client.Config{Addr: up.Addr, TLS: tlsConfig(cert.TLS), Credentials: &client.Credentials{Mechanism: client.MechExternal}}},
		{"certificate login", client.Config{Addr: up.Addr, TLS: tlsConfig(cert.TLS)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := client.Dial(ctx, tt.cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			jctx, jcancel := context.WithTimeout(ctx, ioTimeout)
			defer jcancel()
			data := "direct " + tt.name
			if got, err := c.Do(jctx, client.Job{Function: "connect.direct", Data: []byte(data)}); err != nil || string(got) != reverse(data) {
				t.Fatalf("Do: %q, %v; want %q", got, err, reverse(data))
			}
			task, err := c.Submit(jctx, client.Job{Function: "connect.direct.bg", Unique: "u-" + tt.name, Data: []byte(data), Background: true}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := task.Wait(jctx); err != nil {
				t.Fatalf("background job: %v", err)
			}
			st, err := c.Status(jctx, task.Handle())
			if err != nil || !st.Known || st.Running {
				t.Fatalf("status of a queued background job: %+v, %v", st, err)
			}
			if tt.cfg.TLS == nil {
				return
			}
			_, err = c.Do(jctx, client.Job{Function: connectForbidden, Data: []byte(data)})
			var se *client.ServerError
			if !errors.As(err, &se) || se.Code != "PERMISSION_DENIED" {
				t.Fatalf("forbidden function: %v, want a PERMISSION_DENIED server error", err)
			}
			t.Logf("forbidden function: %v", err)
		})
	}
}

func withMechanism(c *client.Credentials, mechanism string) *client.Credentials {
	cc := *c
	cc.Mechanism = mechanism
	return &cc
}
