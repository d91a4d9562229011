package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// idleResult is the memory a server needs per idle client connection
// (issue 4: at most 16 KiB through the proxy).
type idleResult struct {
	Label    string  `json:"label"`
	Conns    int     `json:"conns"`
	PerConn  float64 `json:"bytes_per_conn"`
	Target   float64 `json:"target_bytes_per_conn,omitempty"`
	Verdict  string  `json:"verdict,omitempty"`
	rssMiB   [2]int64
	openTime time.Duration
}

// measureIdle opens n connections to p that never send anything, and
// divides the growth of p's VmRSS by n. target 0 means no target.
func measureIdle(ctx context.Context, p *proc, label string, n int, target float64) (*idleResult, error) {
	before, err := p.rss()
	if err != nil {
		return nil, err
	}
	t0 := time.Now()
	conns := make([]net.Conn, n)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	// A bounded number of dialers: a burst of 10k SYNs overflows the
	// listen backlog and stalls on retransmits.
	sem := make(chan struct{}, 64)
	for i := range conns {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", p.addr)
			if err != nil {
				select {
				case errs <- err:
				default:
				}
				return
			}
			conns[i] = c
		})
	}
	wg.Wait()
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	select {
	case err := <-errs:
		return nil, fmt.Errorf("%s: open %d idle connections: %w", label, n, err)
	default:
	}
	opened := time.Since(t0)
	// Give the server time to set each connection up (goroutines, buffers)
	// before reading its memory.
	time.Sleep(2 * time.Second)
	after, err := p.rss()
	if err != nil {
		return nil, err
	}
	r := &idleResult{Label: label, Conns: n, PerConn: float64(after-before) / float64(n), Target: target,
		rssMiB: [2]int64{before >> 20, after >> 20}, openTime: opened}
	if target > 0 {
		r.Verdict = "ok"
		if r.PerConn > target {
			r.Verdict = "MISS"
		}
	}
	return r, nil
}

func (r *idleResult) print(out io.Writer) {
	target := ""
	if r.Target > 0 {
		target = fmt.Sprintf("<= %.0f B", r.Target)
	}
	fmt.Fprintf(out, "  %-26s %8.0f B per idle connection (%d conns, VmRSS %d -> %d MiB)  %s %s\n",
		r.Label, r.PerConn, r.Conns, r.rssMiB[0], r.rssMiB[1], target, r.Verdict)
}
