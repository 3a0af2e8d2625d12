//go:build !unix

package store

import "os"

// tryLock is a no-op where flock is not available: the database is not
// guarded against a second writer there.
func tryLock(*os.File) (bool, error) { return true, nil }
