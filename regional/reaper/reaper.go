package reaper

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/internal/watchdog"
)

// DB is what the reaper needs of the agent's store.
type DB interface {
	Schema() *store.Schema
	Query(ctx context.Context, st store.Statement) (*store.Rows, error)
	Transact(ctx context.Context, stmts []store.Statement) (*store.TxResult, error)
}

// tables are the tables the reaper reads and writes. Where any is
// missing (not a regional cluster, or one whose schema predates the
// hosts table) it does nothing.
var tables = []string{"hosts", "machines", "machine_checks"}

// Config configures a Reaper.
type Config struct {
	// ForgetAfter is how long a host's row may stand still before its
	// machines are forgotten.
	ForgetAfter time.Duration
	// Interval is how often the hosts table is read (±25%).
	Interval time.Duration
	// Rank is this agent's place among the region's alive agents (0
	// first; nil: 0). All of them watch; the first deletes a host once
	// it is stale, and each later one waits two more intervals, so
	// that normally one agent deletes, and another does if the first
	// does not (it has forgetting off, runs an older version, or is cut
	// off).
	Rank func() int
	// Beat is the loop's watchdog beat; may be nil.
	Beat   *watchdog.Beat
	Logger *slog.Logger
}

// Reaper watches the hosts table and forgets the machines of hosts that
// stopped publishing.
type Reaper struct {
	db    DB
	cfg   Config
	watch Watch

	silent    atomic.Int64  // hosts silent at the last round
	forgotten atomic.Uint64 // hosts this agent forgot
}

// Stats are the reaper's figures for metrics: the hosts that were
// silent (three re-publishes missed) at the last round, and how many
// hosts this agent has forgotten since it started.
func (r *Reaper) Stats() (silent int, forgotten uint64) {
	return int(r.silent.Load()), r.forgotten.Load()
}

// New returns a reaper over db.
func New(db DB, cfg Config) *Reaper {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Second
	}
	return &Reaper{db: db, cfg: cfg}
}

// Run reads the table every interval until ctx ends.
func (r *Reaper) Run(ctx context.Context) {
	defer r.cfg.Beat.Stop()
	for {
		d := r.cfg.Interval*3/4 + rand.N(r.cfg.Interval/2+1)
		t := time.NewTimer(d)
		if !watchdog.Wait(ctx, r.cfg.Beat, t.C) {
			t.Stop()
			return
		}
		if _, err := r.Round(ctx, time.Now()); err != nil && ctx.Err() == nil {
			r.cfg.Logger.Warn("hosts: reading or forgetting failed", "err", err)
		}
	}
}

// Round reads the hosts table at now and forgets every host stale for
// this agent's turn (see Config.Rank): its machines, their checks and
// its row. It returns the hosts forgotten.
func (r *Reaper) Round(ctx context.Context, now time.Time) ([]string, error) {
	sc := r.db.Schema()
	for _, t := range tables {
		if sc.Tables[t] == nil {
			return nil, nil
		}
	}
	rows, err := r.db.Query(ctx, store.Statement{SQL: "SELECT name, seen_at, republish_ms FROM hosts"})
	if err != nil {
		return nil, fmt.Errorf("read hosts: %w", err)
	}
	seen := map[string]Seen{}
	for rows.Next() {
		var name string
		var at, ms int64
		if err := rows.Scan(&name, &at, &ms); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read hosts: %w", err)
		}
		seen[name] = Seen{At: at, Interval: time.Duration(ms) * time.Millisecond}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read hosts: %w", err)
	}
	r.watch.Observe(seen, now)
	r.silent.Store(int64(r.watch.Silent(now)))
	var extra time.Duration
	if r.cfg.Rank != nil {
		extra = time.Duration(r.cfg.Rank()) * 2 * r.cfg.Interval
	}
	stale, _ := r.watch.Stale(now, r.cfg.ForgetAfter, extra)
	if len(stale) == 0 {
		return nil, nil
	}
	var forgotten []string
	for _, host := range stale {
		res, err := r.db.Transact(ctx, forgetStatements(host, seen[host].At))
		if err != nil {
			return forgotten, fmt.Errorf("forget host %s: %w", host, err)
		}
		if res.Results[2].RowsAffected == 0 {
			continue // a heartbeat came meanwhile: the host is back
		}
		r.cfg.Logger.Warn("hosts: forgot a host that stopped publishing, and its machines",
			"host", host, "machines", res.Results[1].RowsAffected, "after", r.cfg.ForgetAfter.String(),
			"last_seen_at", time.UnixMilli(seen[host].At).UTC().Format(time.RFC3339))
		forgotten = append(forgotten, host)
		r.forgotten.Add(1)
	}
	return forgotten, nil
}

// forgetStatements delete a host's machines, their checks and its row,
// all only while its row still holds the stamp that went stale: a
// heartbeat that arrived since keeps everything. One transaction, so
// the check and the deletes see the same state.
func forgetStatements(host string, seenAt int64) []store.Statement {
	const still = "EXISTS (SELECT 1 FROM hosts WHERE name = ?1 AND seen_at = ?2)"
	return []store.Statement{
		{SQL: "DELETE FROM machine_checks WHERE machine_id IN (SELECT id FROM machines WHERE host = ?1) AND " + still, Args: []any{host, seenAt}},
		{SQL: "DELETE FROM machines WHERE host = ?1 AND " + still, Args: []any{host, seenAt}},
		{SQL: "DELETE FROM hosts WHERE name = ?1 AND seen_at = ?2", Args: []any{host, seenAt}},
	}
}
