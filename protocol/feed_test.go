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
