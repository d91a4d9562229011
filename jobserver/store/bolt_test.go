package store

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/protocol"
	bolt "go.etcd.io/bbolt"
)

func openT(t testing.TB, dir string, opts Options) *Bolt {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func loadAll(t testing.TB, s *Bolt) []*Job {
	t.Helper()
	var jobs []*Job
	if err := s.Load(func(j *Job) error { jobs = append(jobs, j); return nil }); err != nil {
		t.Fatalf("Load: %v", err)
	}
	return jobs
}

func TestRoundTripEveryField(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB: spans overflow pages
	jobs := []*Job{
		{ID: 1, Function: "resize", Unique: "u-1", Data: []byte("payload"), Priority: protocol.Normal},
		{ID: 2, Function: "resize", Unique: "", Data: nil, Priority: protocol.High},
		{ID: 3, Function: "f", Unique: strings.Repeat("x", 63), Data: []byte{0, 1, 0, 255}, Priority: protocol.Low, Retries: 3},
		{ID: 4, Function: "epoch", Unique: "e", Data: []byte("later"), When: 1893456000},
		{ID: 5, Function: "sched", Unique: "s", Sched: "5 4 * * 1", When: 1764300000},
		{ID: 6, Function: "map", Unique: "r", Reducer: "reduce", Data: []byte("words")},
		{ID: 7, Function: "neg", When: -1, Retries: math.MaxUint32},
		{ID: 8, Function: "ünïcode\x01", Unique: "ключ", Data: big},
		{ID: math.MaxUint64, Function: "last", Unique: "max-id"},
	}
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	for _, j := range jobs {
		if err := s.Add(j); err != nil {
			t.Fatalf("Add %d: %v", j.ID, err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	s = openT(t, dir, Options{})
	got := loadAll(t, s)
	if len(got) != len(jobs) {
		t.Fatalf("loaded %d jobs, want %d", len(got), len(jobs))
	}
	for i, want := range jobs {
		if len(want.Data) == 0 {
			want.Data = nil // an empty payload comes back as nil
		}
		if !reflect.DeepEqual(got[i], want) {
			t.Errorf("job %d:\n got %+v\nwant %+v", want.ID, abbrev(got[i]), abbrev(want))
		}
	}
	if s.LastID() != math.MaxUint64 {
		t.Errorf("LastID = %d, want %d", s.LastID(), uint64(math.MaxUint64))
	}
}

func abbrev(j *Job) Job {
	c := *j
	if len(c.Data) > 32 {
		c.Data = c.Data[:32]
	}
	return c
}

func TestFIFOOrderAfterReopen(t *testing.T) {
	const n = 3*loadChunk + 17 // several read chunks
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	// Concurrent submitters: IDs reach the committer out of order, as
	// they do from several connections.
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for id := uint64(w + 1); id <= n; id += 8 {
				s.AddAsync(&Job{ID: id, Function: "f", Unique: fmt.Sprint(id)}, func(err error) {
					if err != nil {
						t.Errorf("AddAsync %d: %v", id, err)
					}
				})
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	got := loadAll(t, s)
	if len(got) != n {
		t.Fatalf("loaded %d jobs, want %d", len(got), n)
	}
	for i, j := range got {
		if j.ID != uint64(i+1) || j.Unique != fmt.Sprint(i+1) {
			t.Fatalf("position %d holds job %d (unique %q), want %d", i, j.ID, j.Unique, i+1)
		}
	}
}

// TestConcurrentAddsShareOneCommit holds the first commit until 50 more
// Adds wait behind it, then checks that those 50 took one commit and one
// sync: the group commit the throughput depends on.
func TestConcurrentAddsShareOneCommit(t *testing.T) {
	const waiters = 50
	release := make(chan struct{})
	var mu sync.Mutex
	var sizes []int
	opts := Options{beforeCommit: func(ops int) {
		mu.Lock()
		sizes = append(sizes, ops)
		first := len(sizes) == 1
		mu.Unlock()
		if first {
			<-release
		}
	}}
	s := openT(t, t.TempDir(), opts)
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := s.Add(&Job{ID: 1, Function: "f"}); err != nil {
			t.Error(err)
		}
	})
	waitFor(t, func() bool { mu.Lock(); defer mu.Unlock(); return len(sizes) == 1 })
	for i := range waiters {
		wg.Go(func() {
			if err := s.Add(&Job{ID: uint64(i + 2), Function: "f"}); err != nil {
				t.Error(err)
			}
		})
	}
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.pending) == waiters })
	close(release)
	wg.Wait()
	st := s.Stats()
	// Two commits; their syncs may be one, when the second frame is
	// written before the first frame's sync starts and one sync covers
	// both (two syncs may be in flight, never more than one per commit).
	if st.Commits != 2 || st.Syncs < 1 || st.Syncs > 2 || st.Added != waiters+1 {
		t.Errorf("stats %+v, want 2 commits, 1 or 2 syncs, %d added", st, waiters+1)
	}
	if !reflect.DeepEqual(sizes, []int{1, waiters}) {
		t.Errorf("commit sizes %v, want [1 %d]", sizes, waiters)
	}
}

