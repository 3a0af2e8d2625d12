package reseed

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/patina-db/patina/client"
)

// Run reseeds the cluster from the sources in opts and says what it did.
// A range that gives up does not stop the others: Run returns when every
// range is done or has given up, with an error naming the failed ranges.
// When ctx ends, Run stops taking ranges, abandons the transactions in
// flight and returns ctx's error; the state file keeps the finished
// ranges for the next run.
func Run(ctx context.Context, opts Options) (Summary, error) {
	start := time.Now()
	opts, err := opts.withDefaults()
	if err != nil {
		return Summary{}, err
	}
	var targets []target
	for _, a := range opts.APIs {
		c, err := client.NewWithHTTP(a, opts.Token, opts.HTTPClient)
		if err != nil {
			return Summary{}, fmt.Errorf("reseed: %w", err)
		}
		targets = append(targets, target{api: a, c: c})
	}
	var src source
	if len(opts.BBolt) > 0 {
		src, err = openBBolt(opts.BBolt, opts.Logger)
	} else {
		src, err = openSQLite(ctx, opts.SQLite, opts.Table)
	}
	if err != nil {
		return Summary{}, err
	}
	defer src.Close()
	if err := checkTarget(ctx, src, targets); err != nil {
		return Summary{}, err
	}

	statePath := opts.StatePath
	if statePath == "" {
		statePath = DefaultStatePath(src.Identity())
	}
	st, err := loadState(statePath, src.Identity())
	if err != nil {
		return Summary{}, err
	}
	if st == nil {
		ranges, err := src.Plan(ctx, opts.Ranges)
		if err != nil {
			return Summary{}, err
		}
		st = &state{Version: stateVersion, Sources: src.Identity(), Ranges: ranges, Done: []int{}}
		if err := st.save(statePath); err != nil {
			return Summary{}, err
		}
	} else {
		opts.Logger.Info("reseed: resuming", "state", statePath, "ranges", len(st.Ranges), "done", len(st.Done))
	}

	r := &run{opts: opts, src: src, targets: targets, st: st, statePath: statePath,
		sum: Summary{Ranges: len(st.Ranges), StatePath: statePath}}
	if opts.Rate > 0 {
		r.limiter = rate.NewLimiter(rate.Limit(opts.Rate), opts.Batch)
	}
	var todo []*rangeRun
	var total int64
	for _, rg := range st.Ranges {
		if st.isDone(rg.Index) {
			r.sum.RangesSkipped++
			r.event(Event{Kind: RangeSkipped, Range: rg.Index})
			continue
		}
		todo = append(todo, &rangeRun{r: rg})
		total += rg.Rows
	}
	r.bar = newProgress(opts.Progress, total)
	r.execute(ctx, todo)
	r.bar.finish()

	r.sum.Elapsed = time.Since(start)
	if secs := r.sum.Elapsed.Seconds(); secs > 0 {
		r.sum.RowsPerSec = float64(r.sum.Rows) / secs
	}
	switch {
	case ctx.Err() != nil:
		return r.sum, fmt.Errorf("reseed: interrupted with %d of %d ranges finished (state in %s: run again to resume): %w",
			r.sum.RangesDone+r.sum.RangesSkipped, r.sum.Ranges, statePath, ctx.Err())
	case r.sum.RangesFailed > 0:
		err := fmt.Errorf("reseed: %d of %d ranges failed", r.sum.RangesFailed, r.sum.Ranges)
		for _, f := range r.sum.Failures {
			err = fmt.Errorf("%w; %s: %s", err, f.Span, f.Err)
		}
		return r.sum, err
	}
	if err := os.Remove(statePath); err != nil && !errors.Is(err, os.ErrNotExist) {
		return r.sum, fmt.Errorf("reseed: every range is done, but the state file stays: %w", err)
	}
	r.sum.StatePath = ""
	return r.sum, nil
}

// checkTarget asks the agents, the first that answers, whether the
// cluster has the tables and columns the source writes.
func checkTarget(ctx context.Context, src source, targets []target) error {
	var errs []error
	for _, t := range targets {
		err := src.CheckTarget(ctx, clusterAPI{t.c})
		var ce *client.Error
		if err == nil || !retryable(err) || errors.As(err, &ce) && ce.Status < 500 {
			return err
		}
		errs = append(errs, fmt.Errorf("%s: %w", t.api, err))
	}
	return fmt.Errorf("reseed: no agent answered: %w", errors.Join(errs...))
}

type target struct {
	api string
	c   *client.Client
}

// run is one Run's shared state.
type run struct {
	opts      Options
	src       source
	targets   []target
	limiter   *rate.Limiter
	bar       *progress
	statePath string

	mu  sync.Mutex // guards st, sum and the event order
	st  *state
	sum Summary
}

// rangeRun is one range in progress; one worker owns it at a time.
type rangeRun struct {
	r      Range
	reader rangeReader
	// pending is the batch being written, kept across attempts.
	pending *batch
	// failures of the pending batch so far.
	failures int
	// agent is the target the range writes to: its index at first, so
	// ranges spread over the agents, and the next one after a failure.
	agent int
}

func (r *run) event(ev Event) {
	if r.opts.OnEvent != nil {
		r.opts.OnEvent(ev)
	}
}

