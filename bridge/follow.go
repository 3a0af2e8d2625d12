package bridge

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/patina-db/patina/client"
)

// follow keeps the region's aggregates current: it subscribes to one
// regional agent after another, starting with the first, until ctx ends.
// A fresh subscription starts from its rows, so each one rebuilds the
// aggregates whole before they replace the previous ones.
func (b *Bridge) follow(ctx context.Context) error {
	agents := b.cfg.Region.Agents
	failures := 0 // consecutive agents that failed before delivering their rows
	for i := 0; ctx.Err() == nil; i = (i + 1) % len(agents) {
		url := agents[i]
		b.setRegionAgent(url)
		gotRows, err := b.followAgent(ctx, url)
		if ctx.Err() != nil {
			return nil
		}
		b.countFailover()
		b.log.Warn("regional agent lost; following the next", "agent", url, "err", err)
		if gotRows {
			failures = 0
		} else {
			failures++
		}
		// After a round of agents that all failed, wait before the next:
		// the region may be restarting.
		if failures >= len(agents) {
			wait := min(time.Duration(failures/len(agents))*500*time.Millisecond, 5*time.Second)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(wait):
			}
		}
	}
	return nil
}

// followAgent follows the subscription on one agent until it ends, the
// agent stays unreachable for failover_after, or ctx ends. gotRows
// reports whether the subscription's rows all arrived.
func (b *Bridge) followAgent(ctx context.Context, url string) (gotRows bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watch := &reachability{base: http.DefaultTransport, after: b.cfg.Region.FailoverAfter, lost: cancel}
	c, err := client.NewWithHTTP(url, b.cfg.Region.Token, &http.Client{Transport: watch})
	if err != nil {
		return false, err
	}
	// The probe has its own client: its answers must not hide the
	// subscription's failures from watch.
	pc, _ := client.New(url, b.cfg.Region.Token)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		b.probe(ctx, pc, cancel)
	}()
	defer wg.Wait()
	defer cancel(nil)

	sub, err := c.Subscribe(ctx, client.Statement{Query: SubscriptionQuery})
	if err != nil {
		return false, fmt.Errorf("bridge: subscribe on %s: %w", url, cause(ctx, err))
	}
	defer sub.Close()
	sub.MaxBackoff = max(b.cfg.Region.FailoverAfter/4, 10*time.Millisecond)
	fresh := NewAggregates()
	for sub.Next() {
		ev := sub.Event()
		switch {
		case ev.Row != nil:
			if err := fresh.Put(ev.Row.RowID, ev.Row.Cells); err != nil {
				b.badRow(url, err)
			}
		case ev.Ready:
			b.replaceAggregates(fresh, url)
			gotRows = true
		case ev.Change != nil:
			if err := b.applyChange(ev.Change.Kind, ev.Change.RowID, ev.Change.Cells); err != nil {
				b.badRow(url, err)
			}
		}
	}
	if err := sub.Err(); err != nil {
		return gotRows, fmt.Errorf("bridge: subscription on %s: %w", url, err)
	}
	return gotRows, cause(ctx, errors.New("subscription ended"))
}

// cause prefers the reason the follower's context was cancelled.
func cause(ctx context.Context, err error) error {
	if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
		return c
	}
	return err
}

// probe asks the followed agent for its health every failover_after: a
// stream can sit idle on a connection to a host that vanished, and only
// a request notices. Two failed probes in a row give the agent up.
func (b *Bridge) probe(ctx context.Context, c *client.Client, lost context.CancelCauseFunc) {
	every := b.cfg.Region.FailoverAfter
	t := time.NewTicker(every)
	defer t.Stop()
	failed := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, every)
		_, err := c.Health(pctx, "")
		cancel()
		if ctx.Err() != nil {
			return
		}
		var apiErr *client.Error
		if err == nil || (errors.As(err, &apiErr) && apiErr.Status == http.StatusServiceUnavailable) {
			failed = 0 // it answers
			continue
		}
		if failed++; failed >= 2 {
			lost(fmt.Errorf("health probes failing: %w", err))
			return
		}
	}
}

// reachability watches the requests a subscription makes while it
// resumes: when they have failed (no answer, or a 5xx) without a break
// for longer than after, the agent is given up.
type reachability struct {
	base  http.RoundTripper
	after time.Duration
	lost  context.CancelCauseFunc

	mu           sync.Mutex
	failingSince time.Time
}

func (r *reachability) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.base.RoundTrip(req)
	failed := err != nil || resp.StatusCode >= 500
	if req.Context().Err() != nil {
		return resp, err // our own cancellation, not the agent's failure
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case !failed:
		r.failingSince = time.Time{}
	case r.failingSince.IsZero():
		r.failingSince = time.Now()
	case time.Since(r.failingSince) >= r.after:
		why := err
		if why == nil {
			why = errors.New(resp.Status)
		}
		r.lost(fmt.Errorf("failing for over %s: %w", r.after, why))
	}
	return resp, err
}
