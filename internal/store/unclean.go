package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/patina-db/patina/internal/crdt"
)

// A host that loses power loses the store's last commits. A commit is in
// the WAL when it returns, and on disk once the checkpointer syncs it
// (within 250 ms under writes: synchronous=NORMAL, an fsync per commit
// would cost more than the whole commit). But a version is broadcast the
// moment it commits. After a power cut the node would come back without
// versions its peers already hold, and its next writes would reuse those
// numbers for other changes: the peers would take them for known, refuse
// nothing, and the cluster would diverge for good. A process that only
// crashes loses nothing: the kernel still holds what it wrote.
//
// So the store records, durably, the boot it is open under
// (/proc/sys/kernel/random/boot_id), and removes the record when it
// closes. Opened with a record from another boot, the last run ended with
// its host: before anything else the store takes a new actor id
// (Reidentify), so that every version of the old one, kept here or held
// only by peers, stays the old actor's and arrives by sync like any other
// node's. Where the boot cannot be read, any run that did not close
// counts as one that ended with its host.

// openBootKey is the __patina_meta key of the record.
const openBootKey = "open_boot"

// bootID names the host's current boot, "" when unknown.
var bootID = func() string {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// recoverUnclean reidentifies the database at path if its last run was
// open when the host went down. It reports the actor id given up, if any.
// No store may have the file open.
func recoverUnclean(ctx context.Context, path string) (old crdt.ActorID, changed bool, err error) {
	db, conn, err := openFile(ctx, path)
	if err != nil {
		return old, false, err
	}
	var boot string
	var found int
	err = queryRow(ctx, conn, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '__patina_meta'`, nil, &found)
	if err == nil && found == 1 {
		err = queryRow(ctx, conn, `SELECT value FROM __patina_meta WHERE key = ?`, []any{openBootKey}, &boot)
	}
	conn.Close()
	db.Close()
	switch {
	case err == nil && found == 0, errors.Is(err, sql.ErrNoRows):
		return old, false, nil // a new database, or one closed cleanly
	case err != nil:
		return old, false, fmt.Errorf("read the last run's boot: %w", err)
	}
	if now := bootID(); now != "" && boot == now {
		return old, false, nil // the process stopped, the host did not
	}
	old, _, err = Reidentify(ctx, path)
	if err != nil {
		return old, false, fmt.Errorf("the last run ended with its host (boot %s): %w", boot, err)
	}
	return old, true, nil
}

// markOpen records, synced to disk, the boot the store is open under.
func (s *Store) markOpen(ctx context.Context) error {
	return s.syncedMeta(ctx, `INSERT OR REPLACE INTO __patina_meta (key, value) VALUES (?, ?)`, openBootKey, bootID())
}

// markClosed removes the record, synced: the store closed cleanly.
func (s *Store) markClosed(ctx context.Context) error {
	return s.syncedMeta(ctx, `DELETE FROM __patina_meta WHERE key = ?`, openBootKey)
}

// syncedMeta runs one write on the writer with every commit synced.
func (s *Store) syncedMeta(ctx context.Context, q string, args ...any) error {
	if _, err := s.writer.ExecContext(ctx, `PRAGMA synchronous = FULL`); err != nil {
		return fmt.Errorf("sync the run record: %w", err)
	}
	_, err := s.writer.ExecContext(ctx, q, args...)
	if _, rerr := s.writer.ExecContext(ctx, `PRAGMA synchronous = NORMAL`); err == nil {
		err = rerr
	}
	if err != nil {
		return fmt.Errorf("record the run: %w", err)
	}
	return nil
}

// Reidentified reports the actor id this store gave up when it opened,
// because its last run ended with its host.
func (s *Store) Reidentified() (old crdt.ActorID, ok bool) { return s.unclean, s.wasUnclean }
