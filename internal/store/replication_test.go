package store

import (
	"context"
	"fmt"
	"os"
	"testing"

	"pgregory.net/rapid"

	"github.com/patina-db/patina/internal/crdt"
)

// propSchema has a two-column key and columns of every affinity, so that
// ties between INTEGER and REAL, TEXT and BLOB, and NULL all occur.
const propSchema = `
CREATE TABLE t (
	id TEXT NOT NULL,
	k  INTEGER NOT NULL,
	a,
	b  TEXT,
	c  INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY (id, k)
);
CREATE TABLE keyonly (id TEXT NOT NULL PRIMARY KEY);
`

var (
	propIDs  = []string{"r1", "r2", "r3"}
	propKs   = []int64{1, 2}
	propAs   = []any{nil, int64(1), float64(1), int64(2), "x", []byte("x")}
	propBs   = []any{nil, "p", "q"}
	propCs   = []any{int64(0), int64(1), int64(2)}
	propCols = []string{"a", "b", "c"}
)

func drawStatement(t *rapid.T) Statement {
	id := rapid.SampledFrom(propIDs).Draw(t, "id")
	k := rapid.SampledFrom(propKs).Draw(t, "k")
	val := func(col string) any {
		switch col {
		case "a":
			return rapid.SampledFrom(propAs).Draw(t, "a")
		case "b":
			return rapid.SampledFrom(propBs).Draw(t, "b")
		}
		return rapid.SampledFrom(propCs).Draw(t, "c")
	}
	switch rapid.IntRange(0, 5).Draw(t, "op") {
	case 0:
		return stmt(`INSERT INTO t (id, k, a, b, c) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT DO UPDATE SET a = excluded.a, b = excluded.b, c = excluded.c`, id, k, val("a"), val("b"), val("c"))
	case 1:
		col := rapid.SampledFrom(propCols).Draw(t, "col")
		return stmt(fmt.Sprintf(`UPDATE t SET %s = ? WHERE id = ? AND k = ?`, col), val(col), id, k)
	case 2:
		return stmt(`DELETE FROM t WHERE id = ? AND k = ?`, id, k)
	case 3:
		return stmt(`INSERT OR REPLACE INTO t (id, k, a, b) VALUES (?, ?, ?, ?)`, id, k, val("a"), val("b"))
	case 4:
		return stmt(`INSERT OR IGNORE INTO keyonly (id) VALUES (?)`, id)
	default:
		return stmt(`DELETE FROM keyonly WHERE id = ?`, id)
	}
}

type replicaSet struct {
	dir    string
	stores []*Store
	pool   []*crdt.Changeset
	// draw draws a statement of a write (default drawStatement).
	draw func(*rapid.T) Statement
}

func newReplicaSet(t *rapid.T, n int) *replicaSet {
	dir, err := os.MkdirTemp("", "patina-prop-*")
	if err != nil {
		t.Fatal(err)
	}
	rs := &replicaSet{dir: dir, draw: drawStatement}
	for i := 0; i < n; i++ {
		rs.stores = append(rs.stores, openTestStore(t, dir, fmt.Sprint("r", i), propSchema))
	}
	return rs
}

func (rs *replicaSet) close() {
	for _, s := range rs.stores {
		s.Close()
	}
	os.RemoveAll(rs.dir)
}

func (rs *replicaSet) write(t *rapid.T, i int) {
	s := rs.stores[i]
	n := rapid.IntRange(1, 3).Draw(t, "stmts")
	stmts := make([]Statement, n)
	for j := range stmts {
		stmts[j] = rs.draw(t)
	}
	res, err := s.Transact(context.Background(), stmts)
	if err != nil {
		// Constraint failures are possible (none here) but must leave no version.
		t.Fatalf("replica %d: %v", i, err)
	}
	if res.Version != 0 {
		cs, cleared, err := s.Changes(context.Background(), s.Actor(), res.Version)
		if err != nil || cleared {
			t.Fatalf("replica %d: changes of fresh version %d: cleared=%v err=%v", i, res.Version, cleared, err)
		}
		rs.pool = append(rs.pool, cs)
	}
}

func (rs *replicaSet) deliver(t *rapid.T, i int, css []*crdt.Changeset) {
	res, err := rs.stores[i].Apply(context.Background(), css)
	if err != nil {
		t.Fatalf("replica %d: apply: %v", i, err)
	}
	if len(res.Failed) > 0 {
		t.Fatalf("replica %d: apply: %v", i, res.Failed[0])
	}
}

