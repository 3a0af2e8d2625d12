package store

import "time"

// WriteKind names what held the write lock: a local transaction or a
// batch of remote changesets.
type WriteKind string

const (
	WriteLocal WriteKind = "local" // a local write transaction
	WriteApply WriteKind = "apply" // a batch of remote changesets
)

// WriteObserver watches the write lock, for metrics and the watchdog:
// WriteStarted once a local transaction or an apply batch holds it,
// WriteFinished when it lets go, with how long it held it. Both are
// called under the lock and must be quick.
type WriteObserver interface {
	WriteStarted(kind WriteKind)
	WriteFinished(kind WriteKind, held time.Duration)
}

// SetWriteObserver registers the observer (nil: none). Set it before
// writing.
func (s *Store) SetWriteObserver(o WriteObserver) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.observer = o
}

// observeWrite tells the observer a write started and returns the call
// that tells it the write ended. Callers hold mu.
func (s *Store) observeWrite(kind WriteKind) func() {
	o := s.observer
	if o == nil {
		return func() {}
	}
	start := time.Now()
	o.WriteStarted(kind)
	return func() { o.WriteFinished(kind, time.Since(start)) }
}
