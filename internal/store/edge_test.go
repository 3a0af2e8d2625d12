package store

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/patina-db/patina/internal/crdt"
)

// replicate applies every version a has and b lacks.
func replicate(t *testing.T, from, to *Store) {
	t.Helper()
	var css []*crdt.Changeset
	for v := uint64(1); v <= from.Head(); v++ {
		cs, _, err := from.Changes(context.Background(), from.Actor(), v)
		if err != nil {
			t.Fatal(err)
		}
		css = append(css, cs)
	}
	apply(t, to, css...)
}

func pair(t *testing.T, schema string) (*Store, *Store) {
	dir := t.TempDir()
	a, b := openTestStore(t, dir, "a", schema), openTestStore(t, dir, "b", schema)
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

func TestCaseOnlyChangeInNocaseColumnReplicates(t *testing.T) {
	a, b := pair(t, `CREATE TABLE t (id TEXT NOT NULL PRIMARY KEY, v TEXT COLLATE NOCASE)`)
	exec(t, a, stmt(`INSERT INTO t VALUES ('k', 'abc')`))
	if v := exec(t, a, stmt(`UPDATE t SET v = 'ABC'`)).Version; v != 2 {
		t.Fatalf("case-only change: version %d, want 2", v)
	}
	replicate(t, a, b)
	if dumpTable(t, a, "t") != dumpTable(t, b, "t") {
		t.Fatalf("diverged:\n%s\n%s", dumpTable(t, a, "t"), dumpTable(t, b, "t"))
	}
}

func TestKeyColumnsRefused(t *testing.T) {
	for schema, want := range map[string]string{
		`CREATE TABLE t (id TEXT COLLATE NOCASE NOT NULL PRIMARY KEY)`:                               "BINARY collation",
		`CREATE TABLE t (id REAL NOT NULL PRIMARY KEY)`:                                              "INTEGER, TEXT or BLOB",
		`CREATE TABLE t (id NUMERIC NOT NULL PRIMARY KEY)`:                                           "INTEGER, TEXT or BLOB",
		`CREATE TABLE t (id TEXT NOT NULL PRIMARY KEY, v INT CHECK (v > 0))`:                         "CHECK",
		`CREATE TABLE t (id "TEXT); CREATE TABLE pwn (x INT PRIMARY KEY); --" NOT NULL PRIMARY KEY)`: "declared type",
	} {
		s, err := Open(context.Background(), Config{Path: t.TempDir() + "/x.db"})
		if err != nil {
			t.Fatal(err)
		}
		err = s.ApplySchemaSQL(context.Background(), schema)
		var se *SchemaError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want a SchemaError about %q", schema, err, want)
		}
		if len(s.Schema().Tables) != 0 {
			t.Errorf("%s: tables created", schema)
		}
		s.Close()
	}
}

func TestKeyStorageClassEnforced(t *testing.T) {
	a, _ := pair(t, `CREATE TABLE t (id BLOB NOT NULL, k INTEGER NOT NULL, v, PRIMARY KEY (id, k))`)
	for _, q := range []string{
		`INSERT INTO t (id, k) VALUES (1.5, 1)`,       // a REAL in a BLOB key
		`INSERT INTO t (id, k) VALUES (x'01', 'abc')`, // TEXT in an INTEGER key
	} {
		_, err := a.Transact(context.Background(), []Statement{stmt(q)})
		if err == nil || !strings.Contains(err.Error(), "patina: key column") {
			t.Errorf("%s: %v, want the key-class error", q, err)
		}
	}
	if v := exec(t, a, stmt(`INSERT INTO t (id, k) VALUES (x'01', 1), ('txt', 2), (7, 3)`)).Version; v != 1 {
		t.Fatalf("valid keys: version %d", v)
	}
}

