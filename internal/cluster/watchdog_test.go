package cluster_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/cluster"
	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/internal/watchdog"
)

// TestStalledApplyLoopFiresTheWatchdog: the loops of an idle member are
// never taken for stalled; a stall injected into the apply loop makes the
// watchdog fire, naming it; once released, the loop recovers and the
// writes arrive. Lags measured and versions applied are reported.
func TestStalledApplyLoopFiresTheWatchdog(t *testing.T) {
	type stallOf struct {
		node  string
		loops []string
	}
	stalls := make(chan stallOf, 64)
	var mu sync.Mutex
	dogs := map[string]*watchdog.Watchdog{}
	var lags atomic.Int64
	c := newTestCluster(t, 2, func(cfg *cluster.Config) {
		name := cfg.Name
		w := watchdog.New(watchdog.Options{Timeout: 500 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Dump: io.Discard,
			OnStall: func(s watchdog.Stall) { stalls <- stallOf{name, s.Loops} }})
		mu.Lock()
		dogs[name] = w
		mu.Unlock()
		cfg.Watchdog = w
		cfg.OnLag = func(time.Duration) { lags.Add(1) }
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, w := range dogs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.Run(ctx)
		}()
	}
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	c.waitMembers(2)
	writer, peer := c.nodes[0], c.nodes[1]
	write := func(id string) {
		t.Helper()
		if _, err := writer.st.Transact(ctx, []store.Statement{{SQL: "INSERT INTO machines (id) VALUES (?)", Args: []any{id}}}); err != nil {
			t.Fatal(err)
		}
	}
	write("before")
	waitFor(t, 30*time.Second, "the first write to be applied by broadcast", func() bool {
		return peer.node.Stats.Applied.Load() > 0 && lags.Load() > 0
	})
	select {
	case s := <-stalls:
		t.Fatalf("%s: idle loops taken for stalled: %v", s.node, s.loops)
	default:
	}

	release := make(chan struct{})
	c.faults.StallApply(release)
	// A version the peer pulls by sync before its broadcast arrives never
	// wakes the apply loop: keep writing until one arrives by broadcast.
	var got stallOf
	for i := 0; got.node == "" || !slices.Contains(got.loops, "cluster.apply"); i++ {
		if i == 600 {
			t.Fatal("the watchdog never fired on the stalled apply loop")
		}
		write(fmt.Sprint("stalled", i))
		select {
		case got = <-stalls:
		case <-time.After(50 * time.Millisecond):
		}
	}
	if got.node != peer.name {
		t.Fatalf("stall reported by %s, want %s", got.node, peer.name)
	}
	// Only the count, which never goes back (see the watchdog package's
	// real-clock test).
	if dogs[peer.name].Stalls() == 0 {
		t.Fatal("the peer's watchdog does not count the stall")
	}
	close(release)
	c.faults.StallApply(nil)
	waitFor(t, 30*time.Second, "the apply loop to recover", dogs[peer.name].Healthy)
	c.waitConverged(30 * time.Second)
}
