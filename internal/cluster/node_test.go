package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"

	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/internal/store"
	wirev1 "github.com/patina-db/patina/proto/patina/wire/v1"
)

// TestSyncStateBoundsGaps: a state with more gaps than a peer accepts
// lists only the newest, so that a peer still serves it, and the peer's
// reading of it never takes a missing version for one this node has.
func TestSyncStateBoundsGaps(t *testing.T) {
	b := crdt.NewBookkeeping()
	var x, y crdt.ActorID
	x[0], y[0] = 1, 2
	for v := uint64(1); v <= 201; v += 2 { // x lacks 2, 4, ..., 200: 100 gaps
		b.MarkKnown(x, v)
	}
	for v := uint64(1); v <= 41; v += 4 { // y lacks 2-4, 6-8, ..., 38-40: 10 gaps
		b.MarkKnown(y, v)
	}
	if s := syncState(b, 1000, 7); countGaps(s) != 110 {
		t.Fatalf("under the bound: %d gaps listed, want all 110", countGaps(s))
	}
	s := syncState(b, 20, 0)
	if n := countGaps(s); n != 20 {
		t.Fatalf("%d gaps listed, want 20", n)
	}
	for _, av := range s.GetActors() {
		a, _ := crdt.ActorIDFromBytes(av.GetActor())
		if av.GetHead() != b.Head(a) {
			t.Fatalf("actor %x: head %d listed, want %d", a[0], av.GetHead(), b.Head(a))
		}
		var gaps []crdt.Range
		for _, g := range av.GetGaps() {
			gaps = append(gaps, crdt.Range{Start: g.GetStart(), End: g.GetEnd()})
		}
		if !slices.IsSortedFunc(gaps, func(p, q crdt.Range) int { return int(p.Start) - int(q.Start) }) {
			t.Fatalf("actor %x: gaps out of order: %v", a[0], gaps)
		}
		known := crdt.HeadAndGaps(av.GetHead(), gaps)
		for v := uint64(1); v <= b.Head(a); v++ {
			if b.Knows(a, v) && !known.Contains(v) {
				t.Fatalf("actor %x: version %d, which this node has, reads as missing", a[0], v)
			}
		}
	}
	// The newest 20 are x's gaps 162..200 (y's newest ends at 40).
	for _, av := range s.GetActors() {
		if av.GetActor()[0] == 1 && (len(av.GetGaps()) != 20 || av.GetGaps()[0].GetStart() != 162) {
			t.Fatalf("x's gaps listed: %v, want the 20 newest, 162 to 200", av.GetGaps())
		}
	}
}

// TestSyncStateTurnsThroughGaps: over successive rounds the listed gaps
// turn through all of them, so that gaps that can never be filled (an
// actor's made-up versions) do not keep the others from being asked for.
func TestSyncStateTurnsThroughGaps(t *testing.T) {
	b := crdt.NewBookkeeping()
	var x, y crdt.ActorID
	x[0], y[0] = 1, 2
	for v := uint64(1); v <= 1<<40; v += 1 << 33 { // x: 127 gaps, high up
		b.MarkKnown(x, v)
	}
	b.MarkKnown(y, 5) // y: one gap, 1-4, older than all of x's
	listed := map[[2]uint64]bool{}
	for round := uint64(0); round < 7; round++ { // ceil(128/20) windows
		s := syncState(b, 20, round)
		if n := countGaps(s); n != 20 {
			t.Fatalf("round %d: %d gaps listed, want 20", round, n)
		}
		for _, av := range s.GetActors() {
			for _, g := range av.GetGaps() {
				listed[[2]uint64{uint64(av.GetActor()[0]), g.GetStart()}] = true
			}
		}
	}
	if !listed[[2]uint64{2, 1}] {
		t.Fatal("y's gap was never listed")
	}
	if len(listed) != 128 {
		t.Fatalf("%d of 128 gaps listed over the rounds", len(listed))
	}
}

func countGaps(s *wirev1.SyncState) int {
	n := 0
	for _, av := range s.GetActors() {
		n += len(av.GetGaps())
	}
	return n
}

