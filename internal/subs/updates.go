package subs

import (
	"sync"

	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/internal/store"
)

// Notify is one changed row of a followed table.
type Notify struct {
	Deleted bool
	PK      []crdt.Value
}

// Updates fans row changes out to the followers of each table (the
// consumers of POST /v1/updates/{table}).
type Updates struct {
	mu   sync.Mutex
	subs map[string]map[*UpdateSub]struct{}
}

// UpdateSub is one follower. C closes when the follower is cut off for
// falling behind (Lagged is then true) or unsubscribed.
type UpdateSub struct {
	C      chan Notify
	table  string
	Lagged bool
}

// NewUpdates returns an empty fan-out.
func NewUpdates() *Updates { return &Updates{subs: map[string]map[*UpdateSub]struct{}{}} }

// Subscribe follows a table with a buffer of the given size.
func (u *Updates) Subscribe(table string, buffer int) *UpdateSub {
	s := &UpdateSub{C: make(chan Notify, buffer), table: table}
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.subs[table] == nil {
		u.subs[table] = map[*UpdateSub]struct{}{}
	}
	u.subs[table][s] = struct{}{}
	return s
}

// Unsubscribe stops a follower; it is safe to call twice.
func (u *Updates) Unsubscribe(s *UpdateSub) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.subs[s.table][s]; ok {
		delete(u.subs[s.table], s)
		close(s.C)
	}
}

// Publish hands every row to its table's followers without waiting: a
// follower whose buffer is full is cut off.
func (u *Updates) Publish(rows []store.RowChange) {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, r := range rows {
		for s := range u.subs[r.Table] {
			select {
			case s.C <- Notify{Deleted: r.Deleted, PK: r.PK}:
			default:
				s.Lagged = true
				delete(u.subs[r.Table], s)
				close(s.C)
			}
		}
	}
}

// Count is the number of followers.
func (u *Updates) Count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, m := range u.subs {
		n += len(m)
	}
	return n
}
