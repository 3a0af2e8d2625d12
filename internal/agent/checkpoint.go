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

// checkpointLoop checkpoints the store's WAL, and starts its writeback in
// between, until ctx ends.
func checkpointLoop(ctx context.Context, st *store.Store, beat *watchdog.Beat, log *slog.Logger) {
	defer beat.Stop()
	t := time.NewTicker(writebackEvery)
	defer t.Stop()
	ticks := 0
	failing, writebackFailing := false, false
	for watchdog.Wait(ctx, beat, t.C) {
		ticks++
		if ticks%int(checkpointEvery/writebackEvery) != 0 {
			err := st.StartWriteback()
			switch {
			case errors.Is(err, store.ErrClosed) || ctx.Err() != nil:
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
			return
		case err != nil && !failing:
			log.Warn("WAL checkpoint failed", "err", err)
		case res.Restarted:
			log.Debug("WAL restarted", "frames", res.Log)
		}
		failing = err != nil
	}
}
