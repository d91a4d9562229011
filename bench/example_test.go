package bench_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/gearproxy/gearproxy/bench"
)

// Run 10,000 foreground jobs through a job server and fail loudly if any
// was lost, duplicated or answered with the wrong result.
func ExampleRun() {
	res, err := bench.Run(context.Background(), bench.Config{
		Servers:  []string{"127.0.0.1:4730"},
		Mode:     bench.Foreground,
		Clients:  8,
		Pipeline: 8,
		Workers:  4,
		Jobs:     10000,
	})
	if err != nil {
		fmt.Println(err) // nothing listening, or a bad Config
		return
	}
	res.WriteText(os.Stdout)
	if !res.OK() {
		os.Exit(1)
	}
}

// A Dialer owns everything between TCP and the first Gearman packet: here
// TLS; a SASL handshake would follow the TLS handshake in the same function.
func ExampleDialer() {
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		d := tls.Dialer{Config: &tls.Config{ServerName: "gearproxy.example"}}
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	cfg := bench.Config{Servers: []string{"gearproxy.example:4730"}, Dial: dial, Duration: 10 * time.Second}
	fmt.Println(cfg.Validate())
	// Output: <nil>
}
