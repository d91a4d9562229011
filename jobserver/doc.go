// Package jobserver is gearproxy's bundled job server: a gearmand 1.1.20
// compatible server with queues per function and priority, coalescing on
// unique IDs, worker wake-ups, timeouts, epoch and SCHED jobs and the admin
// text commands. It runs standalone (`gearproxy server`) or in process as a
// proxy backend, and keeps durable jobs through jobserver/store.
package jobserver