// TestIntegerKeysThatAreNotRowids: a single INTEGER key is the rowid,
// and always an integer, only in a table with rowids and not declared
// INTEGER PRIMARY KEY DESC. In the other two it takes any value, so the
// key's class is checked as for any other key: a text key is refused
// locally instead of committing a version no peer could apply.
func TestIntegerKeysThatAreNotRowids(t *testing.T) {
	for _, schema := range []string{
		`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT) WITHOUT ROWID`,
		`CREATE TABLE t (id INTEGER NOT NULL PRIMARY KEY DESC, v TEXT)`,
	} {
		a, b := pair(t, schema)
		if a.Schema().Tables["t"].RowidAlias {
			t.Errorf("%s: taken for a rowid alias", schema)
		}
		_, err := a.Transact(context.Background(), []Statement{stmt(`INSERT INTO t VALUES ('abc', 'x')`)})
		if err == nil || !strings.Contains(err.Error(), "patina: key column") {
			t.Errorf("%s: a text key: %v, want the key-class error", schema, err)
		}
		if a.Head() != 0 {
			t.Errorf("%s: head %d after the refused insert", schema, a.Head())
		}
		exec(t, a, stmt(`INSERT INTO t VALUES (7, 'x')`))
		replicate(t, a, b)
		if dumpTable(t, b, "t") != dumpTable(t, a, "t") {
			t.Errorf("%s: diverged", schema)
		}
	}
	// The DESC exception declared without NOT NULL, as databases made
	// before it was told apart may hold it: accepted, and a NULL key is
	// refused by the key check.
	dir := t.TempDir()
	s, err := Open(context.Background(), Config{Path: filepath.Join(dir, "c.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.ApplySchemaSQL(context.Background(), `CREATE TABLE t (id INTEGER PRIMARY KEY DESC, v TEXT); CREATE TABLE r (id INTEGER PRIMARY KEY, v TEXT)`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Transact(context.Background(), []Statement{stmt(`INSERT INTO t VALUES (NULL, 'x')`)}); err == nil || !strings.Contains(err.Error(), "patina: key column") {
		t.Errorf("a NULL key in INTEGER PRIMARY KEY DESC: %v, want the key-class error", err)
	}
	if !s.Schema().Tables["r"].RowidAlias || s.Schema().Tables["t"].RowidAlias {
		t.Error("rowid aliases told apart wrongly")
	}
}

func TestKeyColumnsNamedLikeIndexColumns(t *testing.T) {
	a, b := pair(t, `CREATE TABLE t (site TEXT NOT NULL, version INTEGER NOT NULL, v TEXT, PRIMARY KEY (site, version))`)
	exec(t, a, stmt(`INSERT INTO t VALUES ('ams', 1, 'x')`))
	replicate(t, a, b)
	if dumpTable(t, b, "t") != dumpTable(t, a, "t") {
		t.Fatal("diverged")
	}
}

// TestKeyChangesAroundTheTriggers: changing an INTEGER PRIMARY KEY through
// rowid, and REPLACE deleting a row through a rowid conflict, replicate.
func TestKeyChangesAroundTheTriggers(t *testing.T) {
	t.Run("rowid alias", func(t *testing.T) {
		a, b := pair(t, `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`)
		exec(t, a, stmt(`INSERT INTO t VALUES (1, 'x')`))
		if v := exec(t, a, stmt(`UPDATE t SET rowid = 5 WHERE id = 1`)).Version; v != 2 {
			t.Fatalf("rowid update: version %d, want 2", v)
		}
		replicate(t, a, b)
		if got := dumpTable(t, b, "t"); got != "integer:5 text:'x'\n" || got != dumpTable(t, a, "t") {
			t.Fatalf("b: %q, a: %q", got, dumpTable(t, a, "t"))
		}
	})
	t.Run("replace through rowid", func(t *testing.T) {
		a, b := pair(t, `CREATE TABLE t (id TEXT NOT NULL PRIMARY KEY, v TEXT)`)
		exec(t, a, stmt(`INSERT INTO t (rowid, id, v) VALUES (1, 'a', 'x')`))
		exec(t, a, stmt(`INSERT OR REPLACE INTO t (rowid, id, v) VALUES (1, 'b', 'y')`))
		replicate(t, a, b)
		if got, want := dumpTable(t, b, "t"), dumpTable(t, a, "t"); got != want || want != "text:'b' text:'y'\n" {
			t.Fatalf("b: %q, a: %q", got, want)
		}
		if dumpClock(t, a, "t") != dumpClock(t, b, "t") {
			t.Fatal("clocks diverged")
		}
	})
}

func TestOwnActorVersionsRefused(t *testing.T) {
	a, _ := pair(t, `CREATE TABLE t (id TEXT NOT NULL PRIMARY KEY)`)
	exec(t, a, stmt(`INSERT INTO t VALUES ('k')`))
	forged := &crdt.Changeset{Actor: a.Actor(), Version: 2, Changes: []crdt.Change{{Table: "t", PK: crdt.PackPK([]crdt.Value{crdt.TextValue("z")}), CL: 1}}}
	var other crdt.ActorID
	other[0] = 7
	tooHigh := &crdt.Changeset{Actor: other, Version: MaxVersion + 1, Changes: forged.Changes}
	res, err := a.Apply(context.Background(), []*crdt.Changeset{forged, tooHigh})
	if err != nil || len(res.Failed) != 2 || !strings.Contains(res.Failed[0].Error(), "own actor") || !strings.Contains(res.Failed[1].Error(), "above the maximum") {
		t.Fatalf("%+v %v", res, err)
	}
	for _, e := range res.Failed {
		if !errors.Is(e, ErrRefused) {
			t.Errorf("%v: not marked refused for good", e)
		}
	}
	if v := exec(t, a, stmt(`INSERT INTO t VALUES ('l')`)).Version; v != 2 {
		t.Fatalf("next local version %d, want 2", v)
	}
}

// TestCountersAtTheBound: a peer may send counters up to
// crdt.MaxCounter and no further. A local write over a cell a peer set
// to the bound would make a version no peer accepts (at 2⁶³−1 it
// overflowed into a REAL and lost the write's changes), so it is
// refused, and the replicas stay equal.
func TestCountersAtTheBound(t *testing.T) {
	a, b := regionalPair(t)
	exec(t, a, stmt(`INSERT INTO machines (id, app) VALUES ('m1', 'web')`))
	cs := changesetOf(t, a, 1)
	over := *cs
	over.Changes = append([]crdt.Change(nil), cs.Changes...)
	for i := range cs.Changes {
		if cs.Changes[i].Column == "state" {
			cs.Changes[i].ColVersion = crdt.MaxCounter
			over.Changes[i].ColVersion = crdt.MaxCounter + 1
		}
	}
	if res, err := b.Apply(context.Background(), []*crdt.Changeset{&over}); err != nil || len(res.Failed) != 1 || !errors.Is(res.Failed[0], ErrRefused) {
		t.Fatalf("a col_version above the bound: %+v, %v; want it refused", res, err)
	}
	if res := apply(t, b, cs); res.Applied != 1 {
		t.Fatalf("a col_version at the bound: %+v", res)
	}
	// As in an agent, every commit is read back for broadcast.
	b.SetHooks(Hooks{Committed: func(*crdt.Changeset) {}})
	before := dumpTable(t, b, "machines")
	_, err := b.Transact(context.Background(), []Statement{stmt(`UPDATE machines SET state = 'started' WHERE id = 'm1'`)})
	if err == nil || !strings.Contains(err.Error(), "cannot replicate") {
		t.Fatalf("a write past the bound: %v, want it refused", err)
	}
	// Other cells of the row, and other rows, still take writes.
	exec(t, b, stmt(`UPDATE machines SET image = 'v2' WHERE id = 'm1'`))
	apply(t, a, changesetOf(t, b, 1))
	if da, db := dumpTable(t, a, "machines"), dumpTable(t, b, "machines"); da != db || db == before {
		t.Fatalf("a:\n%s\nb:\n%s", da, db)
	}
}

// TestStrictAnyColumnReplicates: a STRICT table's ANY column keeps values
// as given, with no affinity: a text '42' replicates as text, and 1
// becoming 1.0 is a change.
func TestStrictAnyColumnReplicates(t *testing.T) {
	a, b := pair(t, `CREATE TABLE t (id INTEGER PRIMARY KEY, v ANY) STRICT`)
	exec(t, a, stmt(`INSERT INTO t VALUES (1, '42'), (2, 1)`))
	if v := exec(t, a, stmt(`UPDATE t SET v = 1.0 WHERE id = 2`)).Version; v != 2 {
		t.Errorf("integer 1 -> real 1.0 in an ANY column: version %d, want 2", v)
	}
	replicate(t, a, b)
	q := `SELECT id || ' ' || typeof(v) || ' ' || v FROM t ORDER BY id`
	if da, db := dumpQuery(t, a, q), dumpQuery(t, b, q); da != db || !strings.Contains(da, "text") || !strings.Contains(da, "real") {
		t.Fatalf("a:\n%s\nb:\n%s", da, db)
	}
}
