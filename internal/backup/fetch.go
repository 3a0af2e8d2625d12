package backup

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/internal/store"
)

// Fetched describes a backup file Fetch wrote.
type Fetched struct {
	Path   string
	Bytes  int64
	Actor  crdt.ActorID // of the node the snapshot came from
	Tables []string
}

// Fetch streams a snapshot from the agent src talks to into out. It writes out.tmp, syncs
// it, checks it (SQLite's integrity check, and that it is a patina
// database of this version's format), and only then renames it to out. On
// any failure nothing is left at out or out.tmp. An existing out is not
// overwritten.
func Fetch(ctx context.Context, src *client.Client, out string) (*Fetched, error) {
	if _, err := os.Lstat(out); err == nil {
		return nil, fmt.Errorf("backup: %s exists; choose another name or remove it", out)
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("backup: %w", err)
	}
	tmp := out + ".tmp"
	// Exclusive: two backups to the same name would write one file.
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil, fmt.Errorf("backup: %s exists: another backup to %s is under way, or one died midway (then remove it)", tmp, out)
	}
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	done := false
	defer func() {
		if !done {
			f.Close()
			os.Remove(tmp)
		}
	}()
	got, err := src.Backup(ctx, f)
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	if err := f.Sync(); err != nil {
		return nil, fmt.Errorf("backup: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	info, err := store.CheckFile(ctx, tmp)
	if err != nil {
		return nil, fmt.Errorf("backup: the snapshot received is unusable: %w", err)
	}
	if err := publish(tmp, out); err != nil {
		return nil, err
	}
	done = true
	if err := syncDir(filepath.Dir(out)); err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return &Fetched{Path: out, Bytes: got.Bytes, Actor: info.Actor, Tables: info.Tables}, nil
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// publish gives the finished copy tmp its name out. A link, not a
// rename: it fails if out appeared meanwhile, where a rename would
// replace it. On a file system without hard links it renames, after
// looking once more.
func publish(tmp, out string) error {
	err := os.Link(tmp, out)
	switch {
	case errors.Is(err, os.ErrExist):
		return fmt.Errorf("backup: %s exists; choose another name or remove it", out)
	case err == nil:
		if err := os.Remove(tmp); err != nil {
			return fmt.Errorf("backup: %w", err)
		}
		return nil
	}
	if _, serr := os.Lstat(out); serr == nil {
		return fmt.Errorf("backup: %s exists; choose another name or remove it", out)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	return nil
}
