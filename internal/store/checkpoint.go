package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// restartFrames is the WAL size, in frames, past which Checkpoint stops
// being polite: a passive checkpoint cannot reset a WAL that writers keep
// appending to, so a RESTART checkpoint (which makes the next writer
// start the log over, waiting for readers) bounds it.
const restartFrames = 16384

// restartWait bounds how long a RESTART checkpoint waits for readers and
// the writer (it holds new writers back meanwhile), and restartEvery how
// often one is tried: a reader that keeps its snapshot for minutes (a
// backup) must not stall writes, only let the WAL grow until it is done.
const (
	restartWait  = 20 * time.Millisecond
	restartEvery = time.Second
)

// checkpointer is the connection Checkpoint runs on, opened on first use,
// and the WAL file as StartWriteback opens it.
type checkpointer struct {
	mu          sync.Mutex
	conn        *sql.Conn
	wal         *os.File
	closed      bool
	lastRestart time.Time
	// written has a value once the store has committed since it was
	// last received (see Written).
	written chan struct{}
}

// CheckpointResult is what one checkpoint did, in WAL frames.
type CheckpointResult struct {
	// Busy: a lock kept the checkpoint from running (to completion).
	Busy bool
	// Log is the WAL's size and Done how much of it is now in the
	// database file.
	Log, Done int64
	// Restarted: the WAL had grown past restartFrames and was restarted.
	Restarted bool
}

// Checkpoint copies committed WAL frames into the database file on a
// connection of its own, concurrently with writers. With
// Config.ManualCheckpoint a commit never checkpoints, so that copying,
// whose cost grows with the database, stays off the single writer; the
// owner calls this instead, from a loop of its own.
func (s *Store) Checkpoint(ctx context.Context) (CheckpointResult, error) {
	c := &s.ckpt
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return CheckpointResult{}, ErrClosed
	}
	if c.conn == nil {
		conn, err := s.ckptDB.Conn(ctx)
		if err != nil {
			return CheckpointResult{}, fmt.Errorf("checkpoint: %w", err)
		}
		if _, err := conn.ExecContext(ctx, fmt.Sprintf("PRAGMA busy_timeout = %d", restartWait.Milliseconds())); err != nil {
			conn.Close()
			return CheckpointResult{}, fmt.Errorf("checkpoint: %w", err)
		}
		c.conn = conn
	}
	res, err := c.run(ctx, "PASSIVE")
	if err == nil && res.Log > restartFrames && time.Since(c.lastRestart) >= restartEvery {
		c.lastRestart = time.Now()
		res, err = c.run(ctx, "RESTART")
		res.Restarted = err == nil && !res.Busy
	}
	return res, err
}

func (c *checkpointer) run(ctx context.Context, mode string) (CheckpointResult, error) {
	var busy int
	var res CheckpointResult
	if err := c.conn.QueryRowContext(ctx, "PRAGMA wal_checkpoint("+mode+")").Scan(&busy, &res.Log, &res.Done); err != nil {
		return CheckpointResult{}, fmt.Errorf("checkpoint %s: %w", mode, err)
	}
	res.Busy = busy != 0
	return res, nil
}

// commit commits the transaction open on c, and tells Written about it.
// Every commit of the live database goes through here.
func (s *Store) commit(ctx context.Context, c execer) error {
	if _, err := c.ExecContext(ctx, "COMMIT"); err != nil {
		return err
	}
	select {
	case s.ckpt.written <- struct{}{}:
	default: // one already waiting says the same
	}
	return nil
}

// Written delivers once the store has committed since it last delivered
// (at most one delivery waits). The owner of Checkpoint and
// StartWriteback uses it to sleep while nothing is being written, rather
// than waking on a timer to find a WAL with nothing new in it. What the
// store wrote as it opened is not announced: call Checkpoint once at
// the start.
func (s *Store) Written() <-chan struct{} { return s.ckpt.written }

// StartWriteback asks the kernel to start writing the WAL's dirty pages to
// disk, and returns without waiting for them. A checkpoint begins by
// syncing the WAL: called between checkpoints, this leaves that fsync
// little to do, so the disk writes come in small steps rather than in
// one burst a checkpoint long. (Durability still comes from the
// checkpoint's own fsync; this only changes when the pages go out.)
// Before the WAL exists it does nothing.
func (s *Store) StartWriteback() error {
	c := &s.ckpt
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return ErrClosed
	}
	if c.wal == nil {
		// Beside the file a symbolic link names, as SQLite puts it.
		path, err := filepath.EvalSymlinks(s.cfg.Path)
		if err != nil {
			return fmt.Errorf("writeback: %w", err)
		}
		f, err := os.Open(path + "-wal")
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("writeback: %w", err)
		}
		c.wal = f
	}
	if err := startWriteback(c.wal); err != nil {
		return fmt.Errorf("writeback %s: %w", c.wal.Name(), err)
	}
	return nil
}

// close closes the checkpoint connection and the WAL file; Checkpoint and
// StartWriteback fail from then on.
func (c *checkpointer) close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	if c.wal != nil {
		errs = append(errs, c.wal.Close())
	}
	if c.conn != nil {
		errs = append(errs, c.conn.Close())
	}
	return errors.Join(errs...)
}
