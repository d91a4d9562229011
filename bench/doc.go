// Package bench is a load generator for Gearman job servers that checks every
// result it measures. It drives clients and workers over the binary protocol
// against gearmand, the bundled server or the proxy, and counts lost,
// duplicated and mismatched jobs alongside throughput and latency, so that a
// fast number from a server that drops work is never mistaken for a good one.
//
// Three modes:
//
//   - fg: each client keeps Pipeline foreground jobs (SUBMIT_JOB*) in flight;
//     workers return a transformation of the payload and the client checks
//     that each result is the transformation of the payload it sent.
//   - bg: clients queue Jobs background jobs (SUBMIT_JOB*_BG) with Pipeline
//     submits in flight, then workers drain the queue; every payload carries
//     its job's key, so the run proves each job ran exactly once.
//   - echo: ECHO_REQ round trips, the floor of what a server can do.
//
// Workers behave like libgearman's: CAN_DO, GRAB_JOB_UNIQ, PRE_SLEEP when told
// NO_JOB and a new grab on NOOP.
//
// The generator is built not to be the bottleneck: one goroutine per
// connection that both reads and writes, replies to a burst of packets
// written with one flush, payloads and handles in reused buffers (no
// allocation per job), and latencies in a fixed-size histogram.
//
// Connections come from Config.Dial, so TLS and SASL can wrap the TCP
// connection without the load logic knowing.
package bench
