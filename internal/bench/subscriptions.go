package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/devcluster"
)

// SubscriptionsOptions add the subscriptions and the write load.
type SubscriptionsOptions struct {
	Options
	Subscriptions int // one per app, spread over the nodes
	Rate          int // writes per second, spread over the nodes and apps
	Duration      time.Duration
}

// SubscriptionsResult is what `patina bench subscriptions` reports. Every
// latency starts when the write was due (see Pace). Two phases run under the same
// load in the same region: the first without subscriptions (the
// baseline), the second with them.
type SubscriptionsResult struct {
	Nodes     int  `json:"nodes"`
	Processes bool `json:"processes"`
	// Procs is each agent process's GOMAXPROCS (0: agents in process).
	Procs         int     `json:"procs,omitempty"`
	Subscriptions int     `json:"subscriptions"`
	Rate          int     `json:"rate"`
	DurationSec   float64 `json:"duration_s"`
	AchievedRate  float64 `json:"achieved_rate"`
	// Baseline: the write applied on the node that will hold its
	// subscriber, without subscriptions.
	BaselineP50Ms float64 `json:"baseline_applied_p50_ms"`
	BaselineP99Ms float64 `json:"baseline_applied_p99_ms"`
	// With subscriptions: the same, and the subscription's event.
	AppliedP50Ms float64 `json:"applied_p50_ms"`
	AppliedP99Ms float64 `json:"applied_p99_ms"`
	EventP50Ms   float64 `json:"event_p50_ms"`
	EventP99Ms   float64 `json:"event_p99_ms"`
	EventMaxMs   float64 `json:"event_max_ms"`
	// AddedP99Ms is the p99 of event minus baseline-applied p99: what
	// subscriptions add to propagation, their own cost on the nodes
	// included. PerWriteAddedP99Ms is the p99, over writes, of event
	// minus applied on the same node in the same phase.
	AddedP99Ms         float64 `json:"added_p99_ms"`
	PerWriteAddedP99Ms float64 `json:"per_write_added_p99_ms"`
	// Missing counts the events, and NotApplied the update notifications
	// (in both phases), that had not come 30 s after the last write. They
	// are in the quantiles as the time waited for them, a lower bound.
	Missing    int `json:"missing_events"`
	NotApplied int `json:"not_applied,omitempty"`
}

const subsBenchQuery = `SELECT m.id, m.state, c.status FROM machines m LEFT JOIN machine_checks c ON c.machine_id = m.id WHERE m.app = ?`

// Subscriptions measures commit-to-event latency of query subscriptions
// under write load, against plain propagation.
func Subscriptions(ctx context.Context, opts SubscriptionsOptions, progress io.Writer) (*SubscriptionsResult, error) {
	if opts.Rate <= 0 || opts.Duration <= 0 || opts.Nodes < 1 || opts.Subscriptions < 1 {
		return nil, errors.New("bench: rate, duration, nodes and subscriptions must be positive")
	}
	region, err := startRegion(ctx, opts.Options)
	if err != nil {
		return nil, err
	}
	defer region.Stop()
	hc := httpClient()
	clients := make([]*client.Client, len(region.Nodes))
	for i, node := range region.Nodes {
		if clients[i], err = client.NewWithHTTP(node.API, "", hc); err != nil {
			return nil, err
		}
	}
	res := &SubscriptionsResult{Nodes: len(clients), Processes: opts.Binary != "", Procs: opts.agentProcs(), Subscriptions: opts.Subscriptions, Rate: opts.Rate, DurationSec: opts.Duration.Seconds()}

	fmt.Fprintf(progress, "baseline: %d writes/s for %s without subscriptions\n", opts.Rate, opts.Duration)
	base, err := subsPhase(ctx, region, clients, opts, "a", false)
	if err != nil {
		return nil, err
	}
	res.BaselineP50Ms, res.BaselineP99Ms = ms(pct(base.applied, 0.50)), ms(pct(base.applied, 0.99))
	res.NotApplied = base.notApplied

	fmt.Fprintf(progress, "with %d subscriptions: %d writes/s for %s\n", opts.Subscriptions, opts.Rate, opts.Duration)
	with, err := subsPhase(ctx, region, clients, opts, "b", true)
	if err != nil {
		return nil, err
	}
	res.AchievedRate = with.rate
	res.AppliedP50Ms, res.AppliedP99Ms = ms(pct(with.applied, 0.50)), ms(pct(with.applied, 0.99))
	res.EventP50Ms, res.EventP99Ms, res.EventMaxMs = ms(pct(with.events, 0.50)), ms(pct(with.events, 0.99)), ms(pct(with.events, 1))
	res.AddedP99Ms = res.EventP99Ms - res.BaselineP99Ms
	res.PerWriteAddedP99Ms = ms(pct(with.added, 0.99))
	res.Missing = with.missing
	res.NotApplied += with.notApplied
	return res, nil
}

type subsPhaseResult struct {
	applied, events, added []time.Duration
	missing, notApplied    int
	rate                   float64
}