// waitFor polls cond; the test's own deadline bounds it.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for !cond() {
		time.Sleep(time.Millisecond)
	}
}

func TestRemoveAndSetRetriesPersist(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	for id := uint64(1); id <= 5; id++ {
		if err := s.Add(&Job{ID: id, Function: "f", Data: []byte{byte(id)}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, err := range []error{s.Remove(2, 4), s.SetRetries(3, 7), s.SetRetries(99, 1), s.Remove(42), s.Remove()} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	got := loadAll(t, s)
	want := []*Job{
		{ID: 1, Function: "f", Data: []byte{1}},
		{ID: 3, Function: "f", Data: []byte{3}, Retries: 7},
		{ID: 5, Function: "f", Data: []byte{5}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("after reopen:\n got %+v\nwant %+v", got, want)
	}
	// Every job ends: the next server must still number after 5.
	if err := s.Remove(1, 3, 5); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, Options{})
	if got := loadAll(t, s); len(got) != 0 {
		t.Errorf("%d jobs left, want none", len(got))
	}
	if s.LastID() != 5 {
		t.Errorf("LastID = %d after every job ended, want 5", s.LastID())
	}
}

func TestAddAsyncCallsDoneInOrderAfterCommit(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	const n = 1000
	var mu sync.Mutex
	var order []uint64
	var wg sync.WaitGroup
	wg.Add(n)
	for id := uint64(1); id <= n; id++ {
		s.AddAsync(&Job{ID: id, Function: "f"}, func(err error) {
			if err != nil {
				t.Error(err)
			}
			mu.Lock()
			order = append(order, id)
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	for i, id := range order {
		if id != uint64(i+1) {
			t.Fatalf("done #%d was for job %d", i, id)
		}
	}
	if st := s.Stats(); st.Added != n {
		t.Errorf("Added = %d when every done ran, want %d", st.Added, n)
	}
}

func TestClosedStoreRefusesWork(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Add(&Job{ID: 1}); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v, want ErrClosed", err)
	}
	var got error
	s.AddAsync(&Job{ID: 2}, func(err error) { got = err })
	if !errors.Is(got, ErrClosed) {
		t.Errorf("AddAsync after Close: %v, want ErrClosed", got)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// fileHas reports whether the store's files, as the kernel has them (page
// cache included), contain marker: whether a process crash now would keep
// it.
func fileHas(t *testing.T, s *Bolt, marker []byte) bool {
	t.Helper()
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, marker) {
			return true
		}
	}
	return false
}

func TestSyncModes(t *testing.T) {
	marker := []byte("marker-7f3a9c-job-data")
	// Windows no test outlives: nothing is synced or checkpointed unless
	// the mode itself does it.
	long := Options{BatchWindow: time.Hour, CheckpointInterval: time.Hour}
	for _, c := range []struct {
		mode  SyncMode
		syncs uint64
	}{
		{SyncAlways, 1}, // synced before Add returns
		{SyncBatch, 0},  // written, synced when the window ends
		{SyncNone, 0},   // written, never synced
	} {
		t.Run(c.mode.String(), func(t *testing.T) {
			dir := t.TempDir()
			opts := long
			opts.Sync = c.mode
			s := openT(t, dir, opts)
			if err := s.Add(&Job{ID: 1, Function: "f", Data: marker}); err != nil {
				t.Fatal(err)
			}
			// In every mode the job is with the operating system when Add
			// returns, so a crash of the process alone never loses it.
			if !fileHas(t, s, marker) {
				t.Error("job not in the store's files when Add returned")
			}
			if st := s.Stats(); st.Commits != 1 || st.Syncs != c.syncs {
				t.Errorf("stats %+v, want 1 commit and %d syncs", st, c.syncs)
			}
			done := make(chan error, 1)
			s.AddAsync(&Job{ID: 2, Function: "f"}, func(err error) { done <- err })
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			s = openT(t, dir, Options{})
			if got := loadAll(t, s); len(got) != 2 {
				t.Errorf("%d jobs after Close, want 2", len(got))
			}
		})
	}
}

func TestParseSyncMode(t *testing.T) {
	for _, m := range []SyncMode{SyncAlways, SyncBatch, SyncNone} {
		got, err := ParseSyncMode(m.String())
		if err != nil || got != m {
			t.Errorf("ParseSyncMode(%q) = %v, %v", m.String(), got, err)
		}
	}
	if _, err := ParseSyncMode("sometimes"); err == nil {
		t.Error("ParseSyncMode accepted \"sometimes\"")
	}
	if _, err := Open(t.TempDir(), Options{Sync: 7}); err == nil {
		t.Error("Open accepted sync mode 7")
	}
}

// TestUnreadableStoreNamesFileAndCause: whatever is wrong with the file,
// Open or Load fails with its path and the reason, and nothing is
// replaced.
func TestUnreadableStoreNamesFileAndCause(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"not a bbolt file", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, FileName), bytes.Repeat([]byte("garbage!"), 4096))
		}, "invalid database"},
		{"meta pages overwritten", func(t *testing.T, dir string) {
			storeWithJobs(t, dir, 10)
			f, err := os.OpenFile(filepath.Join(dir, FileName), os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			// Both meta pages: bbolt falls back to the second if only
			// the first is bad.
			for _, off := range []int64{16, 4096 + 16} {
				if _, err := f.WriteAt(bytes.Repeat([]byte{0xAB}, 64), off); err != nil {
					t.Fatal(err)
				}
			}
		}, FileName},
		{"job bytes changed", func(t *testing.T, dir string) {
			storeWithJobs(t, dir, 10)
			path := filepath.Join(dir, FileName)
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			// Every copy: freed pages still hold older ones.
			n := 0
			for i := bytes.Index(b, []byte("payload-5")); i >= 0; i = bytes.Index(b, []byte("payload-5")) {
				b[i] ^= 0x20
				n++
			}
			if n == 0 {
				t.Fatal("job data not found in file")
			}
			writeFile(t, path, b)
		}, "job 5: checksum mismatch"},
		{"other format version", func(t *testing.T, dir string) {
			storeWithJobs(t, dir, 1)
			rawUpdate(t, dir, func(tx *bolt.Tx) error {
				return tx.Bucket(bucketMeta).Put(keyFormat, binary.BigEndian.AppendUint32(nil, 99))
			})
		}, "format version 99, this build reads version 1"},
		{"not a job store", func(t *testing.T, dir string) {
			rawUpdate(t, dir, func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket([]byte("something-else"))
				return err
			})
		}, "not a gearproxy job store"},
		{"unknown value version", func(t *testing.T, dir string) {
			storeWithJobs(t, dir, 3)
			rawUpdate(t, dir, func(tx *bolt.Tx) error {
				return tx.Bucket(bucketJobs).Put(appendKey(nil, 2), []byte{9, 1, 0, 0, 0, 0, 0, 0, 0, 0})
			})
		}, "job 2: value version 9, this build reads 1"},
		{"directory in the way", func(t *testing.T, dir string) {
			if err := os.Mkdir(filepath.Join(dir, FileName), 0o700); err != nil {
				t.Fatal(err)
			}
		}, "is a directory"},
		{"no permission", func(t *testing.T, dir string) {
			if os.Geteuid() == 0 {
				t.Skip("root reads any file")
			}
			storeWithJobs(t, dir, 1)
			if err := os.Chmod(filepath.Join(dir, FileName), 0); err != nil {
				t.Fatal(err)
			}
		}, "permission denied"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			c.setup(t, dir)
			path := filepath.Join(dir, FileName)
			before, _ := os.ReadFile(path)
			err := openAndLoad(dir)
			if err == nil {
				t.Fatal("the damaged store opened and loaded")
			}
			msg := err.Error()
			if !strings.Contains(msg, path) || !strings.Contains(msg, c.want) {
				t.Errorf("error %q\nwant it to name %s and say %q", msg, path, c.want)
			}
			if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
				for i := range before {
					if i < len(after) && before[i] != after[i] {
						t.Errorf("first change at offset %d (page %d)", i, i/4096)
						break
					}
				}
				t.Errorf("the failed open changed the file (%d -> %d bytes)", len(before), len(after))
			}
		})
	}
}

