package store

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// crashCopy copies the store's files as they are now, as the disk would
// hold them if the process died at this moment: the store under test
// keeps running and the copy is opened as the restarted server would.
func crashCopy(t *testing.T, s *Bolt) string {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.Name() == pidFileName {
			continue
		}
		b, err := os.ReadFile(filepath.Join(s.dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dst, e.Name()), b)
	}
	return dst
}

func ids(jobs []*Job) []uint64 {
	var out []uint64
	for _, j := range jobs {
		out = append(out, j.ID)
	}
	return out
}

// noCheckpoint keeps every change in the log for as long as a test runs.
var noCheckpoint = Options{CheckpointInterval: time.Hour}

func TestCrashRecoversFromLog(t *testing.T) {
	s := openT(t, t.TempDir(), noCheckpoint)
	for id := uint64(1); id <= 6; id++ {
		if err := s.Add(&Job{ID: id, Function: "f", Unique: fmt.Sprint(id)}); err != nil {
			t.Fatal(err)
		}
	}
	s.Remove(2, 5)
	s.SetRetries(3, 4)
	// Removals do not wait; an Add after them waits for their frame.
	if err := s.Add(&Job{ID: 7, Function: "g"}); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Checkpoints != 0 {
		t.Fatalf("stats %+v: a checkpoint ran, the test wants everything in the log", st)
	}
	dir := crashCopy(t, s)

	r := openT(t, dir, Options{})
	got := loadAll(t, r)
	if want := []uint64{1, 3, 4, 6, 7}; !slices.Equal(ids(got), want) {
		t.Fatalf("after the crash: jobs %v, want %v", ids(got), want)
	}
	if got[1].Retries != 4 || got[4].Function != "g" {
		t.Errorf("job 3 retries %d (want 4), job 7 function %q", got[1].Retries, got[4].Function)
	}
	if r.LastID() != 7 {
		t.Errorf("LastID %d, want 7", r.LastID())
	}
	// The replayed log is gone and a new one started.
	gens, _ := listWAL(dir)
	if len(gens) != 1 {
		t.Errorf("logs after recovery: %v, want just the new one", gens)
	}
}

