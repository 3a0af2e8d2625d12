package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMigrateIsAllOrNothingWhenCanceled: a caller that goes away during a
// migration (here at a random moment, or as its commit lands) gets either
// an error and no change, or success with the column in the database, in
// the store's schema and captured: never a committed column the store
// does not know of, whose writes would not replicate.
func TestMigrateIsAllOrNothingWhenCanceled(t *testing.T) {
	a, b := pair(t, `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`)
	ctx := context.Background()
	added := 0
	for i := 0; i < 60; i++ {
		select { // what earlier commits announced
		case <-a.Written():
		default:
		}
		col := fmt.Sprintf("c%d", i)
		mctx, cancel := context.WithCancel(ctx)
		if i%2 == 0 {
			go func() { <-a.Written(); cancel() }()
		} else {
			time.AfterFunc(time.Duration(rand.IntN(3000))*time.Microsecond, cancel)
		}
		err := a.Migrate(mctx, []string{"ALTER TABLE t ADD COLUMN " + col + " TEXT"})
		cancel()
		var inDB int
		if qerr := a.writer.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info('t') WHERE name = ?`, col).Scan(&inDB); qerr != nil {
			t.Fatal(qerr)
		}
		inSchema := a.Schema().Tables["t"].Column(col) != nil
		if (err == nil) != (inDB == 1) || (err == nil) != inSchema {
			t.Fatalf("attempt %d: Migrate returned %v; column in the database %d, in the schema %v", i, err, inDB, inSchema)
		}
		if err != nil {
			continue
		}
		added++
		if err := b.Migrate(ctx, []string{"ALTER TABLE t ADD COLUMN " + col + " TEXT"}); err != nil {
			t.Fatal(err)
		}
		exec(t, a, stmt(fmt.Sprintf("INSERT INTO t (id, %s) VALUES (%d, 'y') ON CONFLICT (id) DO UPDATE SET %s = 'y'", col, i, col)))
	}
	replicate(t, a, b)
	if da, db := dumpTable(t, a, "t"), dumpTable(t, b, "t"); da != db {
		t.Fatalf("diverged after %d columns added:\n%s\n%s", added, da, db)
	}
}

// TestMigrateRunsOnlySchemaStatements: a migration takes CREATE, ALTER
// and DROP statements, run in a scratch copy that nothing reaches past:
// ATTACH (which reached the live database around the capture), VACUUM
// INTO (which wrote files), PRAGMA and rows written are refused, and
// nothing changes.
func TestMigrateRunsOnlySchemaStatements(t *testing.T) {
	dir := t.TempDir()
	s := openTestStore(t, dir, "a", `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`)
	defer s.Close()
	exec(t, s, stmt(`INSERT INTO t VALUES (1, 'x')`))
	planted := filepath.Join(dir, "planted.db")
	for _, stmts := range [][]string{
		{fmt.Sprintf("ATTACH '%s' AS live", filepath.Join(dir, "a.db")), "UPDATE live.t SET v = 'uncaptured'"},
		{fmt.Sprintf("VACUUM INTO '%s'", planted)},
		{"INSERT INTO t VALUES (2, 'y')"},
		{"PRAGMA writable_schema = 1"},
		{"/* a comment first */ DELETE FROM t"},
	} {
		err := s.Migrate(context.Background(), stmts)
		var se *SchemaError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), "a migration takes CREATE, ALTER and DROP") {
			t.Errorf("%q: %v, want it refused", stmts, err)
		}
	}
	if got := dumpQuery(t, s, `SELECT v FROM t`); got != "'x'\n" && got != "x\n" {
		t.Fatalf("t holds %q after refused migrations", got)
	}
	if _, err := os.Stat(planted); err == nil {
		t.Fatal("a refused migration wrote a file")
	}
	// A schema statement that would reach past the scratch copy is
	// refused by its authorizer.
	if err := s.Migrate(context.Background(), []string{"CREATE TEMP TABLE x (id INTEGER PRIMARY KEY)"}); err == nil || !strings.Contains(err.Error(), "not authorized") {
		t.Errorf("a TEMP table: %v, want it refused", err)
	}
	// What a migration is for still runs.
	if err := s.Migrate(context.Background(), []string{"CREATE TABLE u (id TEXT NOT NULL PRIMARY KEY)", "CREATE INDEX t_v ON t (v)", "ALTER TABLE t ADD COLUMN w TEXT DEFAULT 'CHECK (w)'"}); err != nil {
		t.Fatal(err)
	}
}

// TestMigrateRestatedTableKeepsIndexes: restating a table to add a column
// keeps its indexes.
func TestMigrateRestatedTableKeepsIndexes(t *testing.T) {
	s := openTestStore(t, t.TempDir(), "a", `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT); CREATE INDEX t_v ON t (v);`)
	defer s.Close()
	if err := s.Migrate(context.Background(), []string{`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, w TEXT)`}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Schema().Indexes["t_v"]; !ok {
		t.Fatal("index t_v dropped by a migration that only added a column")
	}
	if err := s.Migrate(context.Background(), []string{`CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT, w TEXT, x TEXT)`, `DROP INDEX t_v`}); err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Schema().Indexes["t_v"]; ok {
		t.Fatal("index t_v kept though the migration dropped it")
	}
}
