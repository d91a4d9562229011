package protocol

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
)

func req(t Type, args ...string) []byte {
	bs := make([][]byte, len(args))
	for i, a := range args {
		bs[i] = []byte(a)
	}
	return AppendPacket(nil, Req, t, bs...)
}

func TestRoundTripEveryType(t *testing.T) {
	for typ := Type(1); typ <= SASLOK; typ++ {
		spec, ok := typ.Lookup()
		if !ok {
			continue
		}
		args := make([][]byte, spec.Fields())
		for i := range args {
			args[i] = []byte("arg" + string(rune('a'+i)))
		}
		if spec.Opaque && len(args) > 0 {
			args[len(args)-1] = []byte("data\x00with\x00nuls")
		}
		for _, m := range []Magic{Req, Res} {
			wire := AppendPacket(nil, m, typ, args...)
			r := NewReader(bytes.NewReader(wire), ReaderOptions{Expect: m})
			var p Packet
			if err := r.Read(&p); err != nil {
				t.Fatalf("%s: %v", typ, err)
			}
			if p.Type != typ || p.Magic != m || len(p.Args) != len(args) {
				t.Fatalf("%s: got %v", typ, &p)
			}
			for i := range args {
				if !bytes.Equal(p.Args[i], args[i]) {
					t.Fatalf("%s arg %d: got %q want %q", typ, i, p.Args[i], args[i])
				}
			}
			if err := r.Read(&p); err != io.EOF {
				t.Fatalf("%s: want EOF after packet, got %v", typ, err)
			}
		}
	}
}

func TestTypeNames(t *testing.T) {
	for typ, want := range map[Type]string{SubmitJob: "SUBMIT_JOB", StatusResUnique: "STATUS_RES_UNIQUE",
		SASLOK: "SASL_OK", Type(43): "TYPE_43", Text: "TEXT"} {
		if got := typ.String(); got != want {
			t.Errorf("%d: %s, want %s", uint32(typ), got, want)
		}
	}
	if Type(5).Known() != true || Type(43).Known() || Type(0).Known() || Type(99).Known() || Type(106).Known() {
		t.Error("Known() disagrees with the type table")
	}
}

func TestReaderErrors(t *testing.T) {
	big := strings.Repeat("x", MaxArg+1)
	cases := []struct {
		name   string
		wire   []byte
		opts   ReaderOptions
		kind   error
		code   string
		synced bool
	}{
		{"wrong magic", AppendPacket(nil, Res, SubmitJob, []byte("f"), nil, nil), ReaderOptions{}, ErrInvalidMagic, "INVALID_MAGIC", false},
		{"type 0", AppendPacket(nil, Req, Type(0)), ReaderOptions{}, ErrUnknownType, "INVALID_COMMAND", false},
		{"type 43", AppendPacket(nil, Req, Type(43)), ReaderOptions{}, ErrUnknownType, "INVALID_COMMAND", false},
		{"declared size over limit", AppendPacket(nil, Req, SubmitJob, []byte("f"), nil, make([]byte, 100)), ReaderOptions{MaxData: 50}, ErrTooLarge, "ARGUMENT_TOO_LARGE", false},
		{"missing NUL", req(SubmitJob, "func-only"), ReaderOptions{}, ErrMalformed, "INVALID_PACKET", true},
		{"oversize function", req(SubmitJob, big, "u", "d"), ReaderOptions{}, ErrArgTooLarge, "ARGUMENT_TOO_LARGE", true},
		{"oversize last plain arg", req(CanDo, big), ReaderOptions{}, ErrArgTooLarge, "ARGUMENT_TOO_LARGE", true},
		{"extra NUL in plain arg", req(CanDo, "a\x00b"), ReaderOptions{}, ErrMalformed, "INVALID_PACKET", true},
		{"text on client reader", []byte("status\n"), ReaderOptions{Expect: Res}, ErrTextNotAllowed, "INVALID_MAGIC", false},
		{"long text line", []byte(big + "\n"), ReaderOptions{Text: true}, ErrLineTooLong, "ARGUMENT_TOO_LARGE", false},
		{"six tokens", []byte("a b c d e f\n"), ReaderOptions{Text: true}, ErrTooManyTokens, "ARGUMENT_TOO_LARGE", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := NewReader(bytes.NewReader(c.wire), c.opts)
			var p Packet
			err := r.Read(&p)
			var fe *FrameError
			if !errors.As(err, &fe) || !errors.Is(err, c.kind) {
				t.Fatalf("got %v, want %v", err, c.kind)
			}
			if fe.Code != c.code || fe.Synced != c.synced {
				t.Fatalf("code %s synced %v, want %s %v", fe.Code, fe.Synced, c.code, c.synced)
			}
		})
	}
}

