// Command worker is a Gearman worker that logs in to gearproxy over TLS
// with SCRAM-SHA-256 and serves the function "reverse".
//
//	GEARPROXY_PASSWORD=s3cret go run ./examples/go/worker -server proxy.example:4730 -user alice
//
// It runs until SIGINT or SIGTERM.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/gearproxy/gearproxy/client"
)

func main() {
	server := flag.String("server", "127.0.0.1:4730", "gearproxy `HOST:PORT`")
	serverName := flag.String("server-name", "", "`name` in the server certificate (default: the host of -server)")
	caFile := flag.String("ca", "", "PEM `file` of the CA of the server certificate (default: system roots)")
	user := flag.String("user", "", "user `name`; the password is read from $GEARPROXY_PASSWORD")
	function := flag.String("function", "reverse", "function `name` to serve")
	flag.Parse()

	tc := &tls.Config{ServerName: *serverName}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			log.Fatal(err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			log.Fatalf("%s: no PEM certificate", *caFile)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	w, err := client.NewWorker(client.Config{
		Addr:     *server,
		TLS:      tc,
		ClientID: "example-worker",
		Credentials: &client.Credentials{
			Mechanism: client.MechSCRAM,
			Username:  *user,
			Password:  os.Getenv("GEARPROXY_PASSWORD"),
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	w.Register(*function, 0, func(ctx context.Context, job *client.WorkerJob) ([]byte, error) {
		out := []byte(string(job.Data))
		for i, k := 0, len(out)-1; i < k; i, k = i+1, k-1 {
			out[i], out[k] = out[k], out[i]
		}
		fmt.Printf("%s %q -> %q\n", job.Function, job.Data, out)
		return out, nil
	})
	fmt.Printf("serving %s on %s as %s\n", *function, *server, *user)
	// Run returns an *client.AuthError at once on wrong credentials,
	// and reconnects with backoff on anything else.
	if err := w.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
}
