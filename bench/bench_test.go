package bench

import (
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
)

// quick is a small run that finishes in well under a second on a correct
// server; a fault that loses a job costs one stall Timeout, long enough
// that a loaded CI machine never stalls a clean run that long.
func quick(addr string, m Mode) Config {
	return Config{Servers: []string{addr}, Mode: m, Clients: 3, Workers: 2, Pipeline: 4,
		Payload: 64, Jobs: 200, Timeout: 2 * time.Second}
}

func mustRun(t *testing.T, cfg Config) *Result {
	t.Helper()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestFakeCleanRun(t *testing.T) {
	for _, m := range []Mode{Foreground, Background, Echo} {
		t.Run(string(m), func(t *testing.T) {
			s := startFake(t, faultNone)
			res := mustRun(t, quick(s.addr(), m))
			if !res.OK() || res.Jobs != 200 {
				t.Fatalf("clean run: %+v", res)
			}
		})
	}
}

// TestDetectsFaults is the reason the tool exists: a server that loses,
// duplicates or corrupts one job out of 200 fails the run.
func TestDetectsFaults(t *testing.T) {
	cases := []struct {
		name  string
		mode  Mode
		fault fault
		check func(*Result) bool
	}{
		{"fg mismatch", Foreground, faultMismatch, func(r *Result) bool { return r.Mismatched == 1 && r.Jobs == 199 }},
		{"fg duplicate", Foreground, faultDuplicate, func(r *Result) bool { return r.Duplicated == 1 && r.Jobs == 200 }},
		{"fg loss", Foreground, faultLose, func(r *Result) bool { return r.Lost == 1 && r.Jobs == 199 }},
		{"fg result before JOB_CREATED", Foreground, faultEarly, func(r *Result) bool {
			return r.Mismatched == 1 && r.Lost == 0 && r.Duplicated == 0 && r.Jobs == 199
		}},
		{"bg mismatch", Background, faultMismatch, func(r *Result) bool { return r.Mismatched == 1 && r.Lost == 1 }},
		{"bg duplicate", Background, faultDuplicate, func(r *Result) bool { return r.Duplicated == 1 && r.Jobs == 200 }},
		{"bg loss", Background, faultLose, func(r *Result) bool { return r.Lost == 1 && r.Jobs == 199 }},
		{"echo mismatch", Echo, faultMismatch, func(r *Result) bool { return r.Mismatched == 1 && r.Jobs == 199 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := startFake(t, tc.fault)
			res := mustRun(t, quick(s.addr(), tc.mode))
			if res.OK() {
				t.Fatalf("fault not detected: %+v", res)
			}
			if !tc.check(res) {
				t.Fatalf("wrong counts: jobs %d lost %d duplicated %d mismatched %d failed %d errors %q",
					res.Jobs, res.Lost, res.Duplicated, res.Mismatched, res.Failed, res.Errors)
			}
		})
	}
}

func TestDialErrorIsReturned(t *testing.T) {
	s := startFake(t, faultNone)
	addr := s.addr()
	s.close()
	if _, err := Run(context.Background(), quick(addr, Foreground)); err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("want a dial error naming %s, got %v", addr, err)
	}
}

