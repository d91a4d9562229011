package backend

import (
	"bytes"
	"io"
	"net"
	"testing"

	"github.com/gearproxy/gearproxy/protocol"
)

// A worker session holds its link for a burst: the packets stay queued
// until Flush, which writes them all, in order, in one piece.
func TestLinkHeldForBurst(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server := <-accepted
	defer server.Close()
	l := newLink(conn, protocol.DefaultMaxData, nil, func(*protocol.Packet) {}, nil)
	defer l.Abort()

	l.Begin()
	l.Packet(protocol.WorkComplete, []byte("H:1"), []byte("done"))
	l.Packet(protocol.GrabJob)
	if n := l.out.Pending(); n == 0 {
		t.Fatal("packets left during the burst")
	}
	l.Flush()
	if n := l.out.Pending(); n != 0 {
		t.Fatalf("%d bytes still queued after Flush", n)
	}
	want := append(protocol.AppendPacket(nil, protocol.Req, protocol.WorkComplete, []byte("H:1"), []byte("done")),
		protocol.AppendPacket(nil, protocol.Req, protocol.GrabJob)...)
	got := make([]byte, len(want))
	if _, err := io.ReadFull(server, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}
