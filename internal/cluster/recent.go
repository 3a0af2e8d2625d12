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
// CPU of a reseed). A version whose broadcast this member failed to send
// (or dropped, with too many messages in flight to a member) is not left
// out; one lost further on ages out of the window, and the next round
// after that sends it.
//
// Two generations of at most window each, so a version is remembered for
// between window and twice that. Times come from the caller.
type recentVersions struct {
	window time.Duration

	mu        sync.Mutex
	cur, prev map[crdt.ActorID]*crdt.RangeSet
	// lost are versions whose broadcast to some member failed or was
	// dropped: sync sends them at once.
	lostCur, lostPrev map[crdt.ActorID]*crdt.RangeSet
	since             time.Time
}

// recentWindow is how long a version is left out of sync at least: about
// a sync interval.
const recentWindow = time.Second

func newRecentVersions(window time.Duration) *recentVersions {
	r := &recentVersions{window: window}
	r.rotate(time.Time{})
	return r
}

func (r *recentVersions) rotate(now time.Time) {
	switch age := now.Sub(r.since); {
	case r.cur == nil || age >= 2*r.window:
		r.prev, r.cur = map[crdt.ActorID]*crdt.RangeSet{}, map[crdt.ActorID]*crdt.RangeSet{}
		r.lostPrev, r.lostCur = map[crdt.ActorID]*crdt.RangeSet{}, map[crdt.ActorID]*crdt.RangeSet{}
		r.since = now
	case age >= r.window:
		r.prev, r.cur = r.cur, map[crdt.ActorID]*crdt.RangeSet{}
		r.lostPrev, r.lostCur = r.lostCur, map[crdt.ActorID]*crdt.RangeSet{}
		r.since = now
	}
}

func addTo(gen map[crdt.ActorID]*crdt.RangeSet, a crdt.ActorID, v uint64) {
	rs := gen[a]
	if rs == nil {
		rs = &crdt.RangeSet{}
		gen[a] = rs
	}
	rs.Add(v)
}

// saw records version v of actor a.
func (r *recentVersions) saw(a crdt.ActorID, v uint64, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rotate(now)
	addTo(r.cur, a, v)
}

// lost records that the broadcast of version v of actor a failed to reach
// some member: sync no longer leaves it out.
func (r *recentVersions) lost(a crdt.ActorID, v uint64, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rotate(now)
	addTo(r.lostCur, a, v)
}

// of returns the recent versions of actor a, nil when none.
func (r *recentVersions) of(a crdt.ActorID, now time.Time) *crdt.RangeSet {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rotate(now)
	var ranges, lost []crdt.Range
	for _, gen := range []map[crdt.ActorID]*crdt.RangeSet{r.prev, r.cur} {
		if rs := gen[a]; rs != nil {
			ranges = append(ranges, rs.Ranges()...)
		}
	}
	if len(ranges) == 0 {
		return nil
	}
	for _, gen := range []map[crdt.ActorID]*crdt.RangeSet{r.lostPrev, r.lostCur} {
		if rs := gen[a]; rs != nil {
			lost = append(lost, rs.Ranges()...)
		}
	}
	set := crdt.RangeSetOf(ranges...)
	if len(lost) > 0 {
		set = crdt.RangeSetOf(set.Subtract(crdt.RangeSetOf(lost...))...)
	}
	if set.Len() == 0 {
		return nil
	}
	return set
}
