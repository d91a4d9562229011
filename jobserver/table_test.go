package jobserver

import "testing"

func TestJobTableFreesEmptyPages(t *testing.T) {
	var tb jobTable
	for id := uint64(1); id <= 5000; id++ {
		tb.put(&job{id: id})
	}
	if tb.len() != 5000 || len(tb.pages) != 5 {
		t.Fatalf("len %d, pages %d", tb.len(), len(tb.pages))
	}
	for id := uint64(1); id <= 5000; id++ {
		if id != 3000 {
			tb.del(id)
		}
	}
	tb.del(3000 + 1) // already gone: no effect
	if tb.len() != 1 || len(tb.pages) != 1 || tb.get(3000) == nil || tb.get(2999) != nil {
		t.Fatalf("len %d, pages %d", tb.len(), len(tb.pages))
	}
	n := 0
	tb.each(func(*job) { n++ })
	if n != 1 {
		t.Fatalf("each saw %d jobs", n)
	}
	tb.del(3000)
	if tb.len() != 0 || len(tb.pages) != 0 {
		t.Fatalf("len %d, pages %d", tb.len(), len(tb.pages))
	}
}