// failingStore is a Store whose Apply fails the given versions.
type failingStore struct {
	Store
	failures map[uint64]error
}

func (f failingStore) Apply(ctx context.Context, css []*crdt.Changeset) (store.ApplyResult, error) {
	var res store.ApplyResult
	for _, cs := range css {
		if err := f.failures[cs.Version]; err != nil {
			res.Failed = append(res.Failed, &store.ApplyError{Actor: cs.Actor, Version: cs.Version, Err: err})
			continue
		}
		res.Applied++
	}
	return res, nil
}

// TestRefusedVersionsAreNotRetried: a version the store refuses for good
// (its own actor, above the maximum) is not kept for retry; one that may
// apply later (a column this node lacks yet) is.
func TestRefusedVersionsAreNotRetried(t *testing.T) {
	st := failingStore{failures: map[uint64]error{
		1: fmt.Errorf("%w: version 1 of this node's own actor", store.ErrRefused),
		2: errors.New(`table "t" has no column "new"`),
	}}
	n := &Node{st: st, log: slog.New(slog.NewTextHandler(io.Discard, nil)), failed: map[versionKey]*crdt.Changeset{}}
	var a crdt.ActorID
	a[0] = 9
	css := []*crdt.Changeset{{Actor: a, Version: 1}, {Actor: a, Version: 2}, {Actor: a, Version: 3}}
	failed := n.apply(context.Background(), css)
	if !failed[versionKey{a, 1}] || !failed[versionKey{a, 2}] || failed[versionKey{a, 3}] {
		t.Fatalf("failed %v: want versions 1 and 2 (neither relayed)", failed)
	}
	if _, ok := n.failed[versionKey{a, 1}]; ok || len(n.failed) != 1 || n.failed[versionKey{a, 2}] == nil {
		t.Fatalf("kept for retry: %v, want version 2 alone", n.failed)
	}
	if n.Stats.Refused.Load() != 1 || n.Stats.ApplyFailures.Load() != 2 {
		t.Fatalf("refused %d, apply failures %d: want 1 and 2", n.Stats.Refused.Load(), n.Stats.ApplyFailures.Load())
	}
}

// knowsNothing is a Store that holds no version.
type knowsNothing struct{ Store }

func (knowsNothing) Knows(crdt.ActorID, uint64) bool { return false }

// TestVersionDroppedAtAFullInboxIsNotSeen: a version dropped because the
// inbox is full is not taken as seen, so the next copy that arrives is
// kept (and relayed); a copy of one kept is a duplicate.
func TestVersionDroppedAtAFullInboxIsNotSeen(t *testing.T) {
	n := &Node{st: knowsNothing{}, log: slog.New(slog.NewTextHandler(io.Discard, nil)), seen: newSeenSet(),
		pending: map[versionKey]struct{}{}, recent: newRecentVersions(recentWindow), applyWake: make(chan struct{}, 1),
		inbox: make([]queued, inboxLimit)}
	var a crdt.ActorID
	a[0] = 7
	msg := &wirev1.Broadcast{Changesets: []*wirev1.Changeset{{Actor: a[:], Version: 1}}}
	ctx := context.Background()
	n.handleBroadcast(ctx, "p1", msg)
	if n.Stats.QueueDropped.Load() != 1 || len(n.inbox) != inboxLimit {
		t.Fatalf("dropped %d, inbox %d: want the version dropped", n.Stats.QueueDropped.Load(), len(n.inbox))
	}
	n.inbox = n.inbox[:0] // the apply loop took the inbox
	n.handleBroadcast(ctx, "p2", msg)
	if len(n.inbox) != 1 || n.inbox[0].from != "p2" {
		t.Fatalf("inbox %v: want the second copy kept", n.inbox)
	}
	n.handleBroadcast(ctx, "p3", msg)
	if len(n.inbox) != 1 || n.Stats.Duplicates.Load() != 1 {
		t.Fatalf("inbox %d, duplicates %d: want the third copy taken as a duplicate", len(n.inbox), n.Stats.Duplicates.Load())
	}
}
