package store

import (
	"bytes"
	"os"
	"strconv"
	"time"
)

// lockHolder names the process that holds the store, from the pid file it
// wrote after taking bbolt's lock. The holder writes that file just after
// locking, so an empty file or a pid that is no longer running (left by a
// holder that was killed) means "ask again shortly"; after wait it gives
// up and returns 0.
func lockHolder(pidPath string, wait time.Duration) int {
	deadline := time.Now().Add(wait)
	for {
		if pid := readPid(pidPath); pid > 0 && processAlive(pid) {
			return pid
		}
		if time.Now().After(deadline) {
			return 0
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readPid(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	if err != nil {
		return 0
	}
	return pid
}

// removePidFile removes the pid file if it still names this process.
func removePidFile(path string) {
	if readPid(path) == os.Getpid() {
		_ = os.Remove(path)
	}
}
