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

// checkpointLoop checkpoints the store's WAL until ctx ends.
func checkpointLoop(ctx context.Context, st *store.Store, beat *watchdog.Beat, log *slog.Logger) {
	defer beat.Stop()
	t := time.NewTicker(checkpointEvery)
	defer t.Stop()
	failing := false
	for watchdog.Wait(ctx, beat, t.C) {
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
