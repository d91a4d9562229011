package client_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/protocol"
)

// TestAbandonedReplyKeepsOrder: a request whose caller gave up still
// takes its reply in order, so the next caller gets its own answer and not
// the late one. The server here holds its first echo until released.
func TestAbandonedReplyKeepsOrder(t *testing.T) {
	release := make(chan struct{})
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		a, b := net.Pipe()
		go func() {
			defer b.Close()
			r := protocol.NewReader(b, protocol.ReaderOptions{Expect: protocol.Req})
			w := protocol.NewWriter(b)
			var p protocol.Packet
			for r.Read(&p) == nil {
				switch p.Type {
				case protocol.OptionReq:
					w.WritePacket(protocol.Res, protocol.OptionRes, p.Arg(0))
				case protocol.EchoReq:
					if string(p.Data()) == "slow" {
						<-release
					}
					w.WritePacket(protocol.Res, protocol.EchoRes, p.Data())
				case protocol.SubmitJob:
					// A reply from nowhere: the client must notice that
					// the connection is out of step.
					w.WritePacket(protocol.Res, protocol.StatusRes, []byte("h"), []byte("0"), []byte("0"), []byte("0"), []byte("0"))
				}
				if w.Flush() != nil {
					return
				}
			}
		}()
		return a, nil
	}
	c, err := client.Dial(context.Background(), client.Config{Addr: "x:1", Dial: dial})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := c.Echo(ctx, []byte("slow")); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow echo: %v", err)
	}
	got := make(chan string, 1)
	go func() {
		b, err := c.Echo(context.Background(), []byte("fast"))
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(b)
	}()
	close(release)
	if s := <-got; s != "fast" {
		t.Fatalf("second echo got %q", s)
	}
	task, err := c.Submit(context.Background(), client.Job{Function: "f"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := task.Wait(context.Background()); !errors.Is(err, client.ErrConnectionLost) {
		t.Fatalf("mismatched reply: %v", err)
	}
}