// execute runs the ranges on Parallel workers. A range that fails waits
// its backoff off the workers, so they go on with ready ranges meanwhile.
func (r *run) execute(ctx context.Context, todo []*rangeRun) {
	if len(todo) == 0 {
		return
	}
	ready := make(chan *rangeRun, len(todo))
	for _, rr := range todo {
		ready <- rr
	}
	var mu sync.Mutex
	remaining := len(todo) // ranges neither done nor given up
	finished := make(chan struct{})
	stop, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < min(r.opts.Parallel, len(todo)); w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				var rr *rangeRun
				select {
				case <-stop.Done():
					return
				case <-finished:
					return
				case rr = <-ready:
				}
				delay, again := r.work(stop, rr)
				switch {
				case stop.Err() != nil:
					return
				case again:
					wg.Add(1)
					go func() {
						defer wg.Done()
						t := time.NewTimer(delay)
						defer t.Stop()
						select {
						case <-t.C:
							ready <- rr // never blocks: room for every range
						case <-stop.Done():
						}
					}()
				default:
					mu.Lock()
					remaining--
					if remaining == 0 {
						close(finished)
					}
					mu.Unlock()
				}
			}
		}()
	}
	select {
	case <-finished:
	case <-ctx.Done():
	}
	cancel()
	wg.Wait()
	for _, rr := range todo {
		if rr.reader != nil {
			rr.reader.Close()
		}
	}
}

// work writes a range until it is done (again false), fails an attempt
// that is worth retrying (again true, after delay), or gives up.
func (r *run) work(ctx context.Context, rr *rangeRun) (delay time.Duration, again bool) {
	r.event(Event{Kind: RangeStarted, Range: rr.r.Index})
	if rr.reader == nil && rr.pending == nil {
		rr.agent = rr.r.Index
	}
	for {
		if ctx.Err() != nil {
			return 0, false
		}
		if rr.reader == nil {
			rd, err := r.src.OpenRange(ctx, rr.r)
			if err != nil {
				r.fail(rr, err)
				return 0, false
			}
			rr.reader = rd
		}
		if rr.pending == nil {
			b, err := rr.reader.Next(ctx, r.opts.Batch, r.opts.MaxBodyBytes)
			if err != nil {
				if ctx.Err() == nil {
					r.fail(rr, err)
				}
				return 0, false
			}
			if b == nil {
				r.done(rr)
				return 0, false
			}
			r.mu.Lock()
			r.sum.Corrupt += b.Corrupt
			r.sum.Duplicates += b.Duplicates
			r.mu.Unlock()
			if len(b.Stmts) == 0 {
				continue // every record of the batch was skipped
			}
			if r.limiter != nil {
				if err := r.limiter.WaitN(ctx, min(b.Rows, r.limiter.Burst())); err != nil {
					// Only the run's end (or a deadline it would pass)
					// stops a wait: the range ends with the run.
					<-ctx.Done()
					return 0, false
				}
			}
			rr.pending = b
		}
		t := r.targets[rr.agent%len(r.targets)]
		_, err := t.c.Transact(ctx, rr.pending.Stmts...)
		if ctx.Err() != nil {
			// Abandoned: the agent may or may not commit it; the range
			// is redone by the next run, which upserts the same rows.
			return 0, false
		}
		if err != nil {
			rr.failures++
			rr.agent++
			err = fmt.Errorf("%s: rows %s..%s: %w", t.api, rr.pending.First.describe("?"), rr.pending.Last.describe("?"), err)
			if !retryable(err) || rr.failures >= r.opts.MaxAttempts {
				r.fail(rr, err)
				return 0, false
			}
			d := backoff(rr.failures, r.opts.RetryBase, r.opts.RetryMax, rand.Float64())
			r.mu.Lock()
			r.sum.Retries++
			r.mu.Unlock()
			r.opts.Logger.Warn("reseed: retrying a range", "range", rr.r.String(), "attempt", rr.failures, "after", d, "err", err)
			r.event(Event{Kind: RangeRetry, Range: rr.r.Index, Attempt: rr.failures, API: t.api, Delay: d, Err: err})
			return d, true
		}
		n := rr.pending.Rows
		rr.pending, rr.failures = nil, 0
		r.mu.Lock()
		r.sum.Rows += int64(n)
		r.sum.Transactions++
		r.mu.Unlock()
		r.bar.add(n)
		r.event(Event{Kind: BatchWritten, Range: rr.r.Index, Rows: n, API: t.api})
	}
}

// done records a finished range in the state file.
func (r *run) done(rr *rangeRun) {
	rr.reader.Close()
	rr.reader = nil
	r.mu.Lock()
	r.st.Done = append(r.st.Done, rr.r.Index)
	err := r.st.save(r.statePath)
	r.sum.RangesDone++
	r.mu.Unlock()
	if err != nil {
		// The rows are written; only a resume would redo them.
		r.opts.Logger.Warn("reseed: could not record a finished range", "range", rr.r.String(), "err", err)
	}
	r.event(Event{Kind: RangeDone, Range: rr.r.Index})
}

// fail gives a range up.
func (r *run) fail(rr *rangeRun, err error) {
	if rr.reader != nil {
		rr.reader.Close()
		rr.reader = nil
	}
	r.mu.Lock()
	r.sum.RangesFailed++
	r.sum.Failures = append(r.sum.Failures, RangeFailure{Range: rr.r.Index, Span: rr.r.String(), Attempts: max(rr.failures, 1), Err: err.Error()})
	r.mu.Unlock()
	r.opts.Logger.Error("reseed: range failed", "range", rr.r.String(), "err", err)
	r.event(Event{Kind: RangeFailed, Range: rr.r.Index, Attempt: rr.failures, Err: err})
}
