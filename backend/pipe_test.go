package backend

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

func TestPipe(t *testing.T) {
	a, b := Pipe()
	defer a.Close()
	defer b.Close()

	// Writes return before anything is read: the pipe is buffered.
	if _, err := a.Write([]byte("hello ")); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	n, err := io.ReadAtLeast(b, buf, 11)
	if err != nil || string(buf[:n]) != "hello world" {
		t.Fatalf("read %q %v", buf[:n], err)
	}

	// A read deadline ends a read that waits; a later read works.
	b.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := b.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past deadline: %v", err)
	}
	var ne net.Error
	if _, err := b.Read(buf); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("expired deadline is not a timeout: %v", err)
	}
	b.SetReadDeadline(time.Time{})
	go a.Write([]byte("again"))
	if n, err := b.Read(buf); err != nil || string(buf[:n]) != "again" {
		t.Fatalf("read after deadline %q %v", buf[:n], err)
	}

	// A deadline set while a reader waits wakes it.
	done := make(chan error, 1)
	go func() {
		_, err := b.Read(buf)
		done <- err
	}()
	time.Sleep(10 * time.Millisecond)
	b.SetReadDeadline(time.Now())
	if err := <-done; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("reader woken by a new deadline: %v", err)
	}
}

func TestPipeClose(t *testing.T) {
	a, b := Pipe()
	a.Write([]byte("last words"))
	a.Close()
	// The peer reads what was written, then EOF; its writes fail.
	got, err := io.ReadAll(b)
	if err != nil || string(got) != "last words" {
		t.Fatalf("read %q %v", got, err)
	}
	if _, err := b.Write([]byte("x")); err == nil {
		t.Fatal("write to a closed peer succeeded")
	}
	if _, err := a.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read on a closed end: %v", err)
	}
}

// A writer that fills the buffer waits for the reader, and its deadline
// applies.
func TestPipeBackpressure(t *testing.T) {
	a, b := Pipe()
	defer a.Close()
	defer b.Close()
	big := bytes.Repeat([]byte("z"), pipeBuffer+1000)
	a.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	n, err := a.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != pipeBuffer {
		t.Fatalf("write into a full pipe: %d %v", n, err)
	}
	a.SetWriteDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := a.Write(big[n:])
		done <- err
	}()
	got, err := io.ReadAtLeast(b, make([]byte, len(big)), len(big))
	if err != nil || got != len(big) {
		t.Fatalf("read %d %v", got, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A half with whole writes never holds part of a write: one that does not
// fit fails at once, and take returns everything written, without
// waiting.
func TestPipeWholeWrites(t *testing.T) {
	h := newHalf()
	h.whole = true
	if _, err := h.write(make([]byte, wholeLimit-10)); err != nil {
		t.Fatal(err)
	}
	if n, err := h.write(make([]byte, 11)); n != 0 || !errors.Is(err, errPipeFull) {
		t.Fatalf("write past the limit: %d, %v", n, err)
	}
	got, end := h.take(nil)
	if len(got) != wholeLimit-10 || end {
		t.Fatalf("take: %d bytes, end %v", len(got), end)
	}
	if _, err := h.write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	h.eof = true
	h.mu.Unlock()
	got, end = h.take(got[:0])
	if string(got) != "abc" || !end {
		t.Fatalf("take after the end: %q, end %v", got, end)
	}
	h.waitData() // returns at the end
}