// deliverSubset gives replica i a random subset of the pool: a partial,
// early delivery.
func (rs *replicaSet) deliverSubset(t *rapid.T, i int) {
	subset := rapid.SliceOfNDistinct(rapid.IntRange(0, len(rs.pool)-1), 1, len(rs.pool), rapid.ID[int]).Draw(t, "subset")
	var css []*crdt.Changeset
	for _, j := range subset {
		css = append(css, rs.pool[j])
	}
	rs.deliver(t, i, css)
}

// survivors is what sync would send from src: the surviving changes of
// every version src knows (and dst does not, when dst is not nil).
func survivors(t *rapid.T, src, dst *Store) []*crdt.Changeset {
	book := src.Bookkeeping()
	var out []*crdt.Changeset
	for _, a := range book.Actors() {
		for v := uint64(1); v <= book.Head(a); v++ {
			if !book.Knows(a, v) || (dst != nil && dst.Knows(a, v)) {
				continue
			}
			cs, _, err := src.Changes(context.Background(), a, v)
			if err != nil {
				t.Fatalf("changes %s/%d: %v", a, v, err)
			}
			out = append(out, cs)
		}
	}
	return out
}

// shuffled returns the pool in a random order with random duplicates.
func shuffled(t *rapid.T, pool []*crdt.Changeset, label string) []*crdt.Changeset {
	perm := rapid.Permutation(pool).Draw(t, label)
	dups := rapid.SliceOfN(rapid.SampledFrom(append([]*crdt.Changeset{nil}, pool...)), 0, 4).Draw(t, label+"-dups")
	for _, d := range dups {
		if d != nil {
			pos := rapid.IntRange(0, len(perm)).Draw(t, label+"-pos")
			perm = append(perm[:pos], append([]*crdt.Changeset{d}, perm[pos:]...)...)
		}
	}
	return perm
}

func (rs *replicaSet) assertConverged(t *rapid.T) {
	ref := rs.stores[0]
	for _, table := range []string{"t", "keyonly"} {
		want, wantClock := dumpTable(t, ref, table), dumpClock(t, ref, table)
		for i, s := range rs.stores[1:] {
			if got := dumpTable(t, s, table); got != want {
				t.Fatalf("table %s: replica %d differs from replica 0:\n%s\nvs\n%s", table, i+1, got, want)
			}
			if got := dumpClock(t, s, table); got != wantClock {
				t.Fatalf("clock of %s: replica %d differs from replica 0:\n%s\nvs\n%s", table, i+1, got, wantClock)
			}
		}
	}
	wantBook := dumpBook(ref)
	for i, s := range rs.stores[1:] {
		if got := dumpBook(s); got != wantBook {
			t.Fatalf("bookkeeping: replica %d differs:\n%s\nvs\n%s", i+1, got, wantBook)
		}
		if s.Gaps() != 0 {
			t.Fatalf("replica %d has %d gaps after full delivery", i+1, s.Gaps())
		}
	}
}

// TestConvergenceProperty: random writes on 3–5 replicas, changesets
// delivered in random orders, in random batches, with duplicates, some
// while the replicas are still writing: every replica ends with identical
// tables, clocks and bookkeeping.
func TestConvergenceProperty(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rs := newReplicaSet(t, rapid.IntRange(3, 5).Draw(t, "replicas"))
		defer rs.close()
		n := len(rs.stores)
		for step, steps := 0, rapid.IntRange(1, 30).Draw(t, "steps"); step < steps; step++ {
			i := rapid.IntRange(0, n-1).Draw(t, "replica")
			if len(rs.pool) == 0 || rapid.Bool().Draw(t, "write") {
				rs.write(t, i)
				continue
			}
			rs.deliverSubset(t, i)
		}
		for i := range rs.stores {
			all := shuffled(t, rs.pool, fmt.Sprint("order", i))
			for len(all) > 0 {
				k := rapid.IntRange(1, len(all)).Draw(t, "batch")
				rs.deliver(t, i, all[:k])
				all = all[k:]
			}
		}
		rs.assertConverged(t)

		// What sync would send: the surviving changes of every version,
		// read back from one replica, rebuild the same state on a new node.
		src := rs.stores[rapid.IntRange(0, n-1).Draw(t, "source")]
		fresh := openTestStore(t, rs.dir, "fresh", propSchema)
		rs.stores = append(rs.stores, fresh)
		rs.deliver(t, len(rs.stores)-1, shuffled(t, survivors(t, src, nil), "survivors"))
		rs.assertConverged(t)
	})
}

