package store

import (
	"testing"
	"time"
)

func TestZZApplyCost(t *testing.T) {
	for _, n := range []int{200000} {
		s := openT(t, t.TempDir(), Options{Sync: SyncNone, CheckpointInterval: time.Hour, CheckpointBytes: 1 << 40})
		fill(t, s, n)
		start := time.Now()
		if err := s.checkpointAll(); err != nil {
			t.Fatal(err)
		}
		el := time.Since(start)
		t.Logf("n=%d checkpoint %v = %v/job", n, el, el/time.Duration(n))
		s.Close()
	}
}
