package client_test

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// gearmandPath is the reference job server the client is tested against.
const gearmandPath = "/usr/sbin/gearmand"

// addrEnv carries the address of the gearmand that TestMain started to the
// tests and the examples.
const addrEnv = "GEARMAN_ADDR"

// TestMain starts one real gearmand for the whole package. Without it the
// gearmand tests skip and the examples (which print its answers) are not
// run, except in CI, where a missing gearmand is a failure.
func TestMain(m *testing.M) {
	flag.Parse()
	stop, err := startGearmand()
	if err != nil {
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "client tests: gearmand is required in CI:", err)
			os.Exit(1)
		}
		fmt.Fprintln(os.Stderr, "client tests: no gearmand, its tests and the examples are skipped:", err)
		flag.Set("test.run", "^Test")
	}
	code := m.Run()
	stop()
	os.Exit(code)
}

// startGearmand runs gearmand on a free 127.0.0.1 port, retrying when
// another process wins the race for the port.
func startGearmand() (stop func(), err error) {
	stop = func() {}
	if _, err := os.Stat(gearmandPath); err != nil {
		return stop, err
	}
	dir, err := os.MkdirTemp("", "client-gearmand-")
	if err != nil {
		return stop, err
	}
	for attempt := 0; attempt < 3; attempt++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return stop, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		cmd := exec.Command(gearmandPath, "--listen=127.0.0.1", "--port="+strconv.Itoa(port), "-t", "1",
			"--log-file="+filepath.Join(dir, "gearmand.log"), "--pid-file="+filepath.Join(dir, "gearmand.pid"),
			"--verbose=WARNING")
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return stop, err
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if waitPort(addr, exited) {
			os.Setenv(addrEnv, addr)
			return func() {
				cmd.Process.Kill()
				<-exited
				os.RemoveAll(dir)
			}, nil
		}
		cmd.Process.Kill()
		<-exited
	}
	os.RemoveAll(dir)
	return stop, fmt.Errorf("gearmand did not start")
}

func waitPort(addr string, exited chan struct{}) bool {
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return false
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// gearmand returns the test server's address or skips the test.
func gearmand(t testing.TB) string {
	t.Helper()
	addr := os.Getenv(addrEnv)
	if addr == "" {
		t.Skip("no gearmand")
	}
	return addr
}