// subsPhase writes opts.Rate rows a second, row seq for app seq % S,
// through node seq % n; the subscriber of app a follows on node a % n.
// It times each row to its update notification on that node and, with
// subscriptions, to its subscription event.
func subsPhase(ctx context.Context, region *devcluster.Region, clients []*client.Client, opts SubscriptionsOptions, prefix string, withSubs bool) (*subsPhaseResult, error) {
	n, apps := len(clients), opts.Subscriptions
	total := max(int(float64(opts.Rate)*opts.Duration.Seconds()), 1)
	holder := func(seq int) int { return (seq % apps) % n }
	sent := make([]time.Time, total)
	applied := make([]time.Time, total)
	event := make([]time.Time, total)
	var mu sync.Mutex
	var subErr error // a subscription that ended before the phase did
	fctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	follow, err := followRows(fctx, clients, prefix, total, func(node, seq int, now time.Time) {
		if holder(seq) != node {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if applied[seq].IsZero() {
			applied[seq] = now
		}
	})
	defer func() {
		stop()
		follow.Wait()
		wg.Wait()
	}()
	if err != nil {
		return nil, err
	}
	if withSubs {
		for a := 0; a < apps; a++ {
			sub, err := clients[a%n].Subscribe(fctx, client.Statement{Query: subsBenchQuery, Params: []any{fmt.Sprintf("app%03d", a)}})
			if err != nil {
				return nil, fmt.Errorf("bench: subscribe: %w", err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer sub.Close()
				for sub.Next() {
					ch := sub.Event().Change
					if ch == nil || ch.Kind != "insert" || len(ch.Cells) == 0 {
						continue
					}
					now := time.Now()
					if seq, ok := rowSeq(ch.Cells[0], prefix, total); ok {
						mu.Lock()
						if event[seq].IsZero() {
							event[seq] = now
						}
						mu.Unlock()
					}
				}
				if fctx.Err() == nil {
					mu.Lock()
					if subErr == nil {
						subErr = fmt.Errorf("bench: the subscription of app%03d ended: %v", a, sub.Err())
					}
					mu.Unlock()
				}
			}()
		}
	}
	elapsed, err := Pace(ctx, opts.Rate, total, func(seq int, t0 time.Time) error {
		mu.Lock()
		sent[seq] = t0
		mu.Unlock()
		_, err := clients[seq%n].Transact(ctx, client.Statement{
			Query:  "INSERT INTO machines (id, app, state, updated_at) VALUES (?, ?, 'started', ?)",
			Params: []any{fmt.Sprintf("%s%d", prefix, seq), fmt.Sprintf("app%03d", seq%apps), t0.UnixMilli()},
		})
		return err
	})
	if err != nil {
		return nil, err
	}
	// Wait for the stragglers, up to a bound.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		mu.Lock()
		done := true
		for seq := 0; seq < total && done; seq++ {
			done = !applied[seq].IsZero() && (!withSubs || !event[seq].IsZero())
		}
		mu.Unlock()
		if done {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	waited := time.Now()
	if err := follow.Err(); err != nil {
		return nil, err
	}
	mu.Lock()
	err = subErr
	mu.Unlock()
	if err != nil {
		return nil, err
	}
	stop()
	mu.Lock()
	defer mu.Unlock()
	// What never came stays in the quantiles, as the time waited for it.
	out := &subsPhaseResult{rate: float64(total) / elapsed.Seconds()}
	for seq := 0; seq < total; seq++ {
		gotApplied := !applied[seq].IsZero()
		if !gotApplied {
			out.notApplied++
			applied[seq] = waited
		}
		out.applied = append(out.applied, applied[seq].Sub(sent[seq]))
		if !withSubs {
			continue
		}
		if event[seq].IsZero() {
			out.missing++
			out.events = append(out.events, waited.Sub(sent[seq]))
			continue
		}
		out.events = append(out.events, event[seq].Sub(sent[seq]))
		if gotApplied {
			out.added = append(out.added, max(event[seq].Sub(applied[seq]), 0))
		}
	}
	return out, nil
}

// Pace calls write for seq 0..total-1 at rate a second, from a pool of
// workers so that a slow request does not delay the next, and returns how
// long it took. due is when the schedule says write seq goes out: a
// latency is timed from it, not from when a worker got to it, so that
// writes that queued behind slow ones (every worker busy) or behind a late
// dispatcher count their wait (no coordinated omission).
func Pace(ctx context.Context, rate, total int, write func(seq int, due time.Time) error) (time.Duration, error) {
	type job struct {
		seq int
		due time.Time
	}
	jobs := make(chan job, total)
	var workers sync.WaitGroup
	var writeErr error
	var errOnce sync.Once
	for w := 0; w < 64; w++ {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range jobs {
				if err := write(j.seq, j.due); err != nil {
					errOnce.Do(func() { writeErr = err })
				}
			}
		}()
	}
	start := time.Now()
	interval := time.Duration(float64(time.Second) / float64(rate))
	for seq := 0; seq < total; seq++ {
		if ctx.Err() != nil {
			break
		}
		due := start.Add(time.Duration(seq) * interval)
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		jobs <- job{seq, due}
	}
	close(jobs)
	workers.Wait()
	if writeErr != nil {
		return 0, fmt.Errorf("bench: write: %w", writeErr)
	}
	return time.Since(start), ctx.Err()
}