// TestExportApplyTwice: every version of a machines workload, exported
// from one store and applied to another in reverse order and then again in
// a shuffled order, gives identical tables and clocks.
func TestExportApplyTwice(t *testing.T) {
	ctx := context.Background()
	a, b := regionalPair(t)
	var versions []uint64
	write := func(q string, args ...any) {
		if v := exec(t, a, stmt(q, args...)).Version; v != 0 {
			versions = append(versions, v)
		}
	}
	for i := 0; i < 50; i++ {
		write(`INSERT INTO machines (id, app, state, port) VALUES (?, ?, 'started', ?)`, fmt.Sprint("m", i), fmt.Sprint("app", i%5), i)
		write(`INSERT INTO machine_checks (machine_id, name, status) VALUES (?, 'http', 'passing')`, fmt.Sprint("m", i))
	}
	for i := 0; i < 50; i += 3 {
		write(`UPDATE machines SET state = 'stopped', updated_at = ? WHERE id = ?`, i, fmt.Sprint("m", i))
		write(`DELETE FROM machine_checks WHERE machine_id = ?`, fmt.Sprint("m", i))
	}
	for i := 0; i < 50; i += 7 {
		write(`DELETE FROM machines WHERE id = ?`, fmt.Sprint("m", i))
		write(`INSERT INTO machines (id, app, state) VALUES (?, 'reborn', 'created')`, fmt.Sprint("m", i))
	}
	var css []*crdt.Changeset
	for _, v := range versions {
		cs, _, err := a.Changes(ctx, a.Actor(), v)
		if err != nil {
			t.Fatal(err)
		}
		css = append(css, cs)
	}
	reversed := make([]*crdt.Changeset, len(css))
	for i, cs := range css {
		reversed[len(css)-1-i] = cs
	}
	apply(t, b, reversed...)
	shuffledAgain := append([]*crdt.Changeset{}, css...)
	for i := range shuffledAgain {
		j := (i*7919 + 13) % len(shuffledAgain)
		shuffledAgain[i], shuffledAgain[j] = shuffledAgain[j], shuffledAgain[i]
	}
	if res := apply(t, b, shuffledAgain...); res.Applied != 0 || res.Known != len(css) {
		t.Fatalf("second application: %+v, want every version known", res)
	}
	for _, table := range []string{"machines", "machine_checks"} {
		if got, want := dumpTable(t, b, table), dumpTable(t, a, table); got != want || want == "" {
			t.Fatalf("%s differs:\n%s\nwant\n%s", table, got, want)
		}
		if got, want := dumpClock(t, b, table), dumpClock(t, a, table); got != want {
			t.Fatalf("clock of %s differs:\n%s\nwant\n%s", table, got, want)
		}
	}
	if dumpBook(a) != dumpBook(b) {
		t.Fatalf("bookkeeping differs:\n%s\n%s", dumpBook(a), dumpBook(b))
	}
}

func TestDigestTellsStatesApart(t *testing.T) {
	a, b := pair(t, propSchema)
	ctx := context.Background()
	da, _ := a.Digest(ctx)
	db, _ := b.Digest(ctx)
	if da != db {
		t.Fatal("empty stores differ")
	}
	exec(t, a, stmt(`INSERT INTO t (id, k, a) VALUES ('x', 1, 1)`))
	if d, _ := a.Digest(ctx); d == da {
		t.Fatal("digest ignores a write")
	}
	replicate(t, a, b)
	da, _ = a.Digest(ctx)
	db, _ = b.Digest(ctx)
	if da != db {
		t.Fatal("replicated stores differ")
	}
	exec(t, b, stmt(`UPDATE t SET a = 1.0`)) // same value, another storage class
	if d, _ := b.Digest(ctx); d == db {
		t.Fatal("digest ignores a storage class change")
	}
}

