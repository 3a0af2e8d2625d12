package store

import (
	"context"
	"testing"

	"github.com/patina-db/patina/internal/crdt"
)

// The cr-sqlite cases, on real stores. Each case writes on two nodes,
// moves changesets between them in a chosen (often adversarial) order and
// checks the outcome on every node.

const mergeSchema = `CREATE TABLE t (id TEXT NOT NULL PRIMARY KEY, a TEXT, b INTEGER NOT NULL DEFAULT 0);`

type node struct {
	t  *testing.T
	s  *Store
	cs []*crdt.Changeset // this node's versions, in order
}

func newNodes(t *testing.T, n int) []*node {
	dir := t.TempDir()
	var out []*node
	for i := 0; i < n; i++ {
		s := openTestStore(t, dir, string(rune('a'+i)), mergeSchema)
		t.Cleanup(func() { s.Close() })
		out = append(out, &node{t: t, s: s})
	}
	return out
}

// write runs statements and returns the version's changeset as written.
func (n *node) write(q string, args ...any) *crdt.Changeset {
	n.t.Helper()
	res := exec(n.t, n.s, stmt(q, args...))
	if res.Version == 0 {
		n.t.Fatalf("%q changed nothing", q)
	}
	cs := changesetOf(n.t, n.s, res.Version)
	n.cs = append(n.cs, cs)
	return cs
}

func (n *node) row(id string) string {
	n.t.Helper()
	return dumpQuery(n.t, n.s, "SELECT coalesce((SELECT quote(a) || ' ' || quote(b) FROM t WHERE id = '"+id+"'), 'absent')")
}

func (n *node) cl(id string) int64 {
	n.t.Helper()
	var cl int64
	if err := queryRow(context.Background(), n.s.writer, `SELECT "__patina_cl" FROM "__patina_clock_t" WHERE id = ?`, []any{id}, &cl); err != nil {
		n.t.Fatalf("cl of %s: %v", id, err)
	}
	return cl
}

func TestMergeOutOfOrderDeleteReinsertUpdate(t *testing.T) {
	ns := newNodes(t, 2)
	a, b := ns[0], ns[1]
	ins := a.write(`INSERT INTO t (id, a, b) VALUES ('r', 'one', 1)`)
	del := a.write(`DELETE FROM t WHERE id = 'r'`)
	re := a.write(`INSERT INTO t (id, a, b) VALUES ('r', 'two', 2)`)
	upd := a.write(`UPDATE t SET b = 3 WHERE id = 'r'`)
	// b receives them newest first, and the insert twice.
	apply(t, b.s, upd, re, del, ins, ins)
	if got, want := b.row("r"), a.row("r"); got != want || want != "'two' 3\n" {
		t.Fatalf("b has %q, a has %q, want 'two' 3", got, want)
	}
	if b.cl("r") != 3 || a.cl("r") != 3 {
		t.Fatalf("causal lengths a=%d b=%d, want 3", a.cl("r"), b.cl("r"))
	}
	if dumpClock(t, a.s, "t") != dumpClock(t, b.s, "t") {
		t.Fatalf("clocks differ:\n%s\n%s", dumpClock(t, a.s, "t"), dumpClock(t, b.s, "t"))
	}
}

func TestMergeLargerCausalLengthWins(t *testing.T) {
	ns := newNodes(t, 2)
	a, b := ns[0], ns[1]
	ins := a.write(`INSERT INTO t (id, a, b) VALUES ('r', 'x', 1)`)
	apply(t, b.s, ins)
	// a deletes and resurrects (cl 3); b updates many times at cl 1,
	// raising its col_versions far above a's.
	a.write(`DELETE FROM t WHERE id = 'r'`)
	a.write(`INSERT INTO t (id, a, b) VALUES ('r', 'alive', 0)`)
	for i := 2; i < 20; i++ {
		b.write(`UPDATE t SET a = ?, b = ? WHERE id = 'r'`, "b", i)
	}
	apply(t, b.s, a.cs...)
	apply(t, a.s, b.cs...)
	for _, n := range ns {
		if got := n.row("r"); got != "'alive' 0\n" {
			t.Fatalf("row is %q, want the larger causal length's 'alive' 0", got)
		}
	}
}

func TestMergeSmallerDeleteNeverDeletesLargerLife(t *testing.T) {
	ns := newNodes(t, 2)
	a, b := ns[0], ns[1]
	ins := a.write(`INSERT INTO t (id, a) VALUES ('r', 'x')`)
	apply(t, b.s, ins)
	bdel := b.write(`DELETE FROM t WHERE id = 'r'`) // cl 2
	a.write(`DELETE FROM t WHERE id = 'r'`)         // cl 2
	a.write(`INSERT INTO t (id, a) VALUES ('r', 'y')`)
	a.write(`DELETE FROM t WHERE id = 'r'`)
	a.write(`INSERT INTO t (id, a) VALUES ('r', 'z')`) // cl 5
	apply(t, a.s, bdel)
	if got := a.row("r"); got != "'z' 0\n" {
		t.Fatalf("a: a stale delete (cl 2) removed a cl-5 row: %q", got)
	}
	apply(t, b.s, a.cs...)
	if got := b.row("r"); got != "'z' 0\n" {
		t.Fatalf("b: %q, want 'z' 0", got)
	}
}