func TestTornLogTailIsIgnored(t *testing.T) {
	s := openT(t, t.TempDir(), noCheckpoint)
	for id := uint64(1); id <= 3; id++ {
		if err := s.Add(&Job{ID: id, Function: "f"}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tail := range []struct {
		name  string
		bytes func(gen uint64) []byte
	}{
		{"half a header", func(uint64) []byte { return []byte{0, 0} }},
		{"frame cut short", func(gen uint64) []byte {
			return appendFrame(nil, gen, []op{{kind: opAdd, id: 9, val: appendValue(nil, &Job{ID: 9})}})[:20]
		}},
		{"zeros", func(uint64) []byte { return make([]byte, 4096) }},
		{"bad checksum", func(gen uint64) []byte {
			f := appendFrame(nil, gen, []op{{kind: opRemove, ids: []uint64{1}}})
			f[len(f)-1] ^= 1
			return f
		}},
		{"frame of an older generation", func(gen uint64) []byte {
			return appendFrame(nil, gen-1, []op{{kind: opRemove, ids: []uint64{1}}})
		}},
	} {
		t.Run(tail.name, func(t *testing.T) {
			dir := crashCopy(t, s)
			gens, _ := listWAL(dir)
			// Right after the last frame, over the preallocated zeros.
			gen := gens[len(gens)-1]
			path := walPath(dir, gen)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			end := logEnd(data, gen)
			copy(data[end:], tail.bytes(gen))
			writeFile(t, path, data)
			r := openT(t, dir, Options{})
			if got := ids(loadAll(t, r)); !slices.Equal(got, []uint64{1, 2, 3}) {
				t.Errorf("jobs %v, want [1 2 3]", got)
			}
		})
	}
}

// TestCheckpointSkipsEndedJobs: a checkpoint writes to bbolt only the jobs
// still queued, and the log it applied is deleted.
func TestCheckpointSkipsEndedJobs(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, noCheckpoint)
	for id := uint64(1); id <= 100; id++ {
		s.AddAsync(&Job{ID: id, Function: "f"}, func(error) {})
	}
	for id := uint64(1); id <= 100; id += 2 {
		s.Remove(id)
	}
	s.SetRetries(4, 2)
	s.SetRetries(5, 2)   // removed: ignored
	got := loadAll(t, s) // Load checkpoints everything first
	if len(got) != 50 || got[0].ID != 2 || got[1].Retries != 2 {
		t.Fatalf("loaded %d jobs starting %v, want the 50 even ones, job 4 with 2 retries", len(got), ids(got)[:3])
	}
	if st := s.Stats(); st.Checkpoints != 1 {
		t.Errorf("stats %+v, want 1 checkpoint", st)
	}
	// The applied log is gone; the current one and the one prepared for
	// the next rotation remain.
	if gens, _ := listWAL(dir); slices.Contains(gens, 1) || len(gens) > 2 {
		t.Errorf("logs %v after the checkpoint, want the applied log 1 gone", gens)
	}
	// A crash now recovers from bbolt alone.
	r := openT(t, crashCopy(t, s), Options{})
	if n := len(loadAll(t, r)); n != 50 {
		t.Errorf("after a crash past the checkpoint: %d jobs, want 50", n)
	}
}

// TestReplayOfAppliedLogIsHarmless covers a crash between a checkpoint's
// commit and the deletion of its log: the log is replayed over a store that
// already holds it, followed by a newer log.
func TestReplayOfAppliedLogIsHarmless(t *testing.T) {
	s := openT(t, t.TempDir(), noCheckpoint)
	for id := uint64(1); id <= 4; id++ {
		if err := s.Add(&Job{ID: id, Function: "f"}); err != nil {
			t.Fatal(err)
		}
	}
	s.Remove(2)
	if err := s.Add(&Job{ID: 5, Function: "f"}); err != nil {
		t.Fatal(err)
	}
	gens, _ := listWAL(s.dir)
	old, err := os.ReadFile(walPath(s.dir, gens[0]))
	if err != nil {
		t.Fatal(err)
	}
	loadAll(t, s) // checkpoint: bbolt holds 1 3 4 5, the log is deleted
	s.Remove(3)
	if err := s.Add(&Job{ID: 6, Function: "f"}); err != nil {
		t.Fatal(err)
	}
	dir := crashCopy(t, s)
	writeFile(t, walPath(dir, gens[0]), old) // as if its deletion never happened

	r := openT(t, dir, Options{})
	if got := ids(loadAll(t, r)); !slices.Equal(got, []uint64{1, 4, 5, 6}) {
		t.Errorf("jobs %v, want [1 4 5 6]", got)
	}
}

func TestAutomaticCheckpoints(t *testing.T) {
	dir := t.TempDir()
	// Tiny logs: every write is followed by a checkpoint.
	s := openT(t, dir, Options{CheckpointBytes: 1})
	const n = 500
	for id := uint64(1); id <= n; id++ {
		if err := s.Add(&Job{ID: id, Function: "f"}); err != nil {
			t.Fatal(err)
		}
		if id%3 == 0 {
			s.Remove(id)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.Checkpoints < 2 {
		t.Errorf("stats %+v, want several checkpoints", st)
	}
	if gens, _ := listWAL(dir); len(gens) != 0 {
		t.Errorf("logs %v left after a clean Close", gens)
	}
	s = openT(t, dir, Options{})
	if got := len(loadAll(t, s)); got != n-n/3 {
		t.Errorf("%d jobs, want %d", got, n-n/3)
	}
}

func TestUnusableLogRefusesToOpen(t *testing.T) {
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  string
	}{
		{"store file missing", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, FileName))
		}, "the file is missing but its write-ahead log"},
		{"other log version", func(t *testing.T, dir string) {
			gens, _ := listWAL(dir)
			writeFile(t, walPath(dir, gens[0]), []byte("GPWAL\x00\x00\x09"))
		}, "write-ahead log version 9"},
		{"not a log", func(t *testing.T, dir string) {
			gens, _ := listWAL(dir)
			writeFile(t, walPath(dir, gens[0]), []byte("#!/bin/sh\nexit 0\n"))
		}, "not a gearproxy write-ahead log"},
		{"stray file", func(t *testing.T, dir string) {
			writeFile(t, filepath.Join(dir, walPrefix+"backup"), nil)
		}, "unexpected file jobs.wal.backup"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := openT(t, t.TempDir(), noCheckpoint)
			if err := s.Add(&Job{ID: 1, Function: "f"}); err != nil {
				t.Fatal(err)
			}
			dir := crashCopy(t, s)
			c.setup(t, dir)
			_, err := Open(dir, Options{})
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), dir) {
				t.Errorf("Open: %v\nwant an error naming %s and saying %q", err, dir, c.want)
			}
		})
	}
}

// logEnd returns the offset just after the last good frame of a log.
func logEnd(data []byte, gen uint64) int {
	end := walHeaderSize
	for len(data)-end >= frameHeader {
		l := int(binary.BigEndian.Uint32(data[end:]))
		if l == 0 || l > len(data)-end-frameHeader ||
			crc32.Update(genSeed(gen), castagnoli, data[end+frameHeader:end+frameHeader+l]) != binary.BigEndian.Uint32(data[end+4:]) {
			break
		}
		end += frameHeader + l
	}
	return end
}

