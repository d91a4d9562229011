package test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startStunnel runs stunnel4 in client mode: plaintext on a local port,
// TLS with a client certificate to the proxy, as an unmodified Gearman
// client would be deployed in front of a TLS-only gearproxy.
func startStunnel(t testing.TB, sp *secureProxy, certFile, keyFile string) string {
	t.Helper()
	if _, err := exec.LookPath("stunnel4"); err != nil {
		if inCI() {
			t.Fatalf("stunnel4 is required in CI: %v", err)
		}
		t.Skipf("stunnel4 missing: %v", err)
	}
	for attempt := 0; attempt < 3; attempt++ {
		dir, err := os.MkdirTemp(workDir, "stunnel-")
		if err != nil {
			t.Fatal(err)
		}
		local := freeAddr(t)
		conf := filepath.Join(dir, "stunnel.conf")
		text := fmt.Sprintf(`foreground = yes
pid =
debug = notice
[gearman]
client = yes
accept = %s
connect = %s
cert = %s
key = %s
CAfile = %s
verifyChain = yes
checkIP = 127.0.0.1
`, local, sp.TLSAddr, certFile, keyFile, sp.pki.CAFile)
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		if s := startProcess(t, "stunnel", local, filepath.Join(dir, "stunnel.log"), "stunnel4", conf); s != nil {
			return local
		}
	}
	t.Fatal("stunnel4 did not start")
	return ""
}

// php-gearman and the gearman CLI, unmodified, through stunnel presenting
// cert-worker's certificate: the certificate alone logs them in as
// cert-worker, whose ACL they then meet.
func TestSecurityStunnelPeers(t *testing.T) {
	t.Parallel()
	requirePeer(t, "php", "gearman")
	pki := newTestPKI(t, "ca")
	sp := startSecureProxy(t, pki, "")
	certFile, keyFile, _ := pki.issue(t, "cert-worker", false, time.Now().Add(time.Hour))
	local := startStunnel(t, sp, certFile, keyFile)
	host, port, _ := strings.Cut(local, ":")

	worker := startTool(t, nil, "gearman", "-h", host, "-p", port, "-w", "-f", "cli.allowed", "--", "tr", "a-z", "A-Z")
	defer worker.Kill()

	php := `$c = new GearmanClient();
$c->addServer($argv[1], (int)$argv[2]);
$c->setTimeout(10000);
$r = $c->doNormal("cli.allowed", "hello through stunnel");
echo "allowed: ", $c->returnCode() == GEARMAN_SUCCESS ? "ok " . $r : "failed " . $c->error(), "\n";
$r = $c->doNormal("cli.forbidden", "x");
echo "forbidden: ", $c->returnCode() == GEARMAN_SUCCESS ? "ok " . $r : "failed " . $c->error(), "\n";
`
	res := runTool(t, 30*time.Second, nil, "php", "-r", php, host, port)
	t.Logf("php: %s %s", res.Stdout, res.Stderr)
	if !strings.Contains(res.Stdout, "allowed: ok HELLO THROUGH STUNNEL") {
		t.Fatalf("php allowed submit: %+v", res)
	}
	if !strings.Contains(res.Stdout, "forbidden: failed") || !strings.Contains(res.Stdout, "PERMISSION_DENIED") {
		t.Fatalf("php forbidden submit: %+v", res)
	}

	cli := runTool(t, 30*time.Second, strings.NewReader("cli data"), "gearman", "-h", host, "-p", port, "-f", "cli.allowed")
	if cli.Exit != 0 || !strings.Contains(cli.Stdout, "CLI DATA") {
		t.Fatalf("gearman CLI allowed submit: %+v", cli)
	}
	denied := runTool(t, 30*time.Second, strings.NewReader("x"), "gearman", "-h", host, "-p", port, "-f", "cli.forbidden")
	t.Logf("gearman CLI forbidden: exit %d, %s %s", denied.Exit, denied.Stdout, denied.Stderr)
	// The CLI exits 0 even when its job failed: its message is the proof.
	if !strings.Contains(denied.Stderr, "PERMISSION_DENIED") || strings.Contains(denied.Stdout, "X") {
		t.Fatalf("gearman CLI forbidden submit: %+v", denied)
	}
	sp.waitLog(t, "auth.success", "user=cert-worker", "mechanism=certificate")
	sp.waitLog(t, "acl.deny", "user=cert-worker", "function=cli.forbidden")
}
