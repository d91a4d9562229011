package protocol

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// FuzzReader feeds arbitrary streams to a server-side Reader: it must never
// panic, never return fields that were not inside the declared size, and
// either make progress or stop with an error.
func FuzzReader(f *testing.F) {
	f.Add(req(SubmitJob, "f", "u", "data"))
	f.Add(append([]byte("status\n"), req(EchoReq, "x")...))
	f.Add(req(CanDo, "a\x00b"))
	f.Add(AppendPacket(nil, Res, Noop))
	f.Add(req(SubmitReduceJob, "f", "u", "r", "a", "d"))
	f.Add([]byte("\x00REQ\x00\x00\x00\x07\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, wire []byte) {
		r := NewReader(bytes.NewReader(wire), ReaderOptions{Text: true, MaxData: 1 << 16})
		var p Packet
		for i := 0; i < 1000; i++ {
			err := r.Read(&p)
			if err == nil {
				if p.Type != Text {
					spec, _ := p.Type.Lookup()
					if len(p.Args) != spec.Fields() {
						t.Fatalf("%s: %d fields, spec says %d", p.Type, len(p.Args), spec.Fields())
					}
				}
				continue
			}
			var fe *FrameError
			if errors.As(err, &fe) && fe.Synced {
				continue
			}
			if err != io.EOF && err != io.ErrUnexpectedEOF && fe == nil {
				t.Fatalf("unexpected error type %T %v", err, err)
			}
			return
		}
	})
}

// FuzzSplitLine checks the admin line splitter's limits on any input.
func FuzzSplitLine(f *testing.F) {
	f.Add([]byte("status\r\n"))
	f.Add([]byte("maxqueue fn 1 2 3\n"))
	f.Add([]byte("  show   unique jobs \n"))
	f.Fuzz(func(t *testing.T, line []byte) {
		toks, err := SplitLine(nil, line)
		if err == nil && len(toks) > MaxTextTokens {
			t.Fatalf("%d tokens accepted", len(toks))
		}
		for _, tok := range toks {
			if len(tok) == 0 || bytes.IndexByte(tok, ' ') >= 0 {
				t.Fatalf("bad token %q", tok)
			}
		}
	})
}
