package agent

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/store"
)

// fakeWAL counts what the checkpoint loop asks of the store, and tells the
// test each time the loop goes to wait for a commit.
type fakeWAL struct {
	written     chan struct{}
	waiting     chan struct{}
	writebacks  atomic.Int64
	checkpoints atomic.Int64
	failNext    atomic.Bool
	heldNext    atomic.Bool // a reader keeps the next checkpoint from copying
}

func (f *fakeWAL) Written() <-chan struct{} {
	f.waiting <- struct{}{}
	return f.written
}

func (f *fakeWAL) StartWriteback() error {
	f.writebacks.Add(1)
	return nil
}

func (f *fakeWAL) Checkpoint(context.Context) (store.CheckpointResult, error) {
	f.checkpoints.Add(1)
	if f.failNext.Swap(false) {
		return store.CheckpointResult{}, errors.New("disk on fire")
	}
	if f.heldNext.Swap(false) {
		// What SQLite's PASSIVE checkpoint reports when a reader's
		// snapshot keeps it from copying (and syncing) anything.
		return store.CheckpointResult{Log: 10, Done: 0}, nil
	}
	return store.CheckpointResult{Log: 10, Done: 10}, nil
}

// TestCheckpointLoopSleepsUntilWritten: a round (writebacks, then a
// checkpoint) at the start, one per commit after that, another at once
// after a failed checkpoint or one a reader held back, and none while
// nothing is written: the loop waits for the store's next commit.
func TestCheckpointLoopSleepsUntilWritten(t *testing.T) {
	f := &fakeWAL{written: make(chan struct{}, 1), waiting: make(chan struct{}, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		checkpointLoop(ctx, f, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	}()
	perRound := int64(checkpointEvery/writebackEvery) - 1
	waitIdle := func(rounds int64) {
		t.Helper()
		select {
		case <-f.waiting:
		case <-time.After(10 * time.Second):
			t.Fatalf("the loop never went to wait for a commit (%d checkpoints, %d writebacks)", f.checkpoints.Load(), f.writebacks.Load())
		}
		if cp, wb := f.checkpoints.Load(), f.writebacks.Load(); cp != rounds || wb != rounds*perRound {
			t.Fatalf("waiting after %d checkpoints and %d writebacks, want %d and %d", cp, wb, rounds, rounds*perRound)
		}
	}
	waitIdle(1) // the opening round, with no commit
	f.written <- struct{}{}
	waitIdle(2)
	f.failNext.Store(true)
	f.written <- struct{}{}
	waitIdle(4) // the failed round, then one more without a commit
	// A checkpoint that a reader (a backup, a long query) kept from
	// copying the WAL synced nothing: like a failed one, it is followed
	// by another round without waiting for a commit that may never come.
	f.heldNext.Store(true)
	f.written <- struct{}{}
	waitIdle(6)
	cancel()
	<-done
}
