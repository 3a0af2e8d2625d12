package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"

	"github.com/patina-db/patina/internal/crdt"
)

// TestAppliedBookkeepingSurvivesReopen: versions applied in batches, out
// of order, with gaps, repeats and a version that fails, leave the same
// known ranges on disk as in memory, so a restarted node knows exactly
// what it had.
func TestAppliedBookkeepingSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	src := regionalStore(t, dir, "src")
	defer src.Close()
	const n = 60
	for i := 0; i < n; i++ {
		exec(t, src, stmt(`INSERT INTO machines (id, app) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET app = excluded.app`, fmt.Sprint("m", i%25), fmt.Sprint("app", i)))
	}
	var css []*crdt.Changeset
	for v := uint64(1); v <= n; v++ {
		css = append(css, changesetOf(t, src, v))
	}
	// A version naming a table this node does not have fails alone.
	bad := *css[40]
	bad.Changes = append([]crdt.Change(nil), bad.Changes...)
	for i := range bad.Changes {
		bad.Changes[i].Table = "nope"
	}
	rnd := rand.New(rand.NewPCG(7, 8))
	order := rnd.Perm(n)
	dst := regionalStore(t, dir, "dst")
	ctx := context.Background()
	for start := 0; start < len(order); {
		end := min(len(order), start+1+rnd.IntN(9))
		var batch []*crdt.Changeset
		for _, i := range order[start:end] {
			if i == 40 {
				batch = append(batch, &bad)
				continue
			}
			if i%17 == 0 {
				continue // a gap
			}
			batch = append(batch, css[i])
		}
		// A repeat of a version of this batch or an earlier one is a no-op.
		if j := order[rnd.IntN(end)]; j != 40 && j%17 != 0 {
			batch = append(batch, css[j])
		}
		if _, err := dst.Apply(ctx, batch); err != nil {
			t.Fatal(err)
		}
		start = end
	}
	inMemory := dumpBook(dst)
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	dst = regionalStore(t, dir, "dst")
	defer dst.Close()
	if got := dumpBook(dst); got != inMemory {
		t.Fatalf("after reopen:\n%s\nbefore:\n%s", got, inMemory)
	}
	book := dst.Bookkeeping()
	for v := uint64(1); v <= n; v++ {
		i := int(v - 1)
		if want := i != 40 && i%17 != 0; book.Knows(src.Actor(), v) != want {
			t.Fatalf("version %d known %v, want %v", v, !want, want)
		}
	}
}

// TestActorsAreBounded: past maxActors, versions of a new actor are
// refused for good; actors already recorded, and the rest of the batch,
// apply.
func TestActorsAreBounded(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Config{Path: filepath.Join(t.TempDir(), "a.db"), maxActors: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	actor := func(i byte) crdt.ActorID {
		var a crdt.ActorID
		a[0], a[1] = 0xEE, i
		return a
	}
	res, err := s.Apply(ctx, []*crdt.Changeset{{Actor: actor(1), Version: 1}, {Actor: actor(2), Version: 1}, {Actor: actor(3), Version: 1}, {Actor: actor(1), Version: 2}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Failed) != 1 || !errors.Is(res.Failed[0], ErrRefused) || !strings.Contains(res.Failed[0].Error(), "actors") {
		t.Fatalf("applied %d, failed %v: want actor 3 refused for good", res.Applied, res.Failed)
	}
	if !s.Knows(actor(1), 2) || !s.Knows(actor(2), 1) || s.Knows(actor(3), 1) {
		t.Fatal("the recorded actors' versions did not all apply")
	}
}
