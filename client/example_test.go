package client_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/gearproxy/gearproxy/client"
)

// server is the job server the examples talk to: the gearmand that the
// tests start, or a local one on the default port.
func server() string {
	if addr := os.Getenv(addrEnv); addr != "" {
		return addr
	}
	return "127.0.0.1:4730"
}

// A worker that upper-cases text and a client that calls it.
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	w, err := client.NewWorker(client.Config{Addr: server()})
	if err != nil {
		log.Fatal(err)
	}
	w.Register("example.upper", 0, func(ctx context.Context, job *client.WorkerJob) ([]byte, error) {
		return bytes.ToUpper(job.Data), nil
	})
	go w.Run(ctx)

	c, err := client.Dial(ctx, client.Config{Addr: server()})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	out, err := c.Do(ctx, client.Job{Function: "example.upper", Data: []byte("hello, gearman")})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(out))
	// Output: HELLO, GEARMAN
}

// Submit returns at once: many tasks can be in flight, each reporting
// through its handlers.
func ExampleClient_Submit() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	w, _ := client.NewWorker(client.Config{Addr: server()})
	w.Register("example.count", 0, func(ctx context.Context, job *client.WorkerJob) ([]byte, error) {
		for i := uint64(1); i <= 3; i++ {
			job.SendStatus(i, 3)
		}
		job.SendData([]byte("partial"))
		return []byte("done"), nil
	})
	go w.Run(ctx)

	c, _ := client.Dial(ctx, client.Config{Addr: server()})
	defer c.Close()
	task, err := c.Submit(ctx, client.Job{Function: "example.count", Priority: client.High}, &client.Handlers{
		Status: func(t *client.Task, num, den uint64) { fmt.Printf("status %d/%d\n", num, den) },
		Data:   func(t *client.Task, data []byte) { fmt.Printf("data %s\n", data) },
	})
	if err != nil {
		log.Fatal(err)
	}
	result, err := task.Wait(ctx)
	fmt.Println(string(result), err)
	// Output:
	// status 1/3
	// status 2/3
	// status 3/3
	// data partial
	// done <nil>
}

// A background job is done for its submitter once created; its status can
// be asked by handle or by unique ID.
func ExampleClient_Status() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _ := client.Dial(ctx, client.Config{Addr: server()})
	defer c.Close()

	task, _ := c.Submit(ctx, client.Job{Function: "example.nobody.works.this", Unique: "report-2026-11", Background: true}, nil)
	<-task.Done()
	st, _ := c.Status(ctx, task.Handle())
	fmt.Printf("known=%v running=%v\n", st.Known, st.Running)
	su, _ := c.StatusUnique(ctx, "report-2026-11")
	fmt.Printf("by unique: known=%v\n", su.Known)
	// Output:
	// known=true running=false
	// by unique: known=true
}

// Connecting to gearproxy over TLS with SCRAM-SHA-256; the mechanism is
// chosen from what the server offers (SCRAM-SHA-256-PLUS on TLS 1.3).
func ExampleDial_tls() {
	ctx := context.Background()
	c, err := client.Dial(ctx, client.Config{
		Addr: "gearproxy.example.org:4731",
		TLS:  &tls.Config{}, // system roots; add RootCAs for a private CA
		Credentials: &client.Credentials{
			Username: "alice",
			Password: os.Getenv("GEARPROXY_PASSWORD"),
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
}

// A worker authenticated by its client certificate alone (EXTERNAL).
func ExampleNewWorker_clientCertificate() {
	cert, err := tls.LoadX509KeyPair("worker.pem", "worker.key")
	if err != nil {
		log.Fatal(err)
	}
	w, err := client.NewWorker(client.Config{
		Addr:        "gearproxy.example.org:4731",
		TLS:         &tls.Config{Certificates: []tls.Certificate{cert}},
		Credentials: &client.Credentials{Mechanism: client.MechExternal},
		Concurrency: 4,
	})
	if err != nil {
		log.Fatal(err)
	}
	w.Register("img.resize", 30*time.Second, func(ctx context.Context, job *client.WorkerJob) ([]byte, error) {
		return job.Data, nil
	})
	log.Fatal(w.Run(context.Background()))
}