func TestMergeEqualDeletesAreNoOps(t *testing.T) {
	ns := newNodes(t, 3)
	a, b, c := ns[0], ns[1], ns[2]
	ins := a.write(`INSERT INTO t (id, a) VALUES ('r', 'x')`)
	apply(t, b.s, ins)
	apply(t, c.s, ins)
	adel := a.write(`DELETE FROM t WHERE id = 'r'`)
	bdel := b.write(`DELETE FROM t WHERE id = 'r'`)
	apply(t, a.s, bdel)
	apply(t, b.s, adel)
	apply(t, c.s, bdel, adel)
	for i, n := range ns {
		if got := n.row("r"); got != "absent\n" {
			t.Fatalf("node %d: %q, want absent", i, got)
		}
		if n.cl("r") != 2 {
			t.Fatalf("node %d: cl %d, want 2", i, n.cl("r"))
		}
	}
	// The sentinel is credited the same way everywhere.
	if dumpClock(t, a.s, "t") != dumpClock(t, b.s, "t") || dumpClock(t, b.s, "t") != dumpClock(t, c.s, "t") {
		t.Fatal("clocks differ after equal deletes")
	}
}

func TestMergeResurrection(t *testing.T) {
	t.Run("via sentinel", func(t *testing.T) {
		ns := newNodes(t, 2)
		a, b := ns[0], ns[1]
		a.write(`INSERT INTO t (id) VALUES ('r')`)
		a.write(`DELETE FROM t WHERE id = 'r'`)
		apply(t, b.s, a.cs...)
		re := a.write(`INSERT INTO t (id) VALUES ('r')`) // only defaults: the sentinel carries it
		apply(t, b.s, re)
		if got := b.row("r"); got != "NULL 0\n" {
			t.Fatalf("b: %q, want the resurrected row with defaults", got)
		}
	})
	t.Run("via a column of a later life", func(t *testing.T) {
		ns := newNodes(t, 2)
		a, b := ns[0], ns[1]
		a.write(`INSERT INTO t (id, a, b) VALUES ('r', 'old', 7)`)
		a.write(`DELETE FROM t WHERE id = 'r'`)
		apply(t, b.s, a.cs...)
		re := a.write(`INSERT INTO t (id, a, b) VALUES ('r', 'new', 1)`)
		upd := a.write(`UPDATE t SET a = 'newer' WHERE id = 'r'`)
		// b sees only the later update: a single cell of life 3 brings the
		// row back, the other columns at their defaults until re arrives.
		apply(t, b.s, upd)
		if got := b.row("r"); got != "'newer' 0\n" {
			t.Fatalf("b after the cell alone: %q, want 'newer' 0", got)
		}
		apply(t, b.s, re)
		if got := b.row("r"); got != "'newer' 1\n" {
			t.Fatalf("b after both: %q, want 'newer' 1", got)
		}
		if dumpClock(t, a.s, "t") != dumpClock(t, b.s, "t") {
			t.Fatalf("clocks differ:\n%s\n%s", dumpClock(t, a.s, "t"), dumpClock(t, b.s, "t"))
		}
	})
}

func TestMergeTiesByValueThenActor(t *testing.T) {
	ns := newNodes(t, 2)
	a, b := ns[0], ns[1]
	ins := a.write(`INSERT INTO t (id, a, b) VALUES ('r', 'x', 0)`)
	apply(t, b.s, ins)
	// Same col_version on both sides: the greater value wins.
	a.write(`UPDATE t SET a = 'apple' WHERE id = 'r'`)
	b.write(`UPDATE t SET a = 'banana' WHERE id = 'r'`)
	// Same col_version and value: the greater actor id wins the clock.
	a.write(`UPDATE t SET b = 5 WHERE id = 'r'`)
	b.write(`UPDATE t SET b = 5 WHERE id = 'r'`)
	apply(t, a.s, b.cs...)
	apply(t, b.s, a.cs[1:]...)
	for i, n := range ns {
		if got := n.row("r"); got != "'banana' 5\n" {
			t.Fatalf("node %d: %q, want 'banana' 5", i, got)
		}
	}
	if dumpClock(t, a.s, "t") != dumpClock(t, b.s, "t") {
		t.Fatalf("clocks differ:\n%s\n%s", dumpClock(t, a.s, "t"), dumpClock(t, b.s, "t"))
	}
	winner := a.s.Actor()
	if b.s.Actor().Compare(winner) > 0 {
		winner = b.s.Actor()
	}
	var site int64
	if err := queryRow(context.Background(), a.s.writer, `SELECT "__patina_sd_b" >> 43 FROM "__patina_clock_t" WHERE id = 'r'`, nil, &site); err != nil {
		t.Fatal(err)
	}
	if a.s.siteIDs[site] != winner {
		t.Fatalf("b's cell credited to %s, want the greater actor %s", a.s.siteIDs[site], winner)
	}
}
