package router

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

func members(names ...string) []Member {
	m := make([]Member, len(names))
	for i, n := range names {
		m[i] = Member{Name: n}
	}
	return m
}

func keys(n int) []uint64 {
	k := make([]uint64, n)
	for i := range k {
		k[i] = Key([]byte("reverse"), []byte(fmt.Sprintf("unique-%d", i)), nil)
	}
	return k
}

// Adding a fifth backend to four must move about a fifth of the keys, and
// every key that moves must move to the new backend.
func TestAddMovesOneNth(t *testing.T) {
	const n = 20000
	four, _ := New(members("a", "b", "c", "d"))
	five, _ := New(members("a", "b", "c", "d", "e"))
	moved := 0
	for _, k := range keys(n) {
		before, after := four.Pick(k, four.All()), five.Pick(k, five.All())
		if before != after {
			moved++
			if after != 4 {
				t.Fatalf("key moved from %d to %d, not to the new backend", before, after)
			}
		}
	}
	if frac := float64(moved) / n; frac < 0.17 || frac > 0.23 {
		t.Fatalf("moved %.3f of keys, want about 0.20", frac)
	}
}

// Removing a backend (or losing it to a failure) moves only its own keys,
// spread over the others.
func TestRemoveMovesOnlyItsKeys(t *testing.T) {
	r, _ := New(members("a", "b", "c", "d"))
	up := r.All().Without(2)
	got := make([]int, 4)
	for _, k := range keys(20000) {
		before, after := r.Pick(k, r.All()), r.Pick(k, up)
		if before != 2 && before != after {
			t.Fatalf("key on %d moved to %d when 2 left", before, after)
		}
		if before == 2 {
			got[after]++
		}
	}
	for _, i := range []int{0, 1, 3} {
		if got[i] < 1300 || got[i] > 2000 {
			t.Fatalf("backend 2's keys spread as %v, want about a third each", got)
		}
	}
}

func TestWeights(t *testing.T) {
	r, _ := New([]Member{{Name: "a", Weight: 1}, {Name: "b", Weight: 3}})
	count := [2]int{}
	for _, k := range keys(20000) {
		count[r.Pick(k, r.All())]++
	}
	if ratio := float64(count[1]) / float64(count[0]); ratio < 2.7 || ratio > 3.3 {
		t.Fatalf("weights 1:3 gave %v", count)
	}
}

func TestDeterministic(t *testing.T) {
	// The same names in the same order give the same answers in any
	// process: pin a few so that a change of hash is a visible decision.
	r, _ := New(members("shard1", "shard2", "gm1"))
	var got []int
	for _, u := range []string{"a", "b", "c", "d", "e", "f"} {
		got = append(got, r.PickJob([]byte("f"), []byte(u), nil, r.All(), nil))
	}
	r2, _ := New(members("shard1", "shard2", "gm1"))
	for i, u := range []string{"a", "b", "c", "d", "e", "f"} {
		if g := r2.PickJob([]byte("f"), []byte(u), nil, r2.All(), nil); g != got[i] {
			t.Fatalf("two routers disagree on %q", u)
		}
	}
}

func TestPickJob(t *testing.T) {
	r, _ := New(members("a", "b", "c"))
	load := func(i int) int64 { return []int64{5, 1, 3}[i] }
	if got := r.PickJob([]byte("f"), nil, nil, r.All(), load); got != 1 {
		t.Fatalf("empty unique went to %d, want least loaded 1", got)
	}
	if got := r.PickJob([]byte("f"), nil, nil, r.All().Without(1), load); got != 2 {
		t.Fatalf("empty unique without 1 went to %d, want 2", got)
	}
	// Equal loads: one function's jobs stay together, in the function's
	// rendezvous order.
	flat := func(int) int64 { return 0 }
	for _, fn := range []string{"a", "b", "c", "d"} {
		want := r.Pick(Key([]byte(fn), nil, nil), r.All())
		if got := r.PickJob([]byte(fn), nil, nil, r.All(), flat); got != want {
			t.Fatalf("function %q without unique went to %d, want %d", fn, got, want)
		}
	}
	if got := r.PickJob([]byte("f"), []byte("u"), nil, 0, load); got != -1 {
		t.Fatalf("no healthy backend gave %d", got)
	}
	// "-" hashes the data: same data, same key; other data, other key.
	a := Key([]byte("f"), []byte("-"), []byte("x"))
	if a != Key([]byte("f"), []byte("-"), []byte("x")) || a == Key([]byte("f"), []byte("-"), []byte("y")) {
		t.Fatal(`unique "-" does not hash the data`)
	}
	if Key([]byte("f"), []byte("u"), []byte("x")) != Key([]byte("f"), []byte("u"), []byte("y")) {
		t.Fatal("a real unique must ignore the data")
	}
	if Key([]byte("ab"), []byte("c"), nil) == Key([]byte("a"), []byte("bc"), nil) {
		t.Fatal("function and unique run together")
	}
}

