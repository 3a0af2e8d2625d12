// Package bridge owns the summary of one region in the global cluster:
// it follows the region's machines and checks through a subscription on a
// regional agent, keeps per-app counts, and writes the region's
// app_regions rows, its directory row and its heartbeat to the global
// cluster. It writes only what changed, at most once per flush interval,
// with statements that change no cell when the global rows already say
// the same, so that two bridges of one region add nothing to each other.
// It never writes another region's rows and never writes to the regional
// cluster.
package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"
)

// Bridge summarizes one region into the global cluster.
type Bridge struct {
	cfg    Config
	log    *slog.Logger
	global *globalAgents

	// replaced is signalled when fresh aggregates are in place.
	replaced chan struct{}

	mu         sync.Mutex
	agg        *Aggregates // nil until a subscription's rows have all arrived
	gen        uint64      // bumped at every change to agg
	following  bool        // a subscription is delivering changes to agg
	flushedGen uint64      // gen of the aggregates written last
	stats      Stats
	badLogged  time.Time // when a bad row was last logged

	// written is the region's global rows as last read or written, nil
	// before the first reconcile. Owned by the writer loop.
	written map[string]Counts
}

// Stats is what a bridge has done, for tests and operators.
type Stats struct {
	// RegionAgent is the regional agent followed (or being tried).
	RegionAgent string
	// GlobalAgent is the global agent written to first.
	GlobalAgent string
	// Following is true while a subscription delivers the region's changes.
	Following bool
	// Failovers counts the regional agents given up.
	Failovers int
	// Apps is the number of apps the region has; Rows the subscription's rows.
	Apps, Rows int
	// Changes counts the subscription's change events applied.
	Changes uint64
	// Reconciles counts the reads of the region's global rows.
	Reconciles int
	// FlushTicks counts the flush intervals that passed.
	FlushTicks int
	// GlobalTries counts the requests started to global agents, answered
	// or not: each is bounded by [global] timeout.
	GlobalTries uint64
	// Unflushed is true when the counts changed since the last flush.
	Unflushed bool
	// Flushes counts the transactions that wrote counts; Versions those of
	// them that changed a cell (the others found the rows already right).
	Flushes, Versions int
	// RowsWritten is the app_regions rows those transactions changed.
	RowsWritten int64
	// LastFlush is when the last of them committed.
	LastFlush time.Time
	// BadRows counts the rows left out of the counts (see ErrBadRow).
	BadRows int
	// Heartbeats counts the directory and heartbeat transactions.
	Heartbeats int
	// LastHeartbeat is when the last of them committed.
	LastHeartbeat time.Time
}

// New checks cfg and prepares a bridge; Run starts it.
func New(cfg Config, logger *slog.Logger) (*Bridge, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("bridge", cfg.Bridge.Name, "region", cfg.Bridge.Region)
	g, err := newGlobalAgents(cfg.Global, logger)
	if err != nil {
		return nil, fmt.Errorf("bridge: %w", err)
	}
	return &Bridge{cfg: cfg, log: logger, global: g, replaced: make(chan struct{}, 1)}, nil
}

// Run follows the region and writes its summary until ctx ends; it
// returns nil then. Unreachable agents are retried, never fatal.
func (b *Bridge) Run(ctx context.Context) error {
	b.log.Info("bridge starting", "region_agents", b.cfg.Region.Agents, "global_agents", b.cfg.Global.Agents,
		"flush_interval", b.cfg.Bridge.FlushInterval)
	if len(b.cfg.Directory.Lookup) == 0 {
		b.log.Warn("directory.lookup is empty: other regions cannot ask this one for its machines")
	}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return b.follow(ctx) })
	g.Go(func() error { return b.write(ctx) })
	err := g.Wait()
	b.log.Info("bridge stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// Stats returns a copy of the bridge's counters.
func (b *Bridge) Stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.stats
	s.Following = b.following
	s.Unflushed = b.agg != nil && b.gen != b.flushedGen
	if b.agg != nil {
		s.Apps = len(b.agg.apps)
		s.Rows = b.agg.Len()
	}
	s.GlobalAgent = b.global.Current()
	s.GlobalTries = b.global.tries.Load()
	return s
}

// Progress advances while the bridge works: at every flush interval, and
// with every request to a global agent. A global tier that does not
// answer blocks the write loop for up to [global] timeout per agent and
// operation, which is not the bridge hanging; progress goes on with each
// attempt.
func (b *Bridge) Progress() uint64 {
	s := b.Stats()
	return uint64(s.FlushTicks) + s.GlobalTries
}

// Apps returns the per-app counts the bridge holds for its region; nil
// before a subscription's rows have all arrived.
func (b *Bridge) Apps() map[string]Counts {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.agg == nil {
		return nil
	}
	return b.agg.Apps()
}

func (b *Bridge) setRegionAgent(url string) {
	b.mu.Lock()
	b.stats.RegionAgent = url
	b.mu.Unlock()
}

func (b *Bridge) countFailover() {
	b.mu.Lock()
	b.stats.Failovers++
	b.following = false
	b.mu.Unlock()
}

// replaceAggregates puts a subscription's rows in place of the
// aggregates built from an earlier one.
func (b *Bridge) replaceAggregates(fresh *Aggregates, url string) {
	b.mu.Lock()
	b.agg = fresh
	b.gen++
	b.following = true
	apps := len(fresh.apps)
	b.mu.Unlock()
	b.log.Info("following regional agent", "agent", url, "rows", fresh.Len(), "apps", apps)
	select {
	case b.replaced <- struct{}{}:
	default:
	}
}

