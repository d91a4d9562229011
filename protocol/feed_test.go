package protocol

import (
	"strings"
	"testing"
)

// A Reader over a Feed reads the whole packets it is handed without
// waiting, and a Feed reused for the next bytes goes on from there.
func TestReaderFeed(t *testing.T) {
	var f Feed
	r := NewReader(&f, ReaderOptions{Expect: Res})
	var p Packet
	for _, batch := range [][]string{{"a", "b"}, {"c"}} {
		var b []byte
		for _, s := range batch {
			b = AppendPacket(b, Res, EchoRes, []byte(s))
		}
		f.B = b
		var got []string
		for len(f.B) > 0 || r.Buffered() > 0 {
			if err := r.Read(&p); err != nil {
				t.Fatal(err)
			}
			got = append(got, string(p.Data()))
		}
		if strings.Join(got, ",") != strings.Join(batch, ",") {
			t.Fatalf("read %q, want %q", got, batch)
		}
	}
}

// FeedReaders lend a reader per batch; one put back with bytes left is not
// lent again with them.
func TestFeedReaders(t *testing.T) {
	f := NewFeedReaders(ReaderOptions{Expect: Res})
	var p Packet
	b := AppendPacket(AppendPacket(nil, Res, EchoRes, []byte("a")), Res, EchoRes, []byte("b"))
	fr := f.Get(b)
	var got []string
	for fr.More() {
		if err := fr.Read(&p); err != nil {
			t.Fatal(err)
		}
		got = append(got, string(p.Data()))
	}
	f.Put(fr)
	if strings.Join(got, ",") != "a,b" {
		t.Fatalf("read %q", got)
	}
	// Stop after the first of two packets: the reader keeps the rest.
	fr = f.Get(b)
	if err := fr.Read(&p); err != nil {
		t.Fatal(err)
	}
	f.Put(fr)
	next := f.Get(AppendPacket(nil, Res, EchoRes, []byte("c")))
	if err := next.Read(&p); err != nil || string(p.Data()) != "c" {
		t.Fatalf("a fresh loan read %q, %v; want c", p.Data(), err)
	}
}
