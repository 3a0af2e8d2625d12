package cluster

import (
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/patina-db/patina/internal/crdt"
)

// The broadcast decisions, free of I/O so they can be tested and, later,
// simulated.

// MaxTransmissions is how many hops a changeset may travel in a cluster
// of n members: mult·⌈log₂(n+1)⌉, at least 1. Epidemic broadcast reaches
// every member with high probability within O(log n) rounds; the bound
// keeps a changeset that keeps failing somewhere from circulating forever.
func MaxTransmissions(mult, n int) int {
	if n < 1 {
		n = 1
	}
	return max(1, mult*int(math.Ceil(math.Log2(float64(n+1)))))
}

// EffectiveFanout is how many members a changeset is sent to in a cluster
// of n members (self included). While the others number at most direct,
// the writer sends to every one of them: one message per member per
// version, one hop, and no relays at all. Relaying costs more messages
// in total, not fewer (every member forwards to fanout others), and each
// hop adds an apply and a send to the latency; it pays only by spreading
// the writer's sends over the cluster, which matters in large clusters.
// Beyond direct it is the configured fanout or ⌈log₂(n+1)⌉+2, whichever
// is more: each member relays a changeset once, so the chance that some
// member hears it from nobody falls fast with the fanout. A negative
// direct turns direct sending off.
func EffectiveFanout(configured, direct, n int) int {
	if direct >= 0 && n-1 <= direct {
		return max(configured, n-1)
	}
	return max(configured, int(math.Ceil(math.Log2(float64(n+1))))+2)
}

// needsRelay reports whether relays can reach anyone the writer did not:
// not when the writer's fanout covered every other member.
func needsRelay(fanout, members int) bool { return members-1 > fanout }

// queued is a changeset waiting to be sent, with the hops it has made and
// the writer's commit time (unix nanoseconds, 0 when unknown).
type queued struct {
	cs        *crdt.Changeset
	hops      uint32
	committed int64
	from      string // the member it came from, "" for a local write
}

// sendQueue is a bounded priority queue of changesets: fewer hops first
// (fresh writes before relays), FIFO within a hop count. When full, it
// drops the changeset with the most hops: the one most likely to have
// reached everyone already. What it drops, sync repairs.
type sendQueue struct {
	limit   int
	size    int
	buckets [][]queued // by hops
	dropped uint64
}

func newSendQueue(limit int) *sendQueue { return &sendQueue{limit: max(1, limit)} }

// push adds a changeset; it reports false when it had to drop one (that
// one or another).
func (q *sendQueue) push(item queued) bool {
	hops := item.hops
	for int(hops) >= len(q.buckets) {
		q.buckets = append(q.buckets, nil)
	}
	if q.size >= q.limit {
		worst := len(q.buckets) - 1
		for worst >= 0 && len(q.buckets[worst]) == 0 {
			worst--
		}
		q.dropped++
		if worst < int(hops) {
			return false // the newcomer is the most travelled
		}
		q.buckets[worst] = q.buckets[worst][:len(q.buckets[worst])-1]
		q.size--
		q.buckets[hops] = append(q.buckets[hops], item)
		q.size++
		return false
	}
	q.buckets[hops] = append(q.buckets[hops], item)
	q.size++
	return true
}

// pop takes up to n changesets, fewest hops first.
func (q *sendQueue) pop(n int) []queued {
	var out []queued
	for h := range q.buckets {
		for len(q.buckets[h]) > 0 && len(out) < n {
			out = append(out, q.buckets[h][0])
			q.buckets[h][0] = queued{}
			q.buckets[h] = q.buckets[h][1:]
			q.size--
		}
	}
	return out
}

func (q *sendQueue) len() int { return q.size }

// seenSet remembers which (actor, version) pairs arrived by broadcast, so
// a node relays each only the first time, whether or not it could apply it.
type seenSet struct {
	actors map[crdt.ActorID]*crdt.RangeSet
}

func newSeenSet() *seenSet { return &seenSet{actors: map[crdt.ActorID]*crdt.RangeSet{}} }

// see records (a, v) and reports whether it was new.
func (s *seenSet) see(a crdt.ActorID, v uint64) bool {
	rs := s.actors[a]
	if rs == nil {
		rs = &crdt.RangeSet{}
		s.actors[a] = rs
	}
	if rs.Contains(v) {
		return false
	}
	rs.Add(v)
	return true
}

// has reports whether (a, v) was seen.
func (s *seenSet) has(a crdt.ActorID, v uint64) bool {
	rs := s.actors[a]
	return rs != nil && rs.Contains(v)
}

// actorIDs lists the actors the set holds versions of.
func (s *seenSet) actorIDs() []crdt.ActorID {
	out := make([]crdt.ActorID, 0, len(s.actors))
	for a := range s.actors {
		out = append(out, a)
	}
	return out
}

// prune forgets what lies at or below each actor's known prefix: the
// store answers for those versions, so the set only needs the rest.
func (s *seenSet) prune(prefix func(crdt.ActorID) uint64) {
	for a, rs := range s.actors {
		rs.DropThrough(prefix(a))
		if rs.Len() == 0 {
			delete(s.actors, a)
		}
	}
}

// Member is a peer as the data plane sees it.
type Member struct {
	Name       string
	Actor      crdt.ActorID
	Region     string
	GossipAddr string
	QUICAddr   string
	APIAddr    string
	GRPCAddr   string
	State      string        // alive, suspect, dead or left
	Alive      bool          // State is alive
	RTT        time.Duration // last probe round trip, 0 when not measured
}

// pickTargets chooses up to fanout distinct alive members at random,
// leaving out self and anyone skip names (for a relay: the writer and the
// member it came from, who have it already).
func pickTargets(members []Member, self string, fanout int, rnd *rand.Rand, skip func(Member) bool) []Member {
	var pool []Member
	for _, m := range members {
		if m.Alive && m.Name != self && m.QUICAddr != "" && (skip == nil || !skip(m)) {
			pool = append(pool, m)
		}
	}
	rnd.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	if len(pool) > fanout {
		pool = pool[:fanout]
	}
	return pool
}

// lagWindow keeps the last replication lags measured, for a p99.
type lagWindow struct {
	samples []time.Duration
	next    int
	full    bool
}

const lagSamples = 2048

func (w *lagWindow) add(d time.Duration) {
	if w.samples == nil {
		w.samples = make([]time.Duration, lagSamples)
	}
	w.samples[w.next] = d
	w.next = (w.next + 1) % lagSamples
	w.full = w.full || w.next == 0
}

// p99 is the 99th percentile of the window, 0 when empty.
func (w *lagWindow) p99() time.Duration {
	n := w.next
	if w.full {
		n = lagSamples
	}
	if n == 0 {
		return 0
	}
	s := append([]time.Duration(nil), w.samples[:n]...)
	slices.Sort(s)
	return s[min(n-1, int(math.Ceil(float64(n)*0.99))-1)]
}
