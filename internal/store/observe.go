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
// WriteFinished when it lets go, with how long it held it and how much it
// carried: the client transactions of a local commit (more than one when
// group commit grouped them), the changesets of an apply batch. Both are
// called under the lock and must be quick.
type WriteObserver interface {
	WriteStarted(kind WriteKind)
	WriteFinished(kind WriteKind, held time.Duration, items int)
}

// SetWriteObserver registers the observer (nil: none). Set it before
// writing.
func (s *Store) SetWriteObserver(o WriteObserver) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.observer = o
}

// observeWrite tells the observer a write started and returns the call
// that tells it the write ended, with what it carried. Callers hold mu.
func (s *Store) observeWrite(kind WriteKind) func(items int) {
	o := s.observer
	if o == nil {
		return func(int) {}
	}
	start := time.Now()
	o.WriteStarted(kind)
	return func(items int) { o.WriteFinished(kind, time.Since(start), items) }
}
