package cluster

import (
	"sync"
	"time"

	"github.com/patina-db/patina/internal/crdt"
)

// recentVersions remembers the versions this member wrote or received by
// broadcast lately, which sync then does not send: a peer that lacks such
// a version most likely has it on the wire or waiting in its inbox. In a
// region of up to direct_limit members the writer sends every version to
// every member at once; in larger ones relays carry it at about the same
// time. Without this, under a burst of large versions a sync round read,
// encoded and sent again versions already on their way (about 5% of the
// CPU of a reseed). A version whose broadcast was truly lost ages out of
// the window, and the next round after that sends it.
//
// Two generations of at most window each, so a version is remembered for
// between window and twice that. Times come from the caller.
type recentVersions struct {
	window time.Duration

	mu        sync.Mutex
	cur, prev map[crdt.ActorID]*crdt.RangeSet
	since     time.Time
}

// recentWindow is how long a version is left out of sync at least: about
// a sync interval.
const recentWindow = time.Second

func newRecentVersions(window time.Duration) *recentVersions {
	return &recentVersions{window: window, cur: map[crdt.ActorID]*crdt.RangeSet{}, prev: map[crdt.ActorID]*crdt.RangeSet{}}
}

func (r *recentVersions) rotate(now time.Time) {
	switch age := now.Sub(r.since); {
	case age >= 2*r.window:
		r.prev, r.cur, r.since = map[crdt.ActorID]*crdt.RangeSet{}, map[crdt.ActorID]*crdt.RangeSet{}, now
	case age >= r.window:
		r.prev, r.cur, r.since = r.cur, map[crdt.ActorID]*crdt.RangeSet{}, now
	}
}

// saw records version v of actor a.
func (r *recentVersions) saw(a crdt.ActorID, v uint64, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rotate(now)
	rs := r.cur[a]
	if rs == nil {
		rs = &crdt.RangeSet{}
		r.cur[a] = rs
	}
	rs.Add(v)
}

// of returns the recent versions of actor a, nil when none.
func (r *recentVersions) of(a crdt.ActorID, now time.Time) *crdt.RangeSet {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rotate(now)
	var ranges []crdt.Range
	for _, gen := range []map[crdt.ActorID]*crdt.RangeSet{r.prev, r.cur} {
		if rs := gen[a]; rs != nil {
			ranges = append(ranges, rs.Ranges()...)
		}
	}
	if len(ranges) == 0 {
		return nil
	}
	return crdt.RangeSetOf(ranges...)
}