func TestHandleRoundTrip(t *testing.T) {
	c, err := NewCodec([]string{"shard1", "shard2"}, nil, 10)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		backend int
		handle  string
	}{
		{0, "H:host:1"}, {1, "H:host:1"}, {1, strings.Repeat("x", maxEmbed)}, {0, strings.Repeat("y", 200)},
	} {
		h := c.Encode(nil, "alice", tc.backend, []byte(tc.handle))
		if len(h) > MaxHandle {
			t.Fatalf("handle %q is %d bytes", h, len(h))
		}
		b, bh, ok := c.Decode("alice", h)
		if !ok || b != tc.backend || string(bh) != tc.handle {
			t.Fatalf("Decode(%q) = %d %q %v, want %d %q", h, b, bh, ok, tc.backend, tc.handle)
		}
		if _, _, ok := c.Decode("bob", h); ok {
			t.Fatalf("handle %q of alice decodes for bob", h)
		}
		if !bytes.Equal(h, c.Encode(nil, "alice", tc.backend, []byte(tc.handle))) {
			t.Fatal("Encode is not deterministic")
		}
	}
	// gearmand counters restart at 1: both backends issue H:host:1, and
	// the two client handles must differ and decode to their own backend.
	h0, h1 := c.Encode(nil, "u", 0, []byte("H:host:1")), c.Encode(nil, "u", 1, []byte("H:host:1"))
	if bytes.Equal(h0, h1) {
		t.Fatal("two backends' equal handles collide")
	}
	if c.Fallbacks() != 1 {
		t.Fatalf("fallbacks %d, want 1", c.Fallbacks())
	}
}

// A second proxy with the same backend list, and the same proxy after a
// restart, must accept the handles the first one issued.
func TestHandleAcrossInstances(t *testing.T) {
	a, _ := NewCodec([]string{"shard1", "gm1"}, []byte("k"), 10)
	b, _ := NewCodec([]string{"shard1", "gm1"}, []byte("k"), 10)
	h := a.Encode(nil, "local", 1, []byte("H:gm:42"))
	if bi, bh, ok := b.Decode("local", h); !ok || bi != 1 || string(bh) != "H:gm:42" {
		t.Fatalf("second instance decodes %q as %d %q %v", h, bi, bh, ok)
	}
	other, _ := NewCodec([]string{"shard1", "gm1"}, []byte("other key"), 10)
	if _, _, ok := other.Decode("local", h); ok {
		t.Fatal("a proxy with another key accepts the handle")
	}
}

// Forging: moving a handle to another backend by editing its tag, editing
// the backend handle, or inventing one, must all fail.
func TestHandleForgery(t *testing.T) {
	c, _ := NewCodec([]string{"shard1", "shard2"}, nil, 10)
	h := c.Encode(nil, "u", 0, []byte("H:host:7"))
	swapped := append([]byte(nil), h...)
	copy(swapped[2:2+tagLen], c.tags[1])
	edited := append([]byte(nil), h...)
	edited[len(edited)-1] = '8'
	for _, f := range [][]byte{swapped, edited, []byte("H:host:7"), []byte("P:"), []byte("P:" + c.tags[0] + "~" + strings.Repeat("0", digestLen)), nil} {
		if b, bh, ok := c.Decode("u", f); ok {
			t.Fatalf("forged %q decoded to %d %q", f, b, bh)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	c, _ := NewCodec([]string{"shard1", "shard2"}, nil, 10)
	buf := make([]byte, 0, 64)
	for b.Loop() {
		buf = c.Encode(buf[:0], "local", 1, []byte("H:host.example:123456"))
	}
}
