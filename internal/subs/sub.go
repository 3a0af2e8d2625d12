package subs

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patina-db/patina/internal/crdt"
)

// ChangeKind is what happened to a result row.
type ChangeKind uint8

// The kinds of change, as the API spells them.
const (
	Insert ChangeKind = iota + 1
	Update
	Delete
)

func (k ChangeKind) String() string {
	switch k {
	case Insert:
		return "insert"
	case Update:
		return "update"
	case Delete:
		return "delete"
	}
	return fmt.Sprintf("ChangeKind(%d)", uint8(k))
}

// Change is one event of a subscription. IDs are contiguous from 1.
type Change struct {
	ID    uint64
	Kind  ChangeKind
	RowID int64
	Cells []crdt.Value
}

// Row is one row of a subscription's current result.
type Row struct {
	RowID int64
	Cells []crdt.Value
}

// ErrNotRetained is returned when a resume point is older than the
// retained change window.
var ErrNotRetained = errors.New("changes after that id are no longer retained")

// ErrAhead is returned for a resume point past the last change.
var ErrAhead = errors.New("that change id has not happened yet")

// resultRow is one materialized result row. Its identity is the keys of
// the table rows it was made from.
type resultRow struct {
	rowid int64
	cells []byte   // PackPK of the cells: compared to detect updates
	keys  [][]byte // per occurrence, its packed key; nil when null-extended
}

// freshRow is a result row as a query just returned it.
type freshRow struct {
	cells []byte
	keys  [][]byte
	pos   int // its place in the query's result: new rows get row ids in this order
}

// Sub is one subscription: a query, its materialized result and the
// changes that led there. Listeners read it; only the engine writes it.
type Sub struct {
	ID      string
	Query   Query
	plan    *Plan
	routes  []Route // the plan's routes whose parameter was given
	columns []string
	ready   atomic.Bool // its first rows are in: listeners may see it

	mu        sync.Mutex
	rows      map[string]*resultRow            // identity → row
	byKey     []map[string]map[string]struct{} // occurrence → packed key → identities
	nextRowID int64
	last      uint64   // id of the last change
	visible   uint64   // id of the last change saved and shown to listeners
	log       []Change // the retained window, ascending ids ending at last
	window    int
	wake      chan struct{} // closed when changes are added or the sub ends
	listeners int
	idleSince time.Time
	ended     error               // set when the subscription can no longer be followed
	dirty     map[string]struct{} // identities changed since the last save
}

func newSub(id string, q Query, plan *Plan, window int) *Sub {
	s := &Sub{
		ID: id, Query: q, plan: plan, window: window,
		rows:  map[string]*resultRow{},
		byKey: make([]map[string]map[string]struct{}, len(plan.Occurrences)),
		wake:  make(chan struct{}),
		dirty: map[string]struct{}{},
	}
	for i := range s.byKey {
		s.byKey[i] = map[string]map[string]struct{}{}
	}
	return s
}

// Columns names the result columns.
func (s *Sub) Columns() []string { return s.columns }

// Snapshot returns the current result, ordered by row id, and the id of
// the last change it includes. While a batch's changes are being saved it
// waits for them.
func (s *Sub) Snapshot() ([]Row, uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.ended == nil && s.visible != s.last {
		wake := s.wake
		s.mu.Unlock()
		<-wake
		s.mu.Lock()
	}
	if s.ended != nil {
		return nil, 0, s.ended
	}
	out := make([]Row, 0, len(s.rows))
	for _, r := range s.rows {
		cells, err := crdt.UnpackValues(r.cells)
		if err != nil {
			return nil, 0, fmt.Errorf("subscription %s: stored row: %w", s.ID, err)
		}
		out = append(out, Row{RowID: r.rowid, Cells: cells})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].RowID < out[j].RowID })
	return out, s.last, nil
}

// Last is the id of the last change listeners can see.
func (s *Sub) Last() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.visible
}

// ChangesAfter returns up to max retained changes with ids above after. When
// there are none yet, it returns a channel that closes when there may be.
func (s *Sub) ChangesAfter(after uint64, max int) ([]Change, <-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended != nil {
		return nil, nil, s.ended
	}
	// Changes past visible are not saved yet: they stay hidden.
	if after > s.visible {
		return nil, nil, fmt.Errorf("resume from %d: %w (last change is %d)", after, ErrAhead, s.visible)
	}
	first := s.last - uint64(len(s.log)) + 1
	if after+1 < first {
		return nil, nil, fmt.Errorf("resume from %d: %w (oldest retained change is %d)", after, ErrNotRetained, first)
	}
	if after == s.visible {
		return nil, s.wake, nil
	}
	from := int(after + 1 - first)
	n := min(int(s.visible-after), max)
	return append([]Change(nil), s.log[from:from+n]...), nil, nil
}

// Listeners is how many clients follow the subscription now.
func (s *Sub) Listeners() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listeners
}

