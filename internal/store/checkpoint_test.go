package store

import (
	"context"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/patina-db/patina/schemas"
)

// openManual opens a store that leaves checkpoints to its caller, with
// one table.
func openManual(t *testing.T, path string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{Path: path, ManualCheckpoint: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ApplySchemaSQL(context.Background(), "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL DEFAULT '')"); err != nil {
		s.Close()
		t.Fatal(err)
	}
	return s
}

// With ManualCheckpoint a commit leaves the WAL alone; Checkpoint copies
// it into the database file, and the next write starts the WAL over.
func TestManualCheckpoint(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	s := openManual(t, path)
	defer s.Close()
	write := func(from, n int) {
		for i := from; i < from+n; i++ {
			if _, err := s.Transact(ctx, []Statement{{SQL: "INSERT INTO t (id, v) VALUES (?, hex(randomblob(2000)))", Args: []any{i}}}); err != nil {
				t.Fatal(err)
			}
		}
	}
	walSize := func() int64 {
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	// Far more than the 1000 pages after which SQLite would checkpoint by
	// itself.
	write(0, 3000)
	grown := walSize()
	if grown < 2500*4096 {
		t.Fatalf("WAL is %d bytes: commits checkpointed it", grown)
	}
	res, err := s.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Busy || res.Done != res.Log || res.Log == 0 {
		t.Fatalf("checkpoint %+v: want every frame copied", res)
	}
	// The next write starts the WAL from its beginning: it stops growing.
	write(3000, 10)
	if res, err := s.Checkpoint(ctx); err != nil || res.Log >= 1000 {
		t.Fatalf("after a checkpoint and more writes the WAL holds %+v (%v)", res, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Checkpoint(ctx); err != ErrClosed {
		t.Fatalf("checkpoint after close: %v", err)
	}
}

// StartWriteback starts writing out a WAL that commits have grown, leaves
// what a checkpoint then copies unchanged, and fails once the store is
// closed.
func TestStartWriteback(t *testing.T) {
	ctx := context.Background()
	// Through a symbolic link: SQLite keeps the WAL beside the file.
	dir := t.TempDir()
	real := filepath.Join(dir, "w.db")
	path := filepath.Join(dir, "link.db")
	if err := os.WriteFile(real, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(real, path); err != nil {
		t.Fatal(err)
	}
	real, err := filepath.EvalSymlinks(real)
	if err != nil {
		t.Fatal(err)
	}
	s := openManual(t, path)
	defer s.Close()
	for i := 0; i < 200; i++ {
		if _, err := s.Transact(ctx, []Statement{{SQL: "INSERT INTO t (id, v) VALUES (?, hex(randomblob(2000)))", Args: []any{i}}}); err != nil {
			t.Fatal(err)
		}
		if i%50 == 0 {
			if err := s.StartWriteback(); err != nil {
				t.Fatalf("writeback after %d commits: %v", i+1, err)
			}
		}
	}
	if s.ckpt.wal == nil || s.ckpt.wal.Name() != real+"-wal" {
		t.Fatalf("writeback did not open the WAL (%v)", s.ckpt.wal)
	}
	res, err := s.Checkpoint(ctx)
	if err != nil || res.Busy || res.Log == 0 || res.Done != res.Log {
		t.Fatalf("checkpoint after writeback: %+v, %v; want every frame copied", res, err)
	}
	if got := dumpQuery(t, s, "SELECT count(*) FROM t"); got != "200\n" {
		t.Fatalf("%q rows, want 200", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.StartWriteback(); err != ErrClosed {
		t.Fatalf("writeback after close: %v, want ErrClosed", err)
	}
}

// Written announces each commit of the live database (local, applied,
// schema) and nothing else: the checkpoint loop sleeps on it.
func TestWrittenAnnouncesCommits(t *testing.T) {
	ctx := context.Background()
	a, b := regionalPair(t)
	announced := func() bool {
		select {
		case <-b.Written():
			return true
		default:
			return false
		}
	}
	announced() // the schema applied as the store was made
	if announced() {
		t.Fatal("announced twice with no commit between")
	}
	if _, err := b.Transact(ctx, []Statement{stmt("INSERT INTO machines (id, app) VALUES ('m1', 'a')"), stmt("INSERT INTO no_such_table VALUES (1)")}); err == nil {
		t.Fatal("a transaction with a bad statement committed")
	}
	if announced() {
		t.Fatal("a transaction that rolled back was announced")
	}
	exec(t, b, stmt("INSERT INTO machines (id, app) VALUES ('m1', 'a')"))
	if !announced() {
		t.Fatal("a local commit was not announced")
	}
	res := exec(t, a, stmt("INSERT INTO machines (id, app) VALUES ('m2', 'a')"))
	apply(t, b, changesetOf(t, a, res.Version))
	if !announced() {
		t.Fatal("an applied version was not announced")
	}
	if err := b.ApplySchemaSQL(ctx, schemas.Regional()+"\nCREATE TABLE extra (id TEXT PRIMARY KEY NOT NULL, v TEXT);"); err != nil {
		t.Fatal(err)
	}
	if !announced() {
		t.Fatal("a schema change was not announced")
	}
}

// A checkpoint that a reader keeps from copying new frames (a backup's
// VACUUM INTO, a long query) is not Busy: SQLite's PASSIVE checkpoint
// reports success and copies, and syncs, nothing. Only Done < Log says
// the commits since are not on disk yet.
func TestCheckpointHeldByReaderIsNotBusy(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "c.db")
	s := openManual(t, path)
	defer s.Close()
	if _, err := s.Transact(ctx, []Statement{{SQL: "INSERT INTO t (id) VALUES (1)"}}); err != nil {
		t.Fatal(err)
	}
	if res, err := s.Checkpoint(ctx); err != nil || res.Done != res.Log {
		t.Fatalf("first checkpoint %+v %v", res, err)
	}
	// A reader, like a backup, holds a snapshot from before the next commit.
	r := openSQLite(t, path, url.Values{})
	tx, err := r.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var n int
	if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Transact(ctx, []Statement{{SQL: "INSERT INTO t (id) VALUES (2)"}}); err != nil {
		t.Fatal(err)
	}
	res, err := s.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("checkpoint under a reader: %+v", res)
	// What the agent's checkpoint loop must recognise: not Busy, and
	// frames left in the WAL.
	if res.Busy || res.Done >= res.Log {
		t.Fatalf("checkpoint %+v: want not Busy and Done < Log", res)
	}
}
