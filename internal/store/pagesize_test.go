package store

import (
	"context"
	"net/url"
	"path/filepath"
	"testing"
)

func pageSizeOf(t *testing.T, path string) (size int, mode string) {
	t.Helper()
	c := openSQLite(t, path, url.Values{})
	ctx := context.Background()
	if err := c.QueryRowContext(ctx, "PRAGMA page_size").Scan(&size); err != nil {
		t.Fatal(err)
	}
	if err := c.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	return size, mode
}

// A database the store creates has its pages; one that exists keeps its
// own, and both work.
func TestPageSizeOfNewAndExistingDatabases(t *testing.T) {
	dir := t.TempDir()
	s := regionalStore(t, dir, "new")
	exec(t, s, stmt(`INSERT INTO machines (id, app) VALUES ('m1', 'a')`))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if size, mode := pageSizeOf(t, filepath.Join(dir, "new.db")); size != pageSize || mode != "wal" {
		t.Fatalf("new database: page size %d, journal %s; want %d, wal", size, mode, pageSize)
	}

	// A database from before: 4 KiB pages, its header written.
	old := filepath.Join(dir, "old.db")
	c := openSQLite(t, old, url.Values{})
	for _, q := range []string{"PRAGMA page_size = 4096", "PRAGMA journal_mode = WAL", "PRAGMA user_version = 1"} {
		if _, err := c.ExecContext(context.Background(), q); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	s = regionalStore(t, dir, "old")
	exec(t, s, stmt(`INSERT INTO machines (id, app) VALUES ('m1', 'a')`))
	if got := dumpQuery(t, s, `SELECT id FROM machines`); got != "m1\n" {
		t.Fatalf("rows %q", got)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if size, _ := pageSizeOf(t, old); size != 4096 {
		t.Fatalf("existing database: page size %d, want its own 4096", size)
	}
}
