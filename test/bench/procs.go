package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is one server process this program started.
type proc struct {
	name string
	addr string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// env owns every process the run starts, so that one stopAll ends them
// whatever path the program leaves by.
type env struct {
	dir       string
	gearproxy string
	gearmand  string
	self      string
	// baselineBin, when set, replaces gearmand as the baseline of the
	// server comparison.
	baselineBin string

	mu    sync.Mutex
	procs []*proc
	seq   int
}

// errNotBuilt says a gearproxy subcommand is still a placeholder.
var errNotBuilt = errors.New("not built yet")

// start runs argv (with "{addr}" replaced by a free 127.0.0.1 port) and
// waits until the port accepts connections. A port taken between our probe
// and the server's bind is retried with another.
func (e *env) start(ctx context.Context, name string, argv []string, setup func(addr string) error) (*proc, error) {
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		addr, err := freeAddr()
		if err != nil {
			return nil, err
		}
		if setup != nil {
			if err := setup(addr); err != nil {
				return nil, err
			}
		}
		args := make([]string, len(argv))
		for i, a := range argv {
			args[i] = strings.ReplaceAll(a, "{addr}", addr)
			args[i] = strings.ReplaceAll(args[i], "{port}", addr[strings.LastIndexByte(addr, ':')+1:])
		}
		p, err := e.spawn(ctx, name, addr, args)
		if err == nil {
			return p, nil
		}
		if errors.Is(err, errNotBuilt) {
			return nil, err
		}
		lastErr = err
	}
	return nil, lastErr
}

func (e *env) spawn(ctx context.Context, name, addr string, args []string) (*proc, error) {
	e.mu.Lock()
	e.seq++
	logPath := filepath.Join(e.dir, fmt.Sprintf("%02d-%s.log", e.seq, name))
	e.mu.Unlock()
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Servers die with this program even if it is killed: nothing is
	// left listening after a run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, addr: addr, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	e.mu.Lock()
	e.procs = append(e.procs, p)
	e.mu.Unlock()

	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			out, _ := os.ReadFile(logPath)
			if bytes.Contains(out, []byte(errNotBuilt.Error())) {
				return nil, fmt.Errorf("%s: %w", name, errNotBuilt)
			}
			return nil, fmt.Errorf("%s exited at start: %s", name, lastLines(out, 5))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return p, nil
		}
	}
	p.stop()
	return nil, fmt.Errorf("%s did not listen on %s within 10s (log %s)", name, addr, logPath)
}

func (e *env) startGearmand(ctx context.Context, name string) (*proc, error) {
	return e.start(ctx, name, []string{e.gearmand, "-t", "1", "-L", "127.0.0.1", "-p", "{port}",
		"-l", filepath.Join(e.dir, name+"-gearmand.log")}, nil)
}

func (e *env) startBundled(ctx context.Context, name string) (*proc, error) {
	return e.start(ctx, name, []string{e.gearproxy, "server", "-listen", "{addr}", "-log-level", "warn"}, nil)
}

// startBaseline starts what the bundled server is compared with: gearmand,
// or with -baseline-bin another gearproxy build's server (an A/B test of a
// change, with the same noise on both sides).
func (e *env) startBaseline(ctx context.Context, name string) (*proc, error) {
	if e.baselineBin == "" {
		return e.startGearmand(ctx, name)
	}
	return e.start(ctx, name, []string{e.baselineBin, "server", "-listen", "{addr}", "-log-level", "warn"}, nil)
}

func (e *env) baselineLabel() string {
	if e.baselineBin == "" {
		return "gearmand"
	}
	return "baseline"
}

// startRelay runs this program as a dumb TCP relay (two io.Copy) to target.
func (e *env) startRelay(ctx context.Context, name, target string) (*proc, error) {
	return e.start(ctx, name, []string{e.self, "-relay-listen", "{addr}", "-relay-target", target}, nil)
}

// startProxy runs `gearproxy run` with one plaintext listener in front of
// the given gearmand addresses, or of n bundled in-process backends.
func (e *env) startProxy(ctx context.Context, name string, gearmands []string, bundled int) (*proc, error) {
	cfgPath := filepath.Join(e.dir, name+".toml")
	setup := func(addr string) error {
		var b strings.Builder
		fmt.Fprintf(&b, "data_dir = %q\n\n[[listener]]\naddress = %q\nuser = \"bench\"\n\n", filepath.Join(e.dir, name+"-data"), addr)
		for i, a := range gearmands {
			fmt.Fprintf(&b, "[[backend]]\nname = \"gm%d\"\naddress = %q\n\n", i+1, a)
		}
		for i := 0; i < bundled; i++ {
			fmt.Fprintf(&b, "[[backend]]\nname = \"shard%d\"\nbundled = true\n\n", i+1)
		}
		b.WriteString("[[user]]\nname = \"bench\"\nsuperuser = true\n")
		// No admin HTTP listener: the comparison measures the Gearman
		// path, and several proxies must not compete for its port.
		b.WriteString("\n[admin]\naddress = \"\"\n")
		return os.WriteFile(cfgPath, []byte(b.String()), 0o600)
	}
	return e.start(ctx, name, []string{e.gearproxy, "run", "-config", cfgPath}, setup)
}

func (p *proc) stop() {
	if p.cmd.Process != nil {
		p.cmd.Process.Kill()
	}
	<-p.done
}

func (e *env) stopAll() {
	e.mu.Lock()
	procs := e.procs
	e.procs = nil
	e.mu.Unlock()
	for _, p := range procs {
		p.stop()
	}
}

// rss is the process's resident set from /proc/PID/status, in bytes.
func (p *proc) rss() (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("%s: no VmRSS", p.name)
}

// clockTick is USER_HZ, the unit of /proc/PID/stat times; 100 on every
// Linux this runs on.
const clockTick = 100

// cpuTime is the user+system CPU a process has used, from /proc/PID/stat
// (pid 0 means this process).
func cpuTime(pid int) time.Duration {
	path := "/proc/self/stat"
	if pid != 0 {
		path = fmt.Sprintf("/proc/%d/stat", pid)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	// The command name may contain spaces; fields count from after ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(utime+stime) * time.Second / clockTick
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// ctxSwitches is how many times the process's threads gave up or lost the
// CPU (voluntary and involuntary context switches over /proc/PID/task/*).
// Per job it shows how well a server batches: every wake-up of a sleeping
// thread is one, on any kind of server. (/proc/PID/io's syscall counts are
// not comparable: they miss gearmand's send and recv.)
func ctxSwitches(pid int) int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var n int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			k, v, ok := strings.Cut(line, ":")
			if ok && (k == "voluntary_ctxt_switches" || k == "nonvoluntary_ctxt_switches") {
				x, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += x
			}
		}
	}
	return n
}
