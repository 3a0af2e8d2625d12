package store

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
)

// randomRows upserts n machine rows with random keys in one transaction,
// so that they land all over the table's B-trees.
func randomRows(ctx context.Context, s *Store, rnd *rand.Rand, n int) error {
	_, err := s.Write(ctx, func(tx Tx) error {
		st, err := tx.PrepareContext(ctx, benchUpsert)
		if err != nil {
			return err
		}
		defer st.Close()
		for range n {
			i := rnd.IntN(1 << 30)
			args := machineRow(i, 0)
			args[0] = fmt.Sprintf("r%016x", rnd.Uint64())
			if _, err := st.ExecContext(ctx, args...); err != nil {
				return err
			}
		}
		return nil
	})
	return err
}

func integrityOK(t *testing.T, s *Store) {
	t.Helper()
	if got := dumpQuery(t, s, `PRAGMA integrity_check`); got != "ok\n" {
		t.Fatalf("integrity check: %q", got)
	}
}

// Small transactions of random keys split B-tree pages in the middle,
// where SQLite swaps page numbers through the parked one: the layer sees
// those moves, and both the writer's database and a replica that applies
// its versions stay whole and equal.
func TestPageCacheParksSwappedPagesLow(t *testing.T) {
	if !pageCacheInstalled {
		t.Fatal("the page cache layer is not installed: SQLite started before the store package")
	}
	ctx := context.Background()
	a, b := regionalPair(t)
	rnd := rand.New(rand.NewPCG(1, 2))
	before := pageCacheSpareMoves()
	const txs, rows = 600, 5
	for range txs {
		if err := randomRows(ctx, a, rnd, rows); err != nil {
			t.Fatal(err)
		}
	}
	if pageCacheSpareMoves() == before {
		t.Fatalf("%d transactions of random keys moved no page through the parked number", txs)
	}
	for v := uint64(1); v <= a.Head(); v++ {
		apply(t, b, changesetOf(t, a, v))
	}
	integrityOK(t, a)
	integrityOK(t, b)
	if got := dumpQuery(t, a, `SELECT count(*) FROM machines`); got != fmt.Sprintf("%d\n", txs*rows) {
		t.Fatalf("rows: %q, want %d", got, txs*rows)
	}
	if da, db := dumpTable(t, a, "machines"), dumpTable(t, b, "machines"); da != db {
		t.Fatal("the replica's table differs from the writer's")
	}
	if ca, cb := dumpClock(t, a, "machines"), dumpClock(t, b, "machines"); ca != cb {
		t.Fatal("the replica's clock differs from the writer's")
	}
}

// BenchmarkSmallCommitsWarmCache commits groups of five random machine
// rows into a table of 200,000 whose pages are all in the cache: what an
// agent of a large region does all day.
func BenchmarkSmallCommitsWarmCache(b *testing.B) {
	ctx := context.Background()
	s := regionalStore(b, b.TempDir(), "warm")
	defer s.Close()
	rnd := rand.New(rand.NewPCG(3, 4))
	for range 200 {
		if err := randomRows(ctx, s, rnd, 1000); err != nil {
			b.Fatal(err)
		}
	}
	// Read every page of the table and its indexes into the cache.
	for _, q := range []string{
		`SELECT count(*), sum(length(app)) FROM machines`,
		`SELECT count(*) FROM machines INDEXED BY machines_app_state WHERE app > ''`,
		`SELECT count(*) FROM __patina_clock_machines`,
		`SELECT count(*) FROM __patina_vx_machines`,
	} {
		if _, err := s.Write(ctx, func(tx Tx) error { _, err := tx.ExecContext(ctx, q); return err }); err != nil {
			b.Fatal(err)
		}
	}
	for b.Loop() { // one commit an op
		if err := randomRows(ctx, s, rnd, 5); err != nil {
			b.Fatal(err)
		}
	}
}

// Both process-wide settings are made before SQLite starts, or not at
// all: something that starts SQLite earlier would undo them silently.
func TestSQLiteConfiguredBeforeStart(t *testing.T) {
	if !pageCacheInstalled {
		t.Error("page cache layer not installed")
	}
	if !memStatusOff {
		t.Error("memory statistics still on")
	}
}
