package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/patina-db/patina/internal/crdt"
)

func TestSchemaRulesRefuse(t *testing.T) {
	cases := map[string]struct{ schema, wantTable, wantText string }{
		"no primary key":       {`CREATE TABLE t (a TEXT)`, "t", "PRIMARY KEY"},
		"unique":               {`CREATE TABLE t (id TEXT NOT NULL PRIMARY KEY, a TEXT UNIQUE)`, "t", "UNIQUE"},
		"unique index":         {`CREATE TABLE t (id TEXT NOT NULL PRIMARY KEY, a TEXT); CREATE UNIQUE INDEX t_a ON t (a)`, "t", "UNIQUE"},
		"foreign key":          {`CREATE TABLE p (id TEXT NOT NULL PRIMARY KEY); CREATE TABLE t (id TEXT NOT NULL PRIMARY KEY, p TEXT REFERENCES p (id))`, "t", "FOREIGN KEY"},
		"not null, no default": {`CREATE TABLE t (id TEXT NOT NULL PRIMARY KEY, a TEXT NOT NULL)`, "t", "DEFAULT"},
		"nullable key":         {`CREATE TABLE t (id TEXT PRIMARY KEY)`, "t", "NOT NULL"},
		"view":                 {`CREATE TABLE t (id TEXT NOT NULL PRIMARY KEY); CREATE VIEW v AS SELECT * FROM t`, "v", "views"},
		"datetime":             {`CREATE TABLE t (id TEXT NOT NULL PRIMARY KEY, at DATETIME)`, "t", "DATETIME"},
		"reserved":             {`CREATE TABLE __patina_x (id TEXT NOT NULL PRIMARY KEY)`, "", "reserved"},
		"bad sql":              {`CREATE TABLE t (`, "", "incomplete input"},
		"check behind comment": {"CREATE TABLE t (id TEXT NOT NULL PRIMARY KEY, a INT, b INT, CHECK /* a below b */ (a < b))", "t", "CHECK"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			s, err := Open(context.Background(), Config{Path: t.TempDir() + "/x.db"})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			err = s.ApplySchemaSQL(context.Background(), c.schema)
			var se *SchemaError
			if !errors.As(err, &se) {
				t.Fatalf("want a SchemaError, got %v", err)
			}
			if se.Table != c.wantTable || !strings.Contains(err.Error(), c.wantText) {
				t.Fatalf("error %q: want table %q and %q in the message", err, c.wantTable, c.wantText)
			}
			if len(s.Schema().Tables) != 0 {
				t.Fatal("a refused schema left tables behind")
			}
		})
	}
}

func TestMigrationsRefuseDestructiveChanges(t *testing.T) {
	s := regionalStore(t, t.TempDir(), "a")
	defer s.Close()
	cases := map[string]struct {
		stmts            []string
		table, col, text string
	}{
		"drop column":   {[]string{`ALTER TABLE machines DROP COLUMN image`}, "machines", "image", "dropping"},
		"rename column": {[]string{`ALTER TABLE machines RENAME COLUMN image TO img`}, "machines", "image", "renaming"},
		"type change":   {[]string{`CREATE TABLE machines (id TEXT NOT NULL PRIMARY KEY, app TEXT NOT NULL DEFAULT '', region TEXT NOT NULL DEFAULT '', host TEXT NOT NULL DEFAULT '', address TEXT NOT NULL DEFAULT '', port TEXT NOT NULL DEFAULT '', state TEXT NOT NULL DEFAULT 'created', image TEXT NOT NULL DEFAULT '', updated_at INTEGER NOT NULL DEFAULT 0)`}, "machines", "port", "type"},
		"pk change":     {[]string{`CREATE TABLE machine_checks (machine_id TEXT NOT NULL, name TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'unknown', output TEXT NOT NULL DEFAULT '', updated_at INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (machine_id))`}, "machine_checks", "name", "primary key"},
		"drop table":    {[]string{`DROP TABLE machine_checks`}, "machine_checks", "", "dropping a table"},
		"rename table":  {[]string{`ALTER TABLE machine_checks RENAME TO checks`}, "machine_checks", "", "dropping a table"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			before := s.Schema()
			err := s.Migrate(context.Background(), c.stmts)
			var se *SchemaError
			if !errors.As(err, &se) {
				t.Fatalf("want a SchemaError, got %v", err)
			}
			if se.Table != c.table || se.Column != c.col || !strings.Contains(err.Error(), c.text) {
				t.Fatalf("error %q: want table %q column %q and %q", err, c.table, c.col, c.text)
			}
			if s.Schema() != before {
				t.Fatal("a refused migration changed the schema")
			}
		})
	}
}