// attach and detach count listeners; a subscription without any for long
// enough is dropped.
func (s *Sub) attach() {
	s.mu.Lock()
	s.listeners++
	s.mu.Unlock()
}

func (s *Sub) detach(now time.Time) {
	s.mu.Lock()
	s.listeners--
	if s.listeners == 0 {
		s.idleSince = now
	}
	s.mu.Unlock()
}

// end stops the subscription: listeners get err.
func (s *Sub) end(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended == nil {
		s.ended = err
		close(s.wake)
	}
}

// oldRowsWith adds to scope the identities of current rows whose
// occurrence occ has one of the given packed keys.
func (s *Sub) oldRowsWith(occ int, keys map[string][]crdt.Value, scope map[string]struct{}) {
	index := s.byKey[occ]
	for k := range keys {
		for ident := range index[k] {
			scope[ident] = struct{}{}
		}
	}
}

// merge replaces the rows in scope by fresh, the query's current rows for
// that scope, and returns the changes that does, with ids assigned. The
// caller holds no lock; merge takes it so listeners see a whole batch or
// none of it. It is pure bookkeeping: no I/O.
func (s *Sub) merge(scope map[string]struct{}, fresh map[string]freshRow) ([]Change, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var deletes, updates, inserts []string
	for ident := range scope {
		if _, still := fresh[ident]; !still {
			if _, ok := s.rows[ident]; ok {
				deletes = append(deletes, ident)
			}
		}
	}
	for ident, f := range fresh {
		old, ok := s.rows[ident]
		switch {
		case !ok:
			inserts = append(inserts, ident)
		case !bytes.Equal(old.cells, f.cells):
			updates = append(updates, ident)
		}
	}
	if len(deletes)+len(updates)+len(inserts) == 0 {
		return nil, nil
	}
	byRowID := func(idents []string) {
		sort.Slice(idents, func(i, j int) bool { return s.rows[idents[i]].rowid < s.rows[idents[j]].rowid })
	}
	byRowID(deletes)
	byRowID(updates)
	// New rows take row ids in the query's order, so that a snapshot,
	// which lists rows by id, follows its ORDER BY.
	sort.Slice(inserts, func(i, j int) bool { return fresh[inserts[i]].pos < fresh[inserts[j]].pos })
	changes := make([]Change, 0, len(deletes)+len(updates)+len(inserts))
	var bad error
	emit := func(kind ChangeKind, rowid int64, packed []byte) {
		cells, err := crdt.UnpackValues(packed)
		if err != nil && bad == nil {
			bad = fmt.Errorf("subscription %s: row %d: %w", s.ID, rowid, err)
		}
		s.last++
		changes = append(changes, Change{ID: s.last, Kind: kind, RowID: rowid, Cells: cells})
	}
	for _, ident := range deletes {
		r := s.rows[ident]
		emit(Delete, r.rowid, r.cells)
		s.dirty[ident] = struct{}{}
		s.unindex(ident, r)
		delete(s.rows, ident)
	}
	for _, ident := range updates {
		r := s.rows[ident]
		r.cells = fresh[ident].cells
		s.dirty[ident] = struct{}{}
		emit(Update, r.rowid, r.cells)
	}
	for _, ident := range inserts {
		f := fresh[ident]
		s.nextRowID++
		r := &resultRow{rowid: s.nextRowID, cells: f.cells, keys: f.keys}
		s.rows[ident] = r
		s.index(ident, r)
		s.dirty[ident] = struct{}{}
		emit(Insert, r.rowid, r.cells)
	}
	s.retain(changes)
	return changes, bad
}

// retain appends changes to the window and drops what falls out of it.
func (s *Sub) retain(changes []Change) {
	s.log = append(s.log, changes...)
	if over := len(s.log) - s.window; over > 0 {
		// Copy rather than reslice, so the dropped changes are freed.
		s.log = append(make([]Change, 0, s.window), s.log[over:]...)
	}
}

// publish shows the changes saved so far to the listeners and wakes
// them.
func (s *Sub) publish() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended == nil {
		s.visible = s.last
		close(s.wake)
		s.wake = make(chan struct{})
	}
}

func (s *Sub) index(ident string, r *resultRow) {
	for occ, k := range r.keys {
		if k == nil {
			continue
		}
		m := s.byKey[occ][string(k)]
		if m == nil {
			m = map[string]struct{}{}
			s.byKey[occ][string(k)] = m
		}
		m[ident] = struct{}{}
	}
}

func (s *Sub) unindex(ident string, r *resultRow) {
	for occ, k := range r.keys {
		if k == nil {
			continue
		}
		m := s.byKey[occ][string(k)]
		delete(m, ident)
		if len(m) == 0 {
			delete(s.byKey[occ], string(k))
		}
	}
}

// load restores a persisted row.
func (s *Sub) load(ident string, r *resultRow) {
	s.rows[ident] = r
	s.index(ident, r)
}
