package backup

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/internal/store"
)

// RestoreOptions say what Restore may do.
type RestoreOptions struct {
	// Force replaces an existing database (and its -wal and -shm files).
	Force bool
	// SchemaPaths are the agent's schema files: a backup the agent could
	// not start on (one of another tier, or with a table or column the
	// files lack) is refused before anything is replaced. None: not
	// checked.
	SchemaPaths []string
}

// Restored describes a database Restore put in place.
type Restored struct {
	Path string
	// From is the actor id of the node the backup came from; its versions
	// in the file stay its own.
	From crdt.ActorID
	// Actor is the restored node's new actor id.
	Actor  crdt.ActorID
	Tables []string
}

// Restore puts the backup file in at dbPath, the database of an agent that
// is not running, under a new actor id (see store.Reidentify for why).
// It copies the file beside dbPath, checks the copy (SQLite's integrity
// check, a patina database of this version's format, and, given the
// agent's schema files, one the agent can start on), gives it the new
// identity, removes the old database's -wal and -shm files (a WAL left
// behind would be replayed into the new file) and renames the copy over
// dbPath. It holds the database's lock throughout, so it refuses to run
// while an agent uses the database, and no agent starts midway. An
// existing database is replaced only with Force. On failure the existing
// database is untouched and no temporary file is left.
func Restore(ctx context.Context, in, dbPath string, opts RestoreOptions) (*Restored, error) {
	src, err := os.Open(in)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer src.Close()
	if fi, err := src.Stat(); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("restore: %s is not a regular file", in)
	} else if dst, err := os.Stat(dbPath); err == nil && os.SameFile(fi, dst) {
		return nil, fmt.Errorf("restore: %s is the database itself", in)
	}
	// A backup is one file. One with a WAL beside it is a database in use
	// (or left by a crash): its latest commits are in the WAL, which the
	// copy would leave out.
	if wal, err := os.Stat(in + "-wal"); err == nil && wal.Size() > 0 {
		return nil, fmt.Errorf("restore: %s has a WAL beside it (%s): it is a live agent's database, not a backup; take one with patina backup", in, in+"-wal")
	}
	lock, err := store.LockDatabase(dbPath)
	if err != nil {
		if errors.Is(err, store.ErrInUse) {
			return nil, fmt.Errorf("restore: %w; stop the agent first", err)
		}
		return nil, fmt.Errorf("restore: %w", err)
	}
	defer lock.Release()
	switch _, err := os.Lstat(dbPath); {
	case err == nil && !opts.Force:
		return nil, fmt.Errorf("restore: %s exists; pass --force to replace it (its data is lost)", dbPath)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("restore: %w", err)
	}
	// Through a symbolic link, the file it names is replaced, and the WAL
	// beside that file (where SQLite keeps it) goes; the link stays. The
	// lock stays the configured path's, the one the agent takes.
	target := dbPath
	if resolved, err := filepath.EvalSymlinks(dbPath); err == nil {
		target = resolved
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("restore: %w", err)
	}

	tmp := target + ".restore.tmp"
	// A restore that died midway may have left its copy, with a journal
	// SQLite would roll back into the next copy.
	removeDatabase(tmp)
	done := false
	defer func() {
		if !done {
			removeDatabase(tmp)
		}
	}()
	if err := copyFile(src, tmp); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	info, err := store.CheckFile(ctx, tmp)
	if err != nil {
		return nil, fmt.Errorf("restore: %s: %w", in, err)
	}
	if len(opts.SchemaPaths) > 0 {
		if err := store.CheckSchemaFiles(ctx, tmp, opts.SchemaPaths); err != nil {
			return nil, fmt.Errorf("restore: %s does not fit the agent's schema files, which it would refuse to start on: %w", in, err)
		}
	}
	from, actor, err := store.Reidentify(ctx, tmp)
	if err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	// The file replaced, or the directory of a new one, says whose the
	// database is: the agent's user, whoever runs the restore.
	ownerRef := target
	if _, err := os.Stat(target); err != nil {
		ownerRef = filepath.Dir(target)
	}
	if err := matchOwner(tmp, ownerRef); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := matchOwner(store.LockPath(dbPath), filepath.Dir(dbPath)); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	if err := syncFile(tmp); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if err := os.Remove(target + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("restore: %w", err)
		}
	}
	if err := os.Rename(tmp, target); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	done = true
	if err := syncDir(filepath.Dir(target)); err != nil {
		return nil, fmt.Errorf("restore: %w", err)
	}
	return &Restored{Path: dbPath, From: from, Actor: actor, Tables: info.Tables}, nil
}

func copyFile(src *os.File, to string) error {
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		return fmt.Errorf("copy to %s: %w", to, err)
	}
	if err := dst.Sync(); err != nil {
		dst.Close()
		return fmt.Errorf("sync %s: %w", to, err)
	}
	return dst.Close()
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// removeDatabase removes a database file and the files SQLite keeps
// beside it.
func removeDatabase(path string) {
	for _, suffix := range []string{"", "-wal", "-shm", "-journal"} {
		os.Remove(path + suffix)
	}
}
