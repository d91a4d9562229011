// Command client submits jobs to gearproxy over TLS, logged in with
// SCRAM-SHA-256, and prints their results.
//
//	GEARPROXY_PASSWORD=s3cret go run ./examples/go/client -server proxy.example:4730 -user alice hello world
//
// Each argument is one foreground job of -function; with -background the
// jobs are queued and their status is printed instead.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/gearproxy/gearproxy/client"
)

func main() {
	server := flag.String("server", "127.0.0.1:4730", "gearproxy `HOST:PORT`")
	serverName := flag.String("server-name", "", "`name` in the server certificate (default: the host of -server)")
	caFile := flag.String("ca", "", "PEM `file` of the CA of the server certificate (default: system roots)")
	user := flag.String("user", "", "user `name`; the password is read from $GEARPROXY_PASSWORD")
	function := flag.String("function", "reverse", "function `name` to call")
	background := flag.Bool("background", false, "submit background jobs and print their status")
	timeout := flag.Duration("timeout", 30*time.Second, "give up after this `duration`")
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
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	c, err := client.Dial(ctx, client.Config{
		Addr: *server,
		TLS:  tc,
		Credentials: &client.Credentials{
			Mechanism: client.MechSCRAM,
			Username:  *user,
			Password:  os.Getenv("GEARPROXY_PASSWORD"),
		},
	})
	if err != nil {
		// A wrong password is a *client.AuthError: AUTH_FAILED.
		log.Fatal(err)
	}
	defer c.Close()

	// Submit every job first, then wait: they run in parallel.
	tasks := make([]*client.Task, flag.NArg())
	for i, data := range flag.Args() {
		tasks[i], err = c.Submit(ctx, client.Job{Function: *function, Data: []byte(data), Background: *background}, nil)
		if err != nil {
			log.Fatal(err)
		}
	}
	for i, t := range tasks {
		if *background {
			select {
			case <-t.Created():
			case <-t.Done():
				// Refused (PERMISSION_DENIED, a full queue): no handle.
				if _, err := t.Result(); err != nil {
					log.Fatalf("%q: %v", flag.Arg(i), err)
				}
			case <-ctx.Done():
				log.Fatal(ctx.Err())
			}
			st, err := c.Status(ctx, t.Handle())
			if err != nil {
				log.Fatal(err)
			}
			fmt.Printf("%q queued: known=%v running=%v\n", flag.Arg(i), st.Known, st.Running)
			continue
		}
		out, err := t.Wait(ctx)
		if err != nil {
			log.Fatalf("%q: %v", flag.Arg(i), err)
		}
		fmt.Printf("%q -> %q\n", flag.Arg(i), out)
	}
}
