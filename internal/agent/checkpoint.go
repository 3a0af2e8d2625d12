package agent

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/internal/watchdog"
)

// checkpointEvery is how often the WAL is copied into the database file.
// Commits never checkpoint (store.Config.ManualCheckpoint): this loop
// does, on a connection of its own, so the copying runs beside the
// writer instead of inside its commits. Each checkpoint that copies
// anything syncs the WAL and the database file, and a page written by
// several commits between two checkpoints is copied once: every 250 ms
// rather than every 50 ms took about a quarter off the system time of a
// reseed. At a reseed's pace the WAL then holds a few thousand frames at
// most, well under the point where Checkpoint restarts it.
const checkpointEvery = 250 * time.Millisecond

// writebackEvery is how often, between checkpoints, the loop has the
// kernel start writing the WAL out (store.StartWriteback). Each
// checkpoint begins by syncing the WAL; with 250 ms of a busy region's
// commits dirty (several MB), that fsync took about 10 ms, and writes
// that ran meanwhile had a p99 several times that of the rest. Written
// out as it grows, the WAL leaves the fsync little to do: checkpoints
// went from about 10 ms to 2, and the p99 of a 3-member region at 1,000
// writes/s fell by about a third, at no cost in CPU.
const writebackEvery = 25 * time.Millisecond

// walKeeper is what checkpointLoop needs of the store.
type walKeeper interface {
	Written() <-chan struct{}
	StartWriteback() error
	Checkpoint(context.Context) (store.CheckpointResult, error)
}

// checkpointLoop keeps the store's WAL on disk while the store writes:
// a commit starts a round of checkpointEvery in which the WAL's writeback
// is started every writebackEvery and which ends with a checkpoint, and
// rounds follow one another for as long as commits keep coming. A commit
// waits at most a round for the checkpoint that syncs it, as it did when
// the loop ran on a plain ticker; an agent with nothing to write does
// not wake for it at all (the ticker was more than half of an idle
// agent's CPU).
func checkpointLoop(ctx context.Context, st walKeeper, beat *watchdog.Beat, log *slog.Logger) {
	defer beat.Stop()
	failing, writebackFailing := false, false
	// The first round needs no commit: it covers what the store wrote as
	// it opened. A round whose checkpoint failed, found the WAL locked, or
	// left frames behind (a reader held them) is followed by another
	// without waiting for a commit.
	for again := true; ; {
		if !again && !watchdog.Wait(ctx, beat, st.Written()) {
			return
		}
		t := time.NewTicker(writebackEvery)
		for ticks := 1; ; ticks++ {
			if !watchdog.Wait(ctx, beat, t.C) {
				t.Stop()
				return
			}
			if ticks < int(checkpointEvery/writebackEvery) {
				err := st.StartWriteback()
				switch {
				case errors.Is(err, store.ErrClosed) || ctx.Err() != nil:
					t.Stop()
					return
				case err != nil && !writebackFailing:
					log.Warn("WAL writeback failed", "err", err)
				}
				writebackFailing = err != nil
				continue
			}
			res, err := st.Checkpoint(ctx)
			switch {
			case errors.Is(err, store.ErrClosed) || ctx.Err() != nil:
				t.Stop()
				return
			case err != nil && !failing:
				log.Warn("WAL checkpoint failed", "err", err)
			case res.Restarted:
				log.Debug("WAL restarted", "frames", res.Log)
			}
			failing = err != nil
			// A reader's snapshot (a backup, a long query) can keep a
			// PASSIVE checkpoint from copying, and so from syncing,
			// anything, and SQLite reports no Busy for it: frames left
			// in the WAL are commits not yet on disk.
			again = err != nil || res.Busy || res.Done < res.Log
			break
		}
		t.Stop()
	}
}
