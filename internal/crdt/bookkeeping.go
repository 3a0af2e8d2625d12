package crdt

import "sort"

// ActorVersions is what one node knows of one actor's versions. Known holds
// every version applied here or cleared (all of its changes since
// overwritten); Cleared is the subset known to have no surviving change.
type ActorVersions struct {
	Known   RangeSet
	Cleared RangeSet
}

// Bookkeeping is a node's knowledge of every actor's versions. The gaps
// below each actor's head are what sync must fetch.
type Bookkeeping struct {
	actors map[ActorID]*ActorVersions
}

// NewBookkeeping returns empty bookkeeping.
func NewBookkeeping() *Bookkeeping {
	return &Bookkeeping{actors: make(map[ActorID]*ActorVersions)}
}

func (b *Bookkeeping) actor(a ActorID) *ActorVersions {
	av := b.actors[a]
	if av == nil {
		av = &ActorVersions{}
		b.actors[a] = av
	}
	return av
}

// Knows reports whether version v of actor a was applied or cleared here.
func (b *Bookkeeping) Knows(a ActorID, v uint64) bool {
	av := b.actors[a]
	return av != nil && av.Known.Contains(v)
}

// MarkKnown records version v of actor a as applied.
func (b *Bookkeeping) MarkKnown(a ActorID, v uint64) { b.actor(a).Known.Add(v) }

// MarkKnownRange records a range of versions as applied (used when loading).
func (b *Bookkeeping) MarkKnownRange(a ActorID, r Range) { b.actor(a).Known.AddRange(r) }

// MarkCleared records that every change of version v of actor a was
// overwritten. A cleared version is also known.
func (b *Bookkeeping) MarkCleared(a ActorID, v uint64) {
	av := b.actor(a)
	av.Known.Add(v)
	av.Cleared.Add(v)
}

// MarkClearedRange records a range of cleared versions.
func (b *Bookkeeping) MarkClearedRange(a ActorID, r Range) {
	av := b.actor(a)
	av.Known.AddRange(r)
	av.Cleared.AddRange(r)
}

// IsCleared reports whether version v of actor a is known to be cleared.
func (b *Bookkeeping) IsCleared(a ActorID, v uint64) bool {
	av := b.actors[a]
	return av != nil && av.Cleared.Contains(v)
}

// Head is the highest version of actor a known here.
func (b *Bookkeeping) Head(a ActorID) uint64 {
	if av := b.actors[a]; av != nil {
		return av.Known.Max()
	}
	return 0
}

// Gaps returns the missing versions of actor a below its head.
func (b *Bookkeeping) Gaps(a ActorID) []Range {
	if av := b.actors[a]; av != nil {
		return av.Known.Gaps()
	}
	return nil
}

// TotalGaps is the number of missing versions across all actors.
func (b *Bookkeeping) TotalGaps() uint64 {
	var n uint64
	for _, av := range b.actors {
		n += av.Known.GapCount()
	}
	return n
}

// Actors lists every actor with known versions, in id order.
func (b *Bookkeeping) Actors() []ActorID {
	ids := make([]ActorID, 0, len(b.actors))
	for a := range b.actors {
		ids = append(ids, a)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].Compare(ids[j]) < 0 })
	return ids
}

// Versions returns a copy of what is known of actor a.
func (b *Bookkeeping) Versions(a ActorID) ActorVersions {
	av := b.actors[a]
	if av == nil {
		return ActorVersions{}
	}
	return ActorVersions{
		Known:   RangeSet{ranges: av.Known.Ranges()},
		Cleared: RangeSet{ranges: av.Cleared.Ranges()},
	}
}

// Clone returns an independent copy.
func (b *Bookkeeping) Clone() *Bookkeeping {
	c := NewBookkeeping()
	for a := range b.actors {
		v := b.Versions(a)
		c.actors[a] = &v
	}
	return c
}
