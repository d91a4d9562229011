// Package store persists the bundled job server's background jobs, so that a
// job whose JOB_CREATED reached its client survives a crash or restart.
package store