func openAndLoad(dir string) error {
	s, err := Open(dir, Options{})
	if err != nil {
		return err
	}
	defer s.Close()
	return s.Load(func(*Job) error { return nil })
}

func storeWithJobs(t *testing.T, dir string, n int) {
	t.Helper()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		if err := s.Add(&Job{ID: uint64(i), Function: "f", Data: fmt.Appendf(nil, "payload-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func rawUpdate(t *testing.T, dir string, fn func(*bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// lockHelperEnv makes the test binary, run again as a child, hold a store
// open in the directory it names until its stdin closes.
const lockHelperEnv = "GEARPROXY_STORE_LOCK_HELPER_DIR"

func TestLockHelperProcess(t *testing.T) {
	dir := os.Getenv(lockHelperEnv)
	if dir == "" {
		t.Skip("runs only as the child of TestLockedByAnotherProcess")
	}
	s, err := Open(dir, Options{})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(1)
	}
	fmt.Println("ready")
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	_ = s.Close()
}

func TestLockedByAnotherProcess(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$")
	cmd.Env = append(os.Environ(), lockHelperEnv+"="+dir)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper said %q, %v", line, err)
	}

	_, err = Open(dir, Options{})
	var le *LockedError
	if !errors.As(err, &le) {
		t.Fatalf("Open while another process holds it: %v, want *LockedError", err)
	}
	want := fmt.Sprintf("locked by pid %d", cmd.Process.Pid)
	if le.PID != cmd.Process.Pid || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), filepath.Join(dir, FileName)) {
		t.Errorf("error %q, want it to name the file and say %q", err, want)
	}

	// Once the holder is gone the store opens, with the holder's data.
	_ = stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v", err)
	}
	s := openT(t, dir, Options{})
	if got := readPid(filepath.Join(dir, pidFileName)); got != os.Getpid() {
		t.Errorf("pid file names %d, want this process %d", got, os.Getpid())
	}

	// The same process opening it twice is told so.
	_, err = Open(dir, Options{})
	if !errors.As(err, &le) || le.PID != os.Getpid() || !strings.Contains(err.Error(), "this process") {
		t.Errorf("second Open in one process: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, pidFileName)); !os.IsNotExist(err) {
		t.Errorf("pid file left after Close: %v", err)
	}
}
