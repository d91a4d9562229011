package protocol

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// recConn is a net.Conn that records what is written to it and fails a
// test when two goroutines write at once. stall makes every write while
// a deadline is set take only that many bytes and time out, like a peer
// that stopped reading.
type recConn struct {
	net.Conn // nil: only the methods below are used
	t        *testing.T

	mu       sync.Mutex
	buf      bytes.Buffer
	writes   int
	deadline time.Time
	stall    int // -1: none

	inWrite atomic.Int32
}

func newRecConn(t *testing.T) *recConn { return &recConn{t: t, stall: -1} }

func (c *recConn) Write(b []byte) (int, error) {
	if c.inWrite.Add(1) != 1 {
		c.t.Error("two goroutines write at once")
	}
	defer c.inWrite.Add(-1)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writes++
	if c.stall >= 0 && !c.deadline.IsZero() {
		n := min(c.stall, len(b))
		c.buf.Write(b[:n])
		return n, os.ErrDeadlineExceeded
	}
	return c.buf.Write(b)
}

func (c *recConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}

func (c *recConn) snapshot() (string, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String(), c.writes
}

func noop(n int) string { return string(bytes.Repeat(AppendPacket(nil, Res, Noop), n)) }

// A burst's replies wait for Flush, which writes them all at once in the
// caller; Run is not woken.
func TestOutboxFlushWritesBurstInline(t *testing.T) {
	c := newRecConn(t)
	o := NewConnOutbox(c, 1<<20, true)
	o.Begin()
	for range 3 {
		if err := o.Packet(Res, Noop); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := c.snapshot(); got != "" || len(o.wake) != 0 {
		t.Fatalf("output left during the burst: %q, wake %d", got, len(o.wake))
	}
	o.Flush()
	got, writes := c.snapshot()
	if got != noop(3) || writes != 1 {
		t.Fatalf("after Flush: %d writes of %q", writes, got)
	}
	if len(o.wake) != 0 {
		t.Fatal("Flush woke Run")
	}
}

// Without inline writes, Flush hands the whole burst to Run.
func TestOutboxFlushHandsBurstToRun(t *testing.T) {
	c := newRecConn(t)
	o := NewConnOutbox(c, 1<<20, false)
	o.Begin()
	o.Packet(Res, Noop)
	o.Packet(Res, Noop)
	o.Flush()
	if got, _ := c.snapshot(); got != "" {
		t.Fatalf("Flush wrote %q itself", got)
	}
	o.Close()
	if err := o.Run(); err != nil {
		t.Fatal(err)
	}
	if got, writes := c.snapshot(); got != noop(2) || writes != 1 {
		t.Fatalf("%d writes of %q", writes, got)
	}
}

// A reader calls Begin once per request and Flush once per burst.
func TestOutboxBeginPerRequest(t *testing.T) {
	c := newRecConn(t)
	o := NewConnOutbox(c, 1<<20, true)
	for range 3 {
		o.Begin()
		o.Packet(Res, Noop)
	}
	o.Flush()
	if got, writes := c.snapshot(); got != noop(3) || writes != 1 {
		t.Fatalf("%d writes of %q", writes, got)
	}
	o.Packet(Res, Noop)
	if len(o.wake) != 1 {
		t.Fatal("output after the burst did not wake Run")
	}
}

// A peer that does not read holds an inline write only until its
// deadline: the unwritten rest goes to Run ahead of newer output, and Run
// writes without the reader's deadline.
func TestOutboxInlineTimeoutHandsRestToRun(t *testing.T) {
	c := newRecConn(t)
	c.stall = 5
	o := NewConnOutbox(c, 1<<20, true)
	first := AppendPacket(nil, Res, EchoRes, []byte("first"))
	o.Begin()
	o.Write(first)
	o.Flush()
	if got, _ := c.snapshot(); got != string(first[:5]) {
		t.Fatalf("inline write took %q", got)
	}
	if o.Pending() != len(first)-5 {
		t.Fatalf("pending %d", o.Pending())
	}
	second := AppendPacket(nil, Res, EchoRes, []byte("second"))
	o.Write(second)
	o.Close()
	if err := o.Run(); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.snapshot(); got != string(first)+string(second) {
		t.Fatalf("order: %q", got)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.deadline.IsZero() {
		t.Fatal("Run left the inline deadline set")
	}
}

// Over net.Pipe nobody reads: Flush returns after its deadline instead of
// blocking the reader, and the limit still cuts the peer off.
func TestOutboxInlineNeverBlocksOnSilentPeer(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	o := NewConnOutbox(a, 64, true)
	o.Begin()
	o.Packet(Res, EchoRes, []byte("0123456789"))
	o.Flush()
	if o.Pending() == 0 {
		t.Fatal("nothing left for Run though the peer reads nothing")
	}
	var err error
	for i := 0; i < 100 && err == nil; i++ {
		err = o.Packet(Res, EchoRes, []byte("0123456789"))
	}
	if !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("want ErrOutboxFull, got %v", err)
	}
	if err := o.Run(); !errors.Is(err, ErrOutboxFull) {
		t.Fatalf("Run: %v", err)
	}
	a.Close()
}

// CloseWithin gives up on a peer that does not read.
func TestOutboxCloseWithinEnds(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	o := NewConnOutbox(a, 1<<20, false)
	go o.Run()
	o.Packet(Res, Noop)
	o.CloseWithin(10 * time.Millisecond)
	<-o.Done()
	if err := o.Packet(Res, Noop); err == nil {
		t.Fatal("append after close")
	}
}

// Many goroutines queue while a reader runs bursts and Run writes: one
// writer at a time, and each goroutine's bytes arrive in its order.
func TestOutboxConcurrentOrder(t *testing.T) {
	for _, inline := range []bool{true, false} {
		t.Run("inline="+strconv.FormatBool(inline), func(t *testing.T) {
			a, b := net.Pipe()
			o := NewConnOutbox(a, 64<<20, inline)
			go o.Run()
			const senders, each = 4, 300
			got := make(chan []byte)
			go func() {
				all, _ := io.ReadAll(b)
				got <- all
			}()
			var wg sync.WaitGroup
			for s := range senders {
				wg.Go(func() {
					for i := range each {
						o.Packet(Res, EchoRes, []byte(strconv.Itoa(s)+":"+strconv.Itoa(i)))
					}
				})
			}
			wg.Go(func() {
				for i := range each {
					o.Begin()
					o.Packet(Res, EchoRes, []byte("r:"+strconv.Itoa(i)))
					o.Flush()
				}
			})
			wg.Wait()
			o.Close()
			<-o.Done()
			a.Close()
			next := map[string]int{}
			r := NewReader(bytes.NewReader(<-got), ReaderOptions{Expect: Res})
			var p Packet
			n := 0
			for r.Read(&p) == nil {
				who, seq, _ := bytes.Cut(p.Data(), []byte(":"))
				if want := strconv.Itoa(next[string(who)]); string(seq) != want {
					t.Fatalf("%s: got %s, want %s", who, seq, want)
				}
				next[string(who)]++
				n++
			}
			if n != (senders+1)*each {
				t.Fatalf("%d packets arrived", n)
			}
		})
	}
}

type bufferedConn struct {
	net.Conn
	buffered bool
}

func (c bufferedConn) BufferedWrites() bool { return c.buffered }

func TestInlineSafe(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tcp, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	pa, pb := net.Pipe()
	defer pa.Close()
	defer pb.Close()
	for _, tc := range []struct {
		name string
		c    net.Conn
		want bool
	}{
		{"tcp", tcp, true},
		{"net.Pipe", pa, false},
		{"buffered in-memory", bufferedConn{pa, true}, true},
		{"unbuffered wrapper", bufferedConn{tcp, false}, false},
	} {
		if got := InlineSafe(tc.c); got != tc.want {
			t.Errorf("%s: InlineSafe = %v, want %v", tc.name, got, tc.want)
		}
	}
}