func TestSyncedErrorKeepsStream(t *testing.T) {
	wire := append(req(SubmitJob, "no-nul"), req(EchoReq, "ping")...)
	r := NewReader(bytes.NewReader(wire), ReaderOptions{})
	var p Packet
	if err := r.Read(&p); !errors.Is(err, ErrMalformed) {
		t.Fatalf("got %v", err)
	}
	if err := r.Read(&p); err != nil || p.Type != EchoReq || string(p.Data()) != "ping" {
		t.Fatalf("after a synced error: %v %v", err, &p)
	}
}

func TestTruncatedStream(t *testing.T) {
	wire := req(SubmitJob, "f", "u", "data")
	for n := 1; n < len(wire); n++ {
		r := NewReader(bytes.NewReader(wire[:n]), ReaderOptions{})
		var p Packet
		if err := r.Read(&p); err != io.ErrUnexpectedEOF {
			t.Fatalf("cut at %d: got %v", n, err)
		}
	}
}

func TestTrailingNULDropped(t *testing.T) {
	// gearmand's WORK_FAIL to clients without the exceptions option.
	wire := AppendPacket(nil, Res, WorkFail, []byte("H:x:1\x00"))
	r := NewReader(bytes.NewReader(wire), ReaderOptions{Expect: Res})
	var p Packet
	if err := r.Read(&p); err != nil || string(p.Arg(0)) != "H:x:1" {
		t.Fatalf("got %v %q", err, p.Arg(0))
	}
}

func TestTextAndBinaryMixed(t *testing.T) {
	wire := []byte("status\r\n")
	wire = append(wire, req(EchoReq, "x")...)
	wire = append(wire, "maxqueue  fn 10\n"...)
	r := NewReader(bytes.NewReader(wire), ReaderOptions{Text: true})
	var p Packet
	if err := r.Read(&p); err != nil || p.Type != Text || len(p.Args) != 1 || string(p.Args[0]) != "status" {
		t.Fatalf("line 1: %v %v", err, &p)
	}
	if err := r.Read(&p); err != nil || p.Type != EchoReq {
		t.Fatalf("packet: %v %v", err, &p)
	}
	if err := r.Read(&p); err != nil || len(p.Args) != 3 || string(p.Args[2]) != "10" {
		t.Fatalf("line 2: %v %v", err, &p)
	}
}

func TestLargeDeclaredSizeDoesNotAllocateUpFront(t *testing.T) {
	hdr := AppendPacket(nil, Req, EchoReq)
	hdr[11] = 0
	hdr[8] = 0x01 // 16 MiB declared, nothing sent
	r := NewReader(bytes.NewReader(hdr), ReaderOptions{})
	var p Packet
	allocs := testing.AllocsPerRun(1, func() { _ = r.Read(&p) })
	_ = allocs
	if err := NewReader(bytes.NewReader(hdr), ReaderOptions{}).Read(&p); err != io.ErrUnexpectedEOF {
		t.Fatalf("got %v", err)
	}
}

func TestOutboxBatchesAndLimits(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	o := NewOutbox(a, 64)
	go o.Run()
	if err := o.Packet(Res, EchoRes, []byte("0123456789")); err != nil {
		t.Fatal(err)
	}
	r := NewReader(b, ReaderOptions{Expect: Res})
	var p Packet
	if err := r.Read(&p); err != nil || string(p.Data()) != "0123456789" {
		t.Fatalf("%v %v", err, &p)
	}
	// Nobody reads b now: the writer blocks in Write, the queue fills.
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		err = o.Packet(Res, EchoRes, []byte("0123456789"))
	}
	if !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("want ErrOutboxFull, got %v", err)
	}
	a.Close()
	<-o.Done()
}

func TestOutboxCloseFlushes(t *testing.T) {
	var buf bytes.Buffer
	o := NewOutbox(&buf, 1<<20)
	for i := 0; i < 10; i++ {
		if err := o.Packet(Res, Noop); err != nil {
			t.Fatal(err)
		}
	}
	o.Close()
	if err := o.Run(); err != nil {
		t.Fatal(err)
	}
	if buf.Len() != 10*HeaderSize {
		t.Fatalf("wrote %d bytes", buf.Len())
	}
	if err := o.Packet(Res, Noop); !errors.Is(err, ErrOutboxClosed) {
		t.Fatalf("append after close: %v", err)
	}
}

func TestAppendTextError(t *testing.T) {
	got := string(AppendTextError(nil, "UNKNOWN_JOB", "no such job"))
	if got != "ERR UNKNOWN_JOB no+such+job\r\n" {
		t.Fatalf("%q", got)
	}
}

func BenchmarkReadSubmit(b *testing.B) {
	one := req(SubmitJob, "reverse", "unique-123", strings.Repeat("d", 100))
	wire := bytes.Repeat(one, 1000)
	b.SetBytes(int64(len(one)))
	b.ReportAllocs()
	var p Packet
	br := bytes.NewReader(wire)
	r := NewReader(br, ReaderOptions{})
	for i := 0; i < b.N; i++ {
		if err := r.Read(&p); err == io.EOF {
			br.Reset(wire)
			r = NewReader(br, ReaderOptions{})
			i--
		}
	}
}
