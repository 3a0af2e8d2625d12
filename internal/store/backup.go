package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/patina-db/patina/internal/crdt"
)

// Snapshot is a consistent copy of a live database made by Backup: a
// standalone SQLite file in rollback-journal mode, read with Read. Close
// it when done; its file is already unlinked, so nothing is left behind
// even if the process dies while it is being read.
type Snapshot struct {
	f    *os.File
	size int64
}

// Size is the snapshot's length in bytes.
func (b *Snapshot) Size() int64 { return b.size }

// Read reads the snapshot from its beginning on.
func (b *Snapshot) Read(p []byte) (int, error) { return b.f.Read(p) }

// vacuumPrefix begins the name of the copy Backup makes beside the
// database: hidden, and named for what made it, so that no file of the
// operator's (a node.db.backup-before-upgrade, say) is ever taken for
// one.
func vacuumPrefix(dbPath string) string { return "." + filepath.Base(dbPath) + ".patina-vacuum-" }

// removeBackupLeftovers removes copies that a backup left beside the
// database when its process died midway (each is up to the database's
// size). Only the store's holder makes them, and it holds the lock, so
// at open none is in use.
func removeBackupLeftovers(dbPath string) {
	dir := filepath.Dir(dbPath)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	prefix := vacuumPrefix(dbPath)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) && e.Type().IsRegular() {
			_ = os.Remove(filepath.Join(dir, e.Name()))
		}
	}
}

// Close releases the snapshot.
func (b *Snapshot) Close() error { return b.f.Close() }

// Backup copies the database with VACUUM INTO into a temporary file beside
// it and returns that copy. VACUUM INTO reads one snapshot in one read
// transaction, so the copy is consistent while writes go on, and neither
// waits for nor blocks the writer (SQLite's online-backup API instead
// restarts whenever another connection writes, and may never finish under
// load). It needs free space beside the database for one compacted copy.
func (s *Store) Backup(ctx context.Context) (*Snapshot, error) {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return nil, ErrClosed
	}
	tmp, err := os.CreateTemp(filepath.Dir(s.cfg.Path), vacuumPrefix(s.cfg.Path)+"*")
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	name := tmp.Name()
	tmp.Close()
	defer os.Remove(name)
	// A connection of its own: the store's readers run under query_only
	// (VACUUM counts as a write to it) and the writer must stay free.
	p := url.Values{}
	p.Set("_busy_timeout", fmt.Sprint(s.cfg.BusyTimeoutMS))
	db, err := sql.Open("sqlite3", dsn(s.cfg.Path, p))
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	defer db.Close()
	// An existing empty file is a valid VACUUM INTO target.
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, name); err != nil {
		return nil, fmt.Errorf("backup: vacuum into %s: %w", name, err)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("backup: %w", err)
	}
	return &Snapshot{f: f, size: fi.Size()}, nil
}

// FileInfo describes a database file CheckFile accepted.
type FileInfo struct {
	// Actor is the actor id of the node the file belongs to.
	Actor crdt.ActorID
	// Tables are its replicated tables.
	Tables []string
}

// CheckFile verifies that the file at path is an intact patina database
// this version reads: SQLite's integrity check passes, and patina's own
// tables record the format and an actor id. It reads the file like any
// SQLite client; do not point it at a file being written by a process
// other than an agent.
func CheckFile(ctx context.Context, path string) (*FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("check %s: not a regular file", path)
	}
	db, conn, err := openFile(ctx, path)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	defer conn.Close()
	info, err := checkConn(ctx, conn, path)
	if err != nil {
		return nil, err
	}
	// SQLite reads a page the file ends inside of as if the rest were
	// zeros, and the integrity check cannot tell those zeros from data:
	// a file cut short inside its last page passes it.
	var pageSize, pageCount int64
	if err := queryRow(ctx, conn, `PRAGMA page_size`, nil, &pageSize); err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	if err := queryRow(ctx, conn, `PRAGMA page_count`, nil, &pageCount); err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	if want := pageSize * pageCount; fi.Size() < want || fi.Size()%pageSize != 0 {
		return nil, fmt.Errorf("check %s: truncated: %d bytes, want %d (%d pages of %d)", path, fi.Size(), want, pageCount, pageSize)
	}
	return info, nil
}

// openFile opens one connection to a database file outside any store.
func openFile(ctx context.Context, path string) (*sql.DB, *sql.Conn, error) {
	p := url.Values{}
	p.Set("_foreign_keys", "0")
	db, err := sql.Open("sqlite3", dsn(path, p))
	if err != nil {
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, nil, fmt.Errorf("open %s: %w", path, err)
	}
	return db, conn, nil
}

// checkConn is CheckFile on an open connection.
func checkConn(ctx context.Context, conn *sql.Conn, path string) (*FileInfo, error) {
	rows, err := conn.QueryContext(ctx, `PRAGMA integrity_check(20)`)
	if err != nil {
		return nil, fmt.Errorf("check %s: not a readable SQLite database: %w", path, err)
	}
	var problems []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			rows.Close()
			return nil, fmt.Errorf("check %s: %w", path, err)
		}
		problems = append(problems, line)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("check %s: not a readable SQLite database: %w", path, err)
	}
	if len(problems) != 1 || problems[0] != "ok" {
		return nil, fmt.Errorf("check %s: integrity check failed: %s", path, strings.Join(problems, "; "))
	}
	var meta, sites int
	if err := queryRow(ctx, conn, `SELECT count(*) FILTER (WHERE name = '__patina_meta'), count(*) FILTER (WHERE name = '__patina_sites') FROM main.sqlite_master WHERE type = 'table'`, nil, &meta, &sites); err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	if meta == 0 || sites == 0 {
		return nil, fmt.Errorf("check %s: not a patina database (no __patina_meta or __patina_sites table)", path)
	}
	var format int
	if err := queryRow(ctx, conn, `SELECT value FROM __patina_meta WHERE key = 'format'`, nil, &format); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("check %s: no database format recorded", path)
		}
		return nil, fmt.Errorf("check %s: read format: %w", path, err)
	}
	if format != formatVersion {
		return nil, fmt.Errorf("check %s: database format %d; this patina reads format %d", path, format, formatVersion)
	}
	var raw []byte
	if err := queryRow(ctx, conn, `SELECT actor FROM __patina_sites WHERE ordinal = 0`, nil, &raw); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, fmt.Errorf("check %s: no actor id recorded", path)
		}
		return nil, fmt.Errorf("check %s: read actor id: %w", path, err)
	}
	info := &FileInfo{}
	if info.Actor, err = crdt.ActorIDFromBytes(raw); err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	schema, err := readSchema(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", path, err)
	}
	info.Tables = schema.TableNames()
	return info, nil
}
