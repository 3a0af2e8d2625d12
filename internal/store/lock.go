package store

import (
	"errors"
	"fmt"
	"os"
)

// ErrInUse is returned when another process (or another store in this
// one) holds a database: two writers of one file would hand out the same
// versions twice.
var ErrInUse = errors.New("store: database in use")

// DatabaseLock is the advisory lock a store holds on its database for as
// long as it is open, and a restore holds while it replaces the file. It
// lives in a file beside the database (<db>.lock), not on the database
// itself, so it survives the database being renamed over.
type DatabaseLock struct {
	f *os.File
}

// LockPath is the lock file of the database at path.
func LockPath(path string) string { return path + ".lock" }

// LockDatabase takes the lock of the database at path without waiting. It
// fails with ErrInUse when someone else holds it.
func LockDatabase(path string) (*DatabaseLock, error) {
	f, err := os.OpenFile(LockPath(path), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	held, err := tryLock(f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	if !held {
		f.Close()
		return nil, fmt.Errorf("%w: %s is open in another process (a running agent, or a restore)", ErrInUse, path)
	}
	return &DatabaseLock{f: f}, nil
}

// Release gives the lock up. The lock file stays: removing it would let a
// second process lock a new file while a first still holds the old one.
func (l *DatabaseLock) Release() error {
	if l == nil || l.f == nil {
		return nil
	}
	err := l.f.Close() // closing the descriptor releases the lock
	l.f = nil
	return err
}