// TestAddColumnIsConstantWork: adding a nullable column to a 100k-row
// table writes no clock rows, and the new column reads as never written
// (col_version 0) on every row, so any later write to it wins.
func TestAddColumnIsConstantWork(t *testing.T) {
	ctx := context.Background()
	s := regionalStore(t, t.TempDir(), "a")
	defer s.Close()
	const rows = 100_000
	if _, err := s.Write(ctx, func(tx Tx) error { return upsertRows(ctx, tx, 0, rows, 0) }); err != nil {
		t.Fatal(err)
	}
	count := func(q string) int64 {
		var n int64
		if err := queryRow(ctx, s.writer, q, nil, &n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	changesBefore := count(`SELECT total_changes()`)
	if err := s.Migrate(ctx, []string{`ALTER TABLE machines ADD COLUMN cpus INTEGER`}); err != nil {
		t.Fatal(err)
	}
	// total_changes counts every row any statement on the writer wrote.
	if n := count(`SELECT total_changes()`) - changesBefore; n != 0 {
		t.Fatalf("adding a column wrote %d rows", n)
	}
	if n := count(`SELECT count(*) FROM "__patina_clock_machines"`); n != rows {
		t.Fatalf("%d clock rows, want %d", n, rows)
	}
	if n := count(`SELECT count(*) FROM "__patina_clock_machines" WHERE "__patina_v_cpus" != 0`); n != 0 {
		t.Fatalf("%d clock rows carry a version for the new column", n)
	}
	// The new column replicates like any other.
	res := exec(t, s, stmt(`UPDATE machines SET cpus = 4 WHERE id = 'm00000007'`))
	cs := changesetOf(t, s, res.Version)
	if len(cs.Changes) != 1 || cs.Changes[0].Column != "cpus" || cs.Changes[0].ColVersion != 1 {
		t.Fatalf("changeset %+v, want cpus at col_version 1", cs.Changes)
	}
}

func TestApplyRefusesWhatItCannotApply(t *testing.T) {
	ctx := context.Background()
	a, b := regionalPair(t)
	if err := a.Migrate(ctx, []string{`ALTER TABLE machines ADD COLUMN cpus INTEGER`}); err != nil {
		t.Fatal(err)
	}
	res := exec(t, a, stmt(`INSERT INTO machines (id, cpus) VALUES ('m1', 2)`))
	cs := changesetOf(t, a, res.Version)

	// b lacks the column: the version fails whole and stays unknown.
	out, err := b.Apply(ctx, []*crdt.Changeset{cs})
	if err != nil || len(out.Failed) != 1 || out.Applied != 0 {
		t.Fatalf("apply without the column: %+v, %v", out, err)
	}
	if !strings.Contains(out.Failed[0].Error(), `no column "cpus"`) {
		t.Fatalf("error %q does not name the column", out.Failed[0])
	}
	if b.Bookkeeping().Knows(a.Actor(), res.Version) || dumpTable(t, b, "machines") != "" {
		t.Fatal("a failed version left a trace")
	}
	// Garbage from a peer is refused, never applied, never a crash.
	bad := []*crdt.Changeset{
		{Actor: a.Actor(), Version: 9, Changes: []crdt.Change{{Table: "machines", PK: []byte{1, 2, 3}, CL: 1}}},
		{Actor: a.Actor(), Version: 10, Changes: []crdt.Change{{Table: "nope", PK: crdt.PackPK([]crdt.Value{crdt.TextValue("x")}), CL: 1}}},
		{Actor: a.Actor(), Version: 11, Changes: []crdt.Change{{Table: "machines", PK: crdt.PackPK([]crdt.Value{crdt.IntValue(1), crdt.IntValue(2)}), CL: 1}}},
		// An INTEGER key for the TEXT id: it would be stored as '7'.
		{Actor: a.Actor(), Version: 12, Changes: []crdt.Change{{Table: "machines", PK: crdt.PackPK([]crdt.Value{crdt.IntValue(7)}), CL: 1}}},
		{Actor: a.Actor(), Version: 13, Changes: []crdt.Change{{Table: "machines", PK: crdt.PackPK([]crdt.Value{crdt.TextValue("m1")}), Column: "state", Value: crdt.TextValue("x"), ColVersion: 1, CL: 1},
			{Table: "machines", PK: crdt.PackPK([]crdt.Value{crdt.TextValue("m1")}), Column: "port", Value: crdt.IntValue(1), ColVersion: 1, CL: 3}}},
	}
	out, err = b.Apply(ctx, bad)
	if err != nil || len(out.Failed) != len(bad) || out.Applied != 0 {
		t.Fatalf("garbage: %+v, %v", out, err)
	}
	for i, want := range []string{"malformed packed primary key", `unknown table "nope"`, "1-column key, change has 2", `key column "id" cannot hold integer`, "causal lengths 1 and 3"} {
		if !strings.Contains(out.Failed[i].Error(), want) {
			t.Errorf("garbage %d: %q does not say %q", i, out.Failed[i], want)
		}
	}
	if dumpTable(t, b, "machines") != "" || b.Bookkeeping().Head(a.Actor()) != 0 {
		t.Fatal("garbage left a trace")
	}

	// Once b's schema has the column, the same version applies.
	if err := b.Migrate(ctx, []string{`ALTER TABLE machines ADD COLUMN cpus INTEGER`}); err != nil {
		t.Fatal(err)
	}
	apply(t, b, cs)
	if got, want := dumpTable(t, b, "machines"), dumpTable(t, a, "machines"); got != want {
		t.Fatalf("after the migration:\n%s\nwant\n%s", got, want)
	}
	// Applying it again is a no-op.
	if out := apply(t, b, cs); out.Known != 1 || out.Applied != 0 {
		t.Fatalf("re-apply: %+v", out)
	}
}

func TestChangesOfClearedVersion(t *testing.T) {
	s := regionalStore(t, t.TempDir(), "a")
	defer s.Close()
	v1 := exec(t, s, stmt(`INSERT INTO machines (id, state) VALUES ('m1', 'started')`)).Version
	exec(t, s, stmt(`DELETE FROM machines WHERE id = 'm1'`))
	cs, cleared, err := s.Changes(context.Background(), s.Actor(), v1)
	if err != nil || !cleared || len(cs.Changes) != 0 {
		t.Fatalf("version 1 after its row was deleted: cleared=%v changes=%d err=%v", cleared, len(cs.Changes), err)
	}
	if !s.Bookkeeping().IsCleared(s.Actor(), v1) {
		t.Fatal("cleared version not recorded")
	}
	if _, _, err := s.Changes(context.Background(), s.Actor(), 99); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("unknown version: %v", err)
	}
}

func TestReopenKeepsActorAndBookkeeping(t *testing.T) {
	dir := t.TempDir()
	s := regionalStore(t, dir, "a")
	actor := s.Actor()
	for i := 0; i < 3; i++ {
		exec(t, s, stmt(`INSERT INTO machines (id) VALUES (?)`, fmt.Sprint("m", i)))
	}
	s.Close()
	s = regionalStore(t, dir, "a")
	defer s.Close()
	if s.Actor() != actor || s.Head() != 3 {
		t.Fatalf("reopened: actor %s head %d, want %s and 3", s.Actor(), s.Head(), actor)
	}
	if v := exec(t, s, stmt(`INSERT INTO machines (id) VALUES ('m9')`)).Version; v != 4 {
		t.Fatalf("next version %d, want 4", v)
	}
}

// TestApplyBatchWithOneBadVersion: versions on distinct rows are applied
// together; when one of them cannot be applied, the others still are, and
// the failure names the version at fault.
func TestApplyBatchWithOneBadVersion(t *testing.T) {
	ctx := context.Background()
	a, b := regionalPair(t)
	var css []*crdt.Changeset
	for i := 0; i < 6; i++ {
		res := exec(t, a, stmt(`INSERT INTO machines (id, state) VALUES (?, 'started')`, fmt.Sprintf("m%d", i)))
		css = append(css, changesetOf(t, a, res.Version))
	}
	if err := a.Migrate(ctx, []string{`ALTER TABLE machines ADD COLUMN cpus INTEGER`}); err != nil {
		t.Fatal(err)
	}
	bad := exec(t, a, stmt(`INSERT INTO machines (id, cpus) VALUES ('m9', 2)`)).Version
	batch := append(append(append([]*crdt.Changeset{}, css[:3]...), changesetOf(t, a, bad)), css[3:]...)
	out, err := b.Apply(ctx, batch)
	if err != nil || out.Applied != 6 || len(out.Failed) != 1 {
		t.Fatalf("apply: %+v, %v", out, err)
	}
	var ae *ApplyError
	if !errors.As(out.Failed[0], &ae) || ae.Version != bad || !strings.Contains(ae.Error(), `no column "cpus"`) {
		t.Fatalf("failure %v does not name version %d and its column", out.Failed[0], bad)
	}
	for _, cs := range css {
		if !b.Bookkeeping().Knows(a.Actor(), cs.Version) {
			t.Fatalf("version %d not applied", cs.Version)
		}
	}
	if b.Bookkeeping().Knows(a.Actor(), bad) {
		t.Fatal("the bad version is recorded as known")
	}
	// The same as applying the good versions one at a time.
	c := regionalStore(t, t.TempDir(), "c")
	defer c.Close()
	for _, cs := range css {
		apply(t, c, cs)
	}
	if got, want := dumpTable(t, b, "machines"), dumpTable(t, c, "machines"); got != want || strings.Count(got, "\n") != 6 {
		t.Fatalf("rows applied together:\n%s\none at a time:\n%s", got, want)
	}
	if got, want := dumpClock(t, b, "machines"), dumpClock(t, c, "machines"); got != want {
		t.Fatalf("clocks applied together:\n%s\none at a time:\n%s", got, want)
	}
}

// TestApplyInterleavedRows: a changeset whose rows' changes come
// interleaved rather than a row at a time applies as the same changeset
// in row order does, and is left as it was given.
func TestApplyInterleavedRows(t *testing.T) {
	dir := t.TempDir()
	a := regionalStore(t, dir, "a")
	defer a.Close()
	exec(t, a, stmt(`INSERT INTO machines (id, app) VALUES ('m0', 'x')`))
	v := exec(t, a,
		stmt(`INSERT INTO machines (id, app, state) VALUES ('m1', 'x', 'started'), ('m2', 'y', 'stopped')`),
		stmt(`UPDATE machines SET app = 'z', port = 8 WHERE id = 'm0'`)).Version
	cs := changesetOf(t, a, v)
	// Round-robin over the rows: no row's changes stay together.
	var rows [][]crdt.Change
	at := map[string]int{}
	for _, c := range cs.Changes {
		i, ok := at[string(c.PK)]
		if !ok {
			i = len(rows)
			at[string(c.PK)] = i
			rows = append(rows, nil)
		}
		rows[i] = append(rows[i], c)
	}
	if len(rows) != 3 {
		t.Fatalf("version %d touches %d rows, want 3", v, len(rows))
	}
	mixed := &crdt.Changeset{Actor: cs.Actor, Version: cs.Version}
	for n := 0; len(mixed.Changes) < len(cs.Changes); n++ {
		for _, r := range rows {
			if n < len(r) {
				mixed.Changes = append(mixed.Changes, r[n])
			}
		}
	}
	given := append([]crdt.Change(nil), mixed.Changes...)

	b := regionalStore(t, dir, "b")
	defer b.Close()
	c := regionalStore(t, dir, "c")
	defer c.Close()
	first := changesetOf(t, a, v-1)
	apply(t, b, first, cs)
	apply(t, c, first, mixed)
	for _, table := range []string{"machines"} {
		if got, want := dumpTable(t, c, table)+dumpClock(t, c, table), dumpTable(t, b, table)+dumpClock(t, b, table); got != want {
			t.Fatalf("interleaved changes applied as\n%s\nwant\n%s", got, want)
		}
	}
	if !reflect.DeepEqual(mixed.Changes, given) {
		t.Fatal("apply changed the changeset it was given")
	}
}

// TestClientSelectLeavesNothingOpen: a statement in a client transaction
// that returns rows (a SELECT, a RETURNING) is done with when its
// transaction is: it holds no read of its own against the applies and
// the local writes that follow.
func TestClientSelectLeavesNothingOpen(t *testing.T) {
	a, b := regionalPair(t)
	for i := 0; i < 3; i++ {
		exec(t, b, stmt(`INSERT INTO machines (id, app) VALUES (?, 'x')`, fmt.Sprint("b", i)))
	}
	res := exec(t, b,
		stmt(`SELECT id FROM machines ORDER BY id`),
		stmt(`INSERT INTO machines (id, app) VALUES ('r', 'x') RETURNING id`))
	if res.Results[1].RowsAffected != 1 {
		t.Fatalf("RETURNING insert affected %d rows, want 1", res.Results[1].RowsAffected)
	}
	// A SELECT changes nothing, whatever the statement before it changed.
	res = exec(t, b,
		stmt(`UPDATE machines SET state = 'stopped' WHERE id IN ('b0', 'b1')`),
		stmt(`SELECT id FROM machines`))
	if res.Results[0].RowsAffected != 2 || res.Results[1].RowsAffected != 0 {
		t.Fatalf("UPDATE then SELECT affected %d and %d rows, want 2 and 0", res.Results[0].RowsAffected, res.Results[1].RowsAffected)
	}
	if res := exec(t, b, stmt(`SELECT 1`)); res.Results[0].RowsAffected != 0 {
		t.Fatalf("a lone SELECT affected %d rows, want 0", res.Results[0].RowsAffected)
	}
	for i := 0; i < 3; i++ {
		v := exec(t, a, stmt(`INSERT INTO machines (id, app) VALUES (?, 'y')`, fmt.Sprint("a", i))).Version
		if out, err := b.Apply(context.Background(), []*crdt.Changeset{changesetOf(t, a, v)}); err != nil || len(out.Failed) > 0 {
			t.Fatalf("apply after a client SELECT: %v %v", err, out.Failed)
		}
		exec(t, b, stmt(`UPDATE machines SET state = 'started' WHERE id = ?`, fmt.Sprint("b", i)))
	}
	if got := dumpQuery(t, b, `SELECT count(*) FROM machines`); got != "7\n" {
		t.Fatalf("%q rows, want 7", got)
	}
}

func TestReturnsNoRows(t *testing.T) {
	for q, want := range map[string]bool{
		"INSERT INTO machines (id) VALUES (?)":               true,
		"  \n update machines SET app = 'x'":                 true,
		"DELETE FROM machines":                               true,
		"replace into machines (id) values (1)":              true,
		"INSERT INTO machines (id) VALUES (?) RETURNING id":  false,
		"delete from machines ReTuRnInG *":                   false,
		"SELECT id FROM machines":                            false,
		"WITH x AS (SELECT 1) INSERT INTO machines SELECT *": false,
		"/* c */ INSERT INTO machines (id) VALUES (1)":       false,
		"VALUES (1)": false,
		"INSERT":     false,
	} {
		if got := returnsNoRows(q); got != want {
			t.Errorf("returnsNoRows(%q) = %v, want %v", q, got, want)
		}
	}
}