// applyChange applies one change event of the subscription.
func (b *Bridge) applyChange(kind string, rowid int64, cells []any) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.Changes++
	b.gen++
	if kind == "delete" {
		b.agg.Delete(rowid)
		return nil
	}
	return b.agg.Put(rowid, cells)
}

// badRow notes a row left out of the counts (see ErrBadRow): counted,
// and logged at most once a minute, since every agent will send it again.
func (b *Bridge) badRow(url string, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stats.BadRows++
	if now := time.Now(); now.Sub(b.badLogged) >= time.Minute {
		b.badLogged = now
		b.log.Warn("bridge: a row of the region is not a machine row: left out of the counts", "agent", url, "rows_so_far", b.stats.BadRows, "err", err)
	}
}

// write is the loop that writes to the global cluster: flushes,
// reconciles and heartbeats, one at a time.
func (b *Bridge) write(ctx context.Context) error {
	flush := time.NewTicker(b.cfg.Bridge.FlushInterval)
	defer flush.Stop()
	heartbeat := time.NewTicker(b.cfg.Bridge.HeartbeatInterval)
	defer heartbeat.Stop()
	reconcile := time.NewTicker(b.cfg.Bridge.ReconcileInterval)
	defer reconcile.Stop()
	// announced: the region's first heartbeat went out. It goes once the
	// first rows are in and the global cluster's were read, whichever
	// branch reads them: a flush tick can get there before the branch
	// for the first rows runs.
	announced := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-b.replaced:
			if !announced {
				// The first rows are in: start from what the global
				// cluster holds, correct it, and announce the region.
				if b.written == nil {
					b.reconcile(ctx)
				}
				b.flush(ctx)
				b.heartbeat(ctx)
				announced = true
			}
		case <-flush.C:
			b.mu.Lock()
			b.stats.FlushTicks++
			b.mu.Unlock()
			if b.written == nil {
				b.reconcile(ctx)
			}
			b.flush(ctx)
			if !announced && b.written != nil {
				b.heartbeat(ctx)
				announced = true
			}
		case <-reconcile.C:
			// Corrections go out with the next flush.
			b.reconcile(ctx)
		case <-heartbeat.C:
			b.heartbeat(ctx)
		}
	}
}

// reconcile reads the region's rows back from the global cluster; the
// next flush writes whatever differs from the region's truth, and
// deletes the rows of apps the region no longer has.
func (b *Bridge) reconcile(ctx context.Context) {
	b.mu.Lock()
	ready := b.agg != nil
	b.mu.Unlock()
	if !ready {
		return
	}
	b.global.preferNearest()
	rows, err := b.global.ReadRegion(ctx, b.cfg.Bridge.Region)
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("reconcile: reading the region's global rows failed; retrying later", "err", err)
		}
		return
	}
	b.written = rows
	b.mu.Lock()
	b.flushedGen = 0 // compare everything at the next flush
	b.stats.Reconciles++
	b.mu.Unlock()
}

// flush writes the counts that changed since the last flush, in one
// transaction, or nothing. A bridge that lost its region (no agent
// delivers its changes) writes nothing: its counts say what the region
// was when it lost it, and written after a reconcile they would undo a
// working bridge's rows. Its rows stay as the other bridges leave them.
func (b *Bridge) flush(ctx context.Context) {
	b.mu.Lock()
	if b.agg == nil || !b.following || b.written == nil || b.gen == b.flushedGen {
		b.mu.Unlock()
		return
	}
	gen := b.gen
	current := b.agg.Apps()
	b.mu.Unlock()

	upserts, gone := diff(b.written, current)
	if len(upserts) == 0 && len(gone) == 0 {
		b.mu.Lock()
		b.flushedGen = gen
		b.mu.Unlock()
		return
	}
	now := time.Now()
	stmts := flushStatements(b.cfg.Bridge.Region, upserts, gone, now.UnixMilli())
	res, err := b.global.Transact(ctx, "flush", stmts)
	if err != nil {
		if ctx.Err() == nil {
			b.log.Warn("flush failed; retrying at the next", "apps", len(upserts)+len(gone), "err", err)
		}
		return
	}
	b.written = current
	var rows int64
	for _, r := range res.Results {
		if r.RowsAffected != nil {
			rows += *r.RowsAffected
		}
	}
	b.mu.Lock()
	b.flushedGen = gen
	b.stats.Flushes++
	if res.Version != nil {
		b.stats.Versions++
	}
	b.stats.RowsWritten += rows
	b.stats.LastFlush = time.Now()
	b.mu.Unlock()
	b.log.Debug("flushed", "upserts", len(upserts), "deletes", len(gone), "rows_changed", rows, "version", res.Version)
}

// heartbeat refreshes the region's directory row and heartbeat while the
// bridge follows the region: a stale heartbeat tells operators and
// readers that the region's rows may be stale too.
func (b *Bridge) heartbeat(ctx context.Context) {
	b.mu.Lock()
	following := b.following
	b.mu.Unlock()
	if !following {
		return
	}
	now := time.Now()
	stmts := directoryStatements(b.cfg.Bridge.Region, b.cfg.Directory, b.cfg.Region.Agents, now.UnixMilli(), b.cfg.Bridge.HeartbeatInterval.Milliseconds())
	if _, err := b.global.Transact(ctx, "heartbeat", stmts); err != nil {
		if ctx.Err() == nil {
			b.log.Warn("heartbeat failed", "err", err)
		}
		return
	}
	b.mu.Lock()
	b.stats.Heartbeats++
	b.stats.LastHeartbeat = time.Now()
	b.mu.Unlock()
}