func TestConfigErrors(t *testing.T) {
	for name, cfg := range map[string]Config{
		"no server":        {},
		"bad mode":         {Servers: []string{"x"}, Mode: "nope"},
		"bad unique":       {Servers: []string{"x"}, Unique: "nope"},
		"bg needs jobs":    {Servers: []string{"x"}, Mode: Background, Duration: time.Second},
		"no workers in fg": {Servers: []string{"x"}, Workers: -1},
		"bad priority":     {Servers: []string{"x"}, Priority: "urgent"},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestSubmitTypes pins the packet each mode and priority submits with; an
// unset priority is normal.
func TestSubmitTypes(t *testing.T) {
	cfg, err := Config{Servers: []string{"x"}}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if got := submitType(cfg.Mode, cfg.Priority); got != protocol.SubmitJob {
		t.Errorf("default config submits with %s, want SUBMIT_JOB", got)
	}
	for _, c := range []struct {
		m    Mode
		p    Priority
		want protocol.Type
	}{
		{Foreground, PriorityHigh, protocol.SubmitJobHigh}, {Foreground, PriorityLow, protocol.SubmitJobLow},
		{Background, PriorityNormal, protocol.SubmitJobBg}, {Background, PriorityHigh, protocol.SubmitJobHighBg},
		{Background, PriorityLow, protocol.SubmitJobLowBg},
	} {
		if got := submitType(c.m, c.p); got != c.want {
			t.Errorf("%s %s: %s, want %s", c.m, c.p, got, c.want)
		}
	}
}

func TestPayloadCheck(t *testing.T) {
	b := make([]byte, 50)
	fillPayload(b, 7, 1<<laneShift|9)
	if !isPayload(b, 7, 1<<laneShift|9, 50, 0) {
		t.Fatal("payload does not check against itself")
	}
	res := transform(nil, b)
	if !isPayload(res, 7, 1<<laneShift|9, 50, resultXOR) || isPayload(res, 7, 1<<laneShift|9, 50, 0) {
		t.Fatal("result check does not tell a result from its request")
	}
	for i := range b {
		bad := append([]byte(nil), res...)
		bad[i] ^= 1
		if isPayload(bad, 7, 1<<laneShift|9, 50, resultXOR) {
			t.Fatalf("a flipped bit at %d passes", i)
		}
	}
	if isPayload(res, 8, 1<<laneShift|9, 50, resultXOR) || isPayload(res, 7, 9, 50, resultXOR) || isPayload(res[:49], 7, 1<<laneShift|9, 50, resultXOR) {
		t.Fatal("another run, job or size passes")
	}
}

func TestUniqueModes(t *testing.T) {
	if u := appendUnique(nil, UniqueNone, 1, 2); len(u) != 0 {
		t.Errorf("none: %q", u)
	}
	a := appendUnique(nil, UniqueRandom, 0xffffffff, jobKey(UniqueRandom, 3, seqMask))
	if len(a) > maxUnique || len(a) > 63 {
		t.Errorf("longest unique %q is %d bytes", a, len(a))
	}
	if string(appendUnique(nil, UniqueRandom, 1, jobKey(UniqueRandom, 0, 5))) == string(appendUnique(nil, UniqueRandom, 1, jobKey(UniqueRandom, 1, 5))) {
		t.Error("random uniques of two clients coincide")
	}
	if jobKey(UniqueDuplicated, 0, 5) != jobKey(UniqueDuplicated, 3, 5) {
		t.Error("duplicated keys of two clients differ")
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h histogram
	for i := 1; i <= 10000; i++ {
		h.record(time.Duration(i) * time.Microsecond)
	}
	for _, c := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 5 * time.Millisecond}, {0.99, 9900 * time.Microsecond}} {
		got := h.quantile(c.q)
		if d := float64(got-c.want) / float64(c.want); d > 0.016 || d < -0.016 {
			t.Errorf("q%v = %v, want %v within 1.6%%", c.q, got, c.want)
		}
	}
	if h.max != 10*time.Millisecond || h.quantile(1) != h.max {
		t.Errorf("max %v, q1 %v", h.max, h.quantile(1))
	}
	for v := uint64(0); v < 1<<20; v = v*3/2 + 1 {
		if b := bucketOf(v); b < 0 || b >= histBuckets || bucketOf(bucketValue(b)) != b {
			t.Fatalf("bucket of %d is %d, whose middle %d falls elsewhere", v, b, bucketValue(b))
		}
	}
}

// gearmand starts a real gearmand -t 1 on a free port. Outside CI a missing
// gearmand skips the test; in CI it fails it.
func gearmand(t *testing.T) string { return gearmandB(t) }

func gearmandB(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("gearmand")
	if err != nil {
		bin = "/usr/sbin/gearmand"
		if _, err := os.Stat(bin); err != nil {
			if os.Getenv("CI") != "true" {
				t.Skip("gearmand not installed")
			}
			t.Fatal("gearmand not installed")
		}
	}
	for attempt := 0; attempt < 5; attempt++ {
		port := freePort(t)
		cmd := exec.Command(bin, "-t", "1", "-L", "127.0.0.1", "-p", port, "-l", "none")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
		addr := "127.0.0.1:" + port
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			if c, err := DialTCP(context.Background(), addr); err == nil {
				c.Close()
				return addr
			}
			if cmd.ProcessState != nil {
				break
			}
		}
	}
	t.Fatal("gearmand did not start")
	return ""
}

func freePort(t testing.TB) string {
	s := startFake(t, faultNone)
	addr := s.addr()
	s.close()
	return addr[strings.LastIndexByte(addr, ':')+1:]
}

func TestAgainstGearmand(t *testing.T) {
	addr := gearmand(t)
	for _, cfg := range []Config{
		{Mode: Foreground},
		{Mode: Foreground, Unique: UniqueDuplicated, Priority: PriorityHigh},
		{Mode: Foreground, Unique: UniqueNone, Priority: PriorityLow, Duration: 200 * time.Millisecond},
		{Mode: Background, Clients: 4, Pipeline: 32},
		{Mode: Background, Unique: UniqueDuplicated},
		{Mode: Echo},
	} {
		cfg.Servers = []string{addr}
		if cfg.Duration == 0 {
			cfg.Jobs = 3000
		}
		cfg.Function = "bench_test_" + string(cfg.Mode)
		res := mustRun(t, cfg)
		if !res.OK() || res.Jobs == 0 {
			t.Errorf("%s %s %s: %+v", cfg.Mode, cfg.Unique, cfg.Priority, res)
		}
		if cfg.Mode == Background && cfg.Unique == UniqueDuplicated && res.Jobs != int64(cfg.Jobs/8) {
			t.Errorf("duplicated bg: %d jobs ran, want the %d distinct uniques", res.Jobs, cfg.Jobs/8)
		}
	}
}

// TestTwoServers runs workers on both servers and clients spread over them.
func TestTwoServers(t *testing.T) {
	a, b := startFake(t, faultNone), startFake(t, faultNone)
	for _, m := range []Mode{Foreground, Background} {
		cfg := quick(a.addr(), m)
		cfg.Servers = append(cfg.Servers, b.addr())
		res := mustRun(t, cfg)
		if !res.OK() || res.Jobs != 200 {
			t.Fatalf("%s over two servers: %+v", m, res)
		}
	}
}
