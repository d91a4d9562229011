package store

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data and the size, not its timestamps: the log is
// appended to, and its modification time is of no use after a crash.
func fdatasync(f *os.File) error {
	for {
		err := syscall.Fdatasync(int(f.Fd()))
		if err != syscall.EINTR {
			return err
		}
	}
}
