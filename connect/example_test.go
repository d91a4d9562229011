package connect_test

import (
	"context"
	"crypto/tls"
	"log"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gearproxy/gearproxy/client"
	"github.com/gearproxy/gearproxy/connect"
)

// A sidecar on 127.0.0.1:4730 for PHP workers, logging in to a gearproxy
// with SCRAM-SHA-256, drained for up to 30 s on SIGTERM: what `gearproxy
// connect` does.
func ExampleSidecar() {
	s, err := connect.New(connect.Config{
		Server: "gearproxy.example:4730",
		TLS:    &tls.Config{}, // system roots; ServerName defaults to gearproxy.example
		Credentials: client.Credentials{
			Mechanism: client.MechSCRAM,
			Username:  "alice",
			Password:  os.Getenv("GEARPROXY_PASSWORD"),
		},
		Logger: slog.Default(),
	})
	if err != nil {
		log.Fatal(err)
	}
	ln, err := connect.Listen("127.0.0.1:4730", false)
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	}()
	if err := s.Serve(ln); err != connect.ErrSidecarClosed {
		log.Fatal(err)
	}
}