func TestChangesRangeMatchesChanges(t *testing.T) {
	a, _ := pair(t, propSchema)
	ctx := context.Background()
	for i := 0; i < 30; i++ {
		exec(t, a, stmt(`INSERT INTO t (id, k, a) VALUES (?, ?, ?) ON CONFLICT DO UPDATE SET a = excluded.a`, fmt.Sprint("r", i%7), int64(i%2), int64(i)))
		if i%5 == 0 {
			exec(t, a, stmt(`DELETE FROM t WHERE id = ?`, fmt.Sprint("r", i%7)))
		}
	}
	got, err := a.ChangesRange(ctx, a.Actor(), 1, a.Head()+5)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(got)) != a.Head() {
		t.Fatalf("%d versions, want %d", len(got), a.Head())
	}
	for _, vc := range got {
		cs, cleared, err := a.Changes(ctx, a.Actor(), vc.Changeset.Version)
		if err != nil {
			t.Fatal(err)
		}
		if cleared != vc.Cleared || fmt.Sprint(cs.Changes) != fmt.Sprint(vc.Changeset.Changes) {
			t.Fatalf("version %d: range gives %v (cleared %v), Changes %v (cleared %v)", cs.Version, vc.Changeset.Changes, vc.Cleared, cs.Changes, cleared)
		}
	}
}

// drawStatementRekey is drawStatement, or now and then a key change that
// may replace another row.
func drawStatementRekey(t *rapid.T) Statement {
	if rapid.IntRange(0, 4).Draw(t, "rk") == 0 {
		id := rapid.SampledFrom(propIDs).Draw(t, "id")
		id2 := rapid.SampledFrom(propIDs).Draw(t, "id2")
		k := rapid.SampledFrom(propKs).Draw(t, "k")
		return stmt(`UPDATE OR REPLACE t SET id = ? WHERE id = ? AND k = ?`, id2, id, k)
	}
	return drawStatement(t)
}

// TestSurvivorsConvergeOnPartialReplicas: what sync sends (each version
// as the store holds it now, its overwritten cells gone) makes replicas
// that already hold some of the versions converge.
func TestSurvivorsConvergeOnPartialReplicas(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rs := newReplicaSet(t, 3)
		defer rs.close()
		rs.draw = drawStatementRekey
		n := len(rs.stores)
		for step, steps := 0, rapid.IntRange(1, 30).Draw(t, "steps"); step < steps; step++ {
			i := rapid.IntRange(0, n-1).Draw(t, "replica")
			if len(rs.pool) == 0 || rapid.Bool().Draw(t, "write") {
				rs.write(t, i)
				continue
			}
			rs.deliverSubset(t, i)
		}
		// Replica 0 gets everything; 1 and 2 get the survivors read from 0
		// (as sync sends them) on top of whatever they had.
		rs.deliver(t, 0, rs.pool)
		all := survivors(t, rs.stores[0], nil)
		for i := 1; i < n; i++ {
			rs.deliver(t, i, shuffled(t, all, fmt.Sprint("surv", i)))
		}
		rs.assertConverged(t)
	})
}

// TestConvergenceWithSyncInterleaved: writes (key changes among them),
// partial broadcasts and pairwise syncs interleaved at random, then
// anti-entropy rounds: every replica converges.
func TestConvergenceWithSyncInterleaved(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		rs := newReplicaSet(t, 4)
		defer rs.close()
		rs.draw = drawStatementRekey
		n := len(rs.stores)
		for step, steps := 0, rapid.IntRange(1, 40).Draw(t, "steps"); step < steps; step++ {
			i := rapid.IntRange(0, n-1).Draw(t, "replica")
			switch op := rapid.IntRange(0, 2).Draw(t, "op"); {
			case len(rs.pool) == 0 || op == 0:
				rs.write(t, i)
			case op == 1:
				rs.deliverSubset(t, i)
			default:
				j := rapid.IntRange(0, n-1).Draw(t, "src")
				if css := survivors(t, rs.stores[j], rs.stores[i]); j != i && len(css) > 0 {
					rs.deliver(t, i, shuffled(t, css, "sync"))
				}
			}
		}
		// Anti-entropy rounds until everyone knows everything.
		for range 3 {
			for i := range rs.stores {
				for j := range rs.stores {
					if css := survivors(t, rs.stores[j], rs.stores[i]); i != j && len(css) > 0 {
						rs.deliver(t, i, css)
					}
				}
			}
		}
		rs.assertConverged(t)
	})
}
