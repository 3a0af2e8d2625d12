package cluster

import (
	"math/rand/v2"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	wirev1 "github.com/patina-db/patina/proto/patina/wire/v1"

	"github.com/patina-db/patina/internal/crdt"
)

func TestMaxTransmissions(t *testing.T) {
	for _, c := range []struct{ mult, n, want int }{{2, 1, 2}, {2, 3, 4}, {2, 4, 6}, {2, 7, 6}, {3, 1000, 30}, {1, 0, 1}} {
		if got := MaxTransmissions(c.mult, c.n); got != c.want {
			t.Errorf("MaxTransmissions(%d, %d) = %d, want %d", c.mult, c.n, got, c.want)
		}
	}
}

func TestSendQueuePriorityAndDrops(t *testing.T) {
	q := newSendQueue(3)
	cs := func(v uint64) *crdt.Changeset { return &crdt.Changeset{Version: v} }
	q.push(queued{cs: cs(1), hops: 2})
	q.push(queued{cs: cs(2)})
	q.push(queued{cs: cs(3), hops: 1})
	if ok := q.push(queued{cs: cs(4)}); ok {
		t.Fatal("push into a full queue reported no drop")
	}
	// The most travelled (version 1, 2 hops) made room for version 4.
	got := q.pop(10)
	var versions []uint64
	for _, g := range got {
		versions = append(versions, g.cs.Version)
	}
	if len(versions) != 3 || versions[0] != 2 || versions[1] != 4 || versions[2] != 3 {
		t.Fatalf("pop order %v, want [2 4 3]", versions)
	}
	q.push(queued{cs: cs(5)})
	q.push(queued{cs: cs(6)})
	q.push(queued{cs: cs(7)})
	if q.push(queued{cs: cs(8), hops: 5}); q.len() != 3 || q.dropped != 2 {
		t.Fatalf("a newcomer with the most hops must be the one dropped: len %d dropped %d", q.len(), q.dropped)
	}
}

func TestSeenSet(t *testing.T) {
	s := newSeenSet()
	a := crdt.ActorID{1}
	if !s.see(a, 3) || s.see(a, 3) || !s.see(a, 2) || !s.see(crdt.ActorID{2}, 3) {
		t.Fatal("seen set")
	}
	s.prune(func(x crdt.ActorID) uint64 {
		if x == a {
			return 3
		}
		return 0
	})
	if _, ok := s.actors[a]; ok || s.actors[crdt.ActorID{2}] == nil {
		t.Fatal("prune")
	}
}

func TestPickTargets(t *testing.T) {
	members := []Member{
		{Name: "self", Alive: true, QUICAddr: "x"},
		{Name: "a", Alive: true, QUICAddr: "x"},
		{Name: "b", Alive: true, QUICAddr: "x"},
		{Name: "suspect", Alive: false, QUICAddr: "x"},
		{Name: "c", Alive: true, QUICAddr: "x"},
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	seen := map[string]bool{}
	for i := 0; i < 100; i++ {
		got := pickTargets(members, "self", 2, rnd, nil)
		if len(got) != 2 || got[0].Name == got[1].Name {
			t.Fatalf("picked %v", got)
		}
		for _, m := range got {
			if m.Name == "self" || m.Name == "suspect" {
				t.Fatalf("picked %s", m.Name)
			}
			seen[m.Name] = true
		}
	}
	if len(seen) != 3 {
		t.Fatalf("not random: only %v picked", seen)
	}
	for i := 0; i < 20; i++ {
		for _, m := range pickTargets(members, "self", 3, rnd, func(m Member) bool { return m.Name == "a" }) {
			if m.Name == "a" {
				t.Fatal("picked a skipped member")
			}
		}
	}
}

func TestLagWindowP99(t *testing.T) {
	var w lagWindow
	if w.p99() != 0 {
		t.Fatal("empty window")
	}
	for i := 1; i <= 100; i++ {
		w.add(time.Duration(i) * time.Millisecond)
	}
	if got := w.p99(); got != 99*time.Millisecond {
		t.Fatalf("p99 %v", got)
	}
	for i := 0; i < lagSamples; i++ {
		w.add(time.Millisecond)
	}
	if got := w.p99(); got != time.Millisecond {
		t.Fatalf("p99 after the window rolled %v", got)
	}
}

func TestEffectiveFanoutAndRelays(t *testing.T) {
	for _, c := range []struct{ conf, direct, n, want int }{
		{3, -1, 3, 4}, {3, -1, 10, 6}, {3, -1, 2000, 13}, {8, -1, 10, 8},
		{3, 16, 3, 3}, {3, 16, 10, 9}, {3, 16, 17, 16}, {3, 16, 18, 7}, {3, 16, 2000, 13}, {12, 8, 10, 12},
	} {
		if got := EffectiveFanout(c.conf, c.direct, c.n); got != c.want {
			t.Errorf("EffectiveFanout(%d, %d, %d) = %d, want %d", c.conf, c.direct, c.n, got, c.want)
		}
	}
	if needsRelay(4, 5) || !needsRelay(4, 6) {
		t.Error("needsRelay")
	}
}

func TestSplitBroadcast(t *testing.T) {
	b := &wirev1.Broadcast{}
	for i := 0; i < 10; i++ {
		b.Changesets = append(b.Changesets, &wirev1.Changeset{Version: uint64(i + 1), Actor: make([]byte, 100)})
	}
	parts := splitBroadcast(b, 400)
	total := 0
	for _, p := range parts {
		if proto.Size(p) > 400+16 || len(p.Changesets) == 0 {
			t.Fatalf("part of %d bytes, %d changesets", proto.Size(p), len(p.Changesets))
		}
		total += len(p.Changesets)
	}
	if total != 10 || len(parts) < 3 {
		t.Fatalf("%d changesets in %d parts", total, len(parts))
	}
}

func TestRecentVersionsWindow(t *testing.T) {
	r := newRecentVersions(time.Second)
	a, b := crdt.ActorID{1}, crdt.ActorID{2}
	t0 := time.Unix(1000, 0)
	r.saw(a, 5, t0)
	r.saw(a, 6, t0.Add(100*time.Millisecond))
	r.saw(b, 7, t0)
	if got := r.of(a, t0.Add(500*time.Millisecond)); got == nil || !got.Equal(crdt.RangeSetOf(crdt.Range{Start: 5, End: 6})) {
		t.Fatalf("a within the window: %v", got)
	}
	if r.of(crdt.ActorID{3}, t0) != nil {
		t.Fatal("versions for an actor never seen")
	}
	// After one window the versions are still there (previous generation);
	// after two they are gone.
	if got := r.of(a, t0.Add(1500*time.Millisecond)); got == nil || !got.Contains(5) {
		t.Fatalf("a after one window: %v", got)
	}
	if got := r.of(a, t0.Add(3500*time.Millisecond)); got != nil {
		t.Fatalf("a after two windows: %v", got)
	}
	// A version whose broadcast was lost is not left out.
	t1 := t0.Add(10 * time.Second)
	r.saw(a, 8, t1)
	r.saw(a, 9, t1)
	r.lost(a, 8, t1)
	if got := r.of(a, t1); got == nil || got.Contains(8) || !got.Contains(9) {
		t.Fatalf("after a lost broadcast: %v", got)
	}
	r.lost(a, 9, t1)
	if got := r.of(a, t1); got != nil {
		t.Fatalf("everything lost: %v", got)
	}
}
