package store

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
)

// A commit reaches the WAL in one write, not two per frame, and what it
// wrote is there for every other connection when it returns.
func TestWALWritesOncePerCommit(t *testing.T) {
	s := regionalStore(t, t.TempDir(), "w")
	defer s.Close()
	ctx := context.Background()
	in0, out0, barrier0 := walWrites()
	const commits = 200
	for i := 0; i < commits; i++ {
		exec(t, s, stmt(`INSERT INTO machines (id, app) VALUES (?, 'w')`, fmt.Sprintf("m%d", i)))
		var n int
		if err := s.readers.QueryRowContext(ctx, `SELECT count(*) FROM machines`).Scan(&n); err != nil || n != i+1 {
			t.Fatalf("after commit %d a reader sees %d rows (%v)", i, n, err)
		}
	}
	in, out, _ := walWrites()
	in, out = in-in0, out-out0
	// Each commit writes several frames, two writes each; the WAL's own
	// header adds a write now and then.
	if in < 4*commits || out > commits+commits/10 {
		t.Fatalf("%d commits: SQLite made %d WAL writes, %d reached the file", commits, in, out)
	}
	t.Logf("%d commits: %d WAL writes from SQLite, %d to the file", commits, in, out)
	// Commits of 1 to 60 rows, so that some commit frame's page is the
	// write that does not fit in what the layer holds: every commit is
	// written out by its own last write, none left for the barrier.
	for rows := 1; rows <= 60; rows++ {
		var stmts []Statement
		for j := 0; j < rows; j++ {
			stmts = append(stmts, stmt(`INSERT INTO machines (id, app, image) VALUES (?, 'w', ?)`, fmt.Sprintf("r%d-%d", rows, j), strings.Repeat("x", 3000)))
		}
		exec(t, s, stmts...)
	}
	if _, _, barrier := walWrites(); barrier != barrier0 {
		t.Fatalf("%d commits left bytes for the barrier to write", barrier-barrier0)
	}
}

// rawConn opens the database through walVFS without the store, with a
// page cache small enough that a large transaction writes frames before
// it commits.
func rawConn(t *testing.T, path string) *sql.Conn {
	t.Helper()
	p := url.Values{}
	p.Set("_journal_mode", "WAL")
	p.Set("_synchronous", "NORMAL")
	p.Set("_busy_timeout", "5000")
	p.Set("_cache_size", "20")
	c := openSQLite(t, path, p)
	if _, err := c.ExecContext(context.Background(), "PRAGMA wal_autocheckpoint = 0"); err != nil {
		t.Fatal(err)
	}
	return c
}

// A transaction that wrote frames and rolled back leaves nothing to be
// written later: another writer's commit at the same WAL offsets stays
// as it committed it, after the first connection reads again.
func TestWALRolledBackFramesNeverLand(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "x.db")
	a, b := rawConn(t, path), rawConn(t, path)
	do := func(c *sql.Conn, q string, args ...any) {
		t.Helper()
		if _, err := c.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	value := func(who string, i int) []byte { return bytes.Repeat([]byte(fmt.Sprintf("%s%05d", who, i)), 500) }
	do(a, "CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)")
	do(a, "PRAGMA wal_checkpoint(TRUNCATE)")
	fill := func(c *sql.Conn, who string) {
		for i := 0; i < 200; i++ {
			do(c, "INSERT INTO t VALUES (?, ?)", i, value(who, i))
		}
	}
	do(a, "BEGIN IMMEDIATE")
	fill(a, "a")
	do(a, "ROLLBACK")
	do(b, "BEGIN IMMEDIATE")
	fill(b, "b")
	do(b, "COMMIT")
	var n int
	if err := a.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 200 {
		t.Fatalf("first connection counts %d rows (%v)", n, err)
	}
	c := rawConn(t, path)
	var check string
	if err := c.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity check: %q %v", check, err)
	}
	rows, err := c.QueryContext(ctx, "SELECT id, v FROM t ORDER BY id")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	seen := 0
	for rows.Next() {
		var id int
		var v []byte
		if err := rows.Scan(&id, &v); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(v, value("b", id)) {
			t.Fatalf("row %d is not what the second connection committed", id)
		}
		seen++
	}
	if err := rows.Err(); err != nil || seen != 200 {
		t.Fatalf("%d rows (%v)", seen, err)
	}
}
