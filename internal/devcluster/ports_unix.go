//go:build unix

package devcluster

import (
	"errors"
	"os"
	"syscall"
)

// tryClaim takes an exclusive lock on f without waiting: false if another
// holder has it.
func tryClaim(f *os.File) (bool, error) {
	err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		return false, nil
	}
	return err == nil, err
}