// TestLargeFrameRecovers: one frame of many large jobs (bigger than the
// buffer the committer keeps) is followed by more frames, and all of them
// come back after a crash.
func TestLargeFrameRecovers(t *testing.T) {
	const big = 40
	release := make(chan struct{})
	var once sync.Once
	opts := noCheckpoint
	opts.beforeCommit = func(int) { once.Do(func() { <-release }) }
	s := openT(t, t.TempDir(), opts)
	var wg sync.WaitGroup
	wg.Add(big + 1)
	done := func(err error) {
		if err != nil {
			t.Error(err)
		}
		wg.Done()
	}
	s.AddAsync(&Job{ID: 1, Function: "f"}, done) // held in the first commit
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.pending) == 0 })
	for id := uint64(2); id < big+2; id++ {
		s.AddAsync(&Job{ID: id, Function: "f", Data: bytes.Repeat([]byte{byte(id)}, 256<<10)}, done)
	}
	close(release) // the 40 jobs of 256 KiB now go out as one 10 MiB frame
	wg.Wait()
	for id := uint64(big + 2); id < big+12; id++ {
		if err := s.Add(&Job{ID: id, Function: "g"}); err != nil {
			t.Fatal(err)
		}
	}
	r := openT(t, crashCopy(t, s), Options{})
	got := loadAll(t, r)
	if len(got) != big+11 {
		t.Fatalf("recovered %d jobs, want %d", len(got), big+11)
	}
	for _, j := range got[1 : big+1] {
		if len(j.Data) != 256<<10 || j.Data[0] != byte(j.ID) {
			t.Fatalf("job %d came back with %d bytes", j.ID, len(j.Data))
		}
	}
}

// TestRemoveFromDoneWhileFull: a done callback runs on the committer; a
// Remove from it must not wait for room in a full queue, or the store
// deadlocks (the job server removes a job cancelled while it was stored).
func TestRemoveFromDoneWhileFull(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	opts := Options{MaxPending: 4, beforeCommit: func(int) { once.Do(func() { <-release }) }}
	s := openT(t, t.TempDir(), opts)
	removed := make(chan struct{})
	s.AddAsync(&Job{ID: 1, Function: "f"}, func(error) {
		s.Remove(1)
		close(removed)
	})
	waitFor(t, func() bool { s.mu.Lock(); defer s.mu.Unlock(); return len(s.pending) == 0 })
	for id := uint64(2); id <= 5; id++ { // fill the queue behind the held commit
		s.AddAsync(&Job{ID: id, Function: "f"}, func(error) {})
	}
	close(release)
	<-removed
	if got := ids(loadAll(t, s)); !slices.Equal(got, []uint64{2, 3, 4, 5}) {
		t.Errorf("jobs %v, want [2 3 4 5]", got)
	}
}

// TestRecycledLogIgnoresOldFrames: after checkpoints a log file is reused
// for a later generation; after a crash only the new generation's frames
// are replayed, not the older ones further into the file.
func TestRecycledLogIgnoresOldFrames(t *testing.T) {
	s := openT(t, t.TempDir(), noCheckpoint)
	add := func(from, to uint64) {
		t.Helper()
		for id := from; id <= to; id++ {
			if err := s.Add(&Job{ID: id, Function: "f", Data: make([]byte, 100)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	add(1, 100)
	loadAll(t, s) // checkpoint: log 1 becomes the spare log 3
	for id := uint64(1); id <= 50; id++ {
		s.Remove(id)
	}
	add(101, 150)
	loadAll(t, s) // checkpoint: log 3 (log 1's file) is current now
	add(151, 160) // over the start of log 1's frames
	gens, _ := listWAL(s.dir)
	if !slices.Contains(gens, 3) {
		t.Fatalf("logs %v: want generation 3 in use", gens)
	}
	dir := crashCopy(t, s)
	if ops, _, err := readWAL(walPath(dir, 3), 3); err != nil || len(ops) != 10 || ops[0].id != 151 {
		t.Fatalf("log 3 reads as %d changes (%v), want the 10 adds of 151..160", len(ops), err)
	}
	r := openT(t, dir, Options{})
	got := ids(loadAll(t, r))
	want := make([]uint64, 0, 110)
	for id := uint64(51); id <= 160; id++ {
		want = append(want, id)
	}
	if !slices.Equal(got, want) {
		t.Errorf("recovered %d jobs, %v...; want 51..160", len(got), got[:min(5, len(got))])
	}
}

// TestBrokenLogRefusesAdds: once a log write fails, no later Add is
// acknowledged (a torn frame could hide the frames after it), Load and
// Close report it instead of waiting, and what was written before is
// recovered.
func TestBrokenLogRefusesAdds(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, noCheckpoint)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Add(&Job{ID: 1, Function: "f"}); err != nil {
		t.Fatal(err)
	}
	s.wal.Close() // the next write fails
	for id := uint64(2); id <= 3; id++ {
		if err := s.Add(&Job{ID: id, Function: "f"}); err == nil || !strings.Contains(err.Error(), "write-ahead log") {
			t.Errorf("Add %d after the log broke: %v, want a write-ahead log error", id, err)
		}
	}
	if err := s.Load(func(*Job) error { return nil }); err == nil {
		t.Error("Load on a broken store succeeded")
	}
	if err := s.Close(); err == nil {
		t.Error("Close of a broken store reported nothing")
	}
	r := openT(t, dir, Options{})
	if got := ids(loadAll(t, r)); !slices.Equal(got, []uint64{1}) {
		t.Errorf("recovered %v, want [1]", got)
	}
}
