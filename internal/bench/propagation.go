package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/devcluster"
)

// Options describe the region a benchmark runs against.
type Options struct {
	Nodes int
	// Binary runs agents as processes (`Binary agent`); empty: in process.
	Binary      string
	Dir         string
	SchemaPaths []string
	// Procs is each agent process's GOMAXPROCS (default SharedProcs).
	Procs int
}

// PropagationOptions add the write load.
type PropagationOptions struct {
	Options
	Rate     int // writes per second, spread over the nodes
	Duration time.Duration
	// Stream sends the writes over one transaction stream per node
	// (POST /v1/transactions/stream) instead of one request each.
	Stream bool
}

// PropagationResult is what `patina bench propagation` reports.
type PropagationResult struct {
	Nodes     int  `json:"nodes"`
	Processes bool `json:"processes"`
	// Procs is each agent process's GOMAXPROCS (0: agents in process).
	Procs       int     `json:"procs,omitempty"`
	Rate        int     `json:"rate"`
	Stream      bool    `json:"stream"`
	DurationSec float64 `json:"duration_s"`
	// Writes is the transactions written; Versions the versions they
	// became (transactions committed together share one).
	Writes       int     `json:"writes"`
	Versions     int     `json:"versions"`
	AchievedRate float64 `json:"achieved_rate"`
	VisibleP50Ms float64 `json:"visible_all_p50_ms"`
	VisibleP99Ms float64 `json:"visible_all_p99_ms"`
	VisibleMaxMs float64 `json:"visible_all_max_ms"`
	// CommitVisible*: the same, from the moment the write committed on
	// its agent (the response's committed_at) instead of from the
	// request: replication alone, without the write's own round trip.
	CommitVisibleP50Ms float64 `json:"commit_visible_all_p50_ms"`
	CommitVisibleP99Ms float64 `json:"commit_visible_all_p99_ms"`
	CommitVisibleMaxMs float64 `json:"commit_visible_all_max_ms"`
	AckP50Ms           float64 `json:"ack_p50_ms"`
	AckP99Ms           float64 `json:"ack_p99_ms"`
	BytesPerVersion    float64 `json:"bytes_per_version"`
	NotVisible         int     `json:"not_visible"`
	// ApplyLagP99Ms is the largest of the agents' own p99 replication
	// lags (commit on the writer to apply here, GET /v1/health), which
	// leaves out the change feed and the benchmark client.
	ApplyLagP99Ms float64 `json:"apply_lag_p99_ms"`
}

// startRegion starts the region the options describe and waits until
// every agent has a data-plane connection to every other: a benchmark
// measures a region at work, not its first handshakes.
func startRegion(ctx context.Context, o Options) (*devcluster.Region, error) {
	r, err := devcluster.StartRegion(ctx, devcluster.RegionOptions{Nodes: o.Nodes, Dir: o.Dir, Binary: o.Binary, SchemaPaths: o.SchemaPaths, Procs: o.agentProcs()})
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for _, n := range r.Nodes {
		c := n.Client()
		for {
			s, err := c.ClusterStats(ctx)
			if err == nil && s["connections"] >= uint64(len(r.Nodes)-1) {
				break
			}
			if time.Now().After(deadline) {
				r.Stop()
				return nil, fmt.Errorf("bench: %s has not connected to every other agent (stats %v, err %v)", n.Name, s, err)
			}
			select {
			case <-ctx.Done():
				r.Stop()
				return nil, ctx.Err()
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	return r, nil
}

// agentProcs is each agent process's GOMAXPROCS, 0 for agents in this
// process.
func (o Options) agentProcs() int {
	if o.Binary == "" {
		return 0
	}
	return procsFor(o.Procs, o.Nodes)
}

func httpClient() *http.Client {
	return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxConnsPerHost: 256, IdleConnTimeout: time.Minute}}
}

// Propagation writes Rate rows a second for Duration, each through a
// node's API in turn, and times each from the moment its request is sent
// to the moment the last node's change feed reports it.
func Propagation(ctx context.Context, opts PropagationOptions, progress io.Writer) (*PropagationResult, error) {
	if opts.Rate <= 0 || opts.Duration <= 0 || opts.Nodes < 1 {
		return nil, errors.New("bench: rate, duration and nodes must be positive")
	}
	region, err := startRegion(ctx, opts.Options)
	if err != nil {
		return nil, err
	}
	defer region.Stop()
	n := len(region.Nodes)
	total := int(float64(opts.Rate) * opts.Duration.Seconds())
	if total < 1 {
		total = 1
	}
	fmt.Fprintf(progress, "region of %d nodes up; writing %d rows at %d/s\n", n, total, opts.Rate)

	hc := httpClient()
	clients := make([]*client.Client, n)
	for i, node := range region.Nodes {
		c, err := client.NewWithHTTP(node.API, "", hc)
		if err != nil {
			return nil, err
		}
		clients[i] = c
	}
	transact, closeStreams, err := transactors(ctx, clients, opts.Stream)
	if err != nil {
		return nil, err
	}
	defer closeStreams()
	sent := make([]time.Time, total)
	acked := make([]time.Duration, total)
	committed := make([]time.Time, total) // by the agent's clock, which is this host's
	seen := make([][]time.Time, total)    // [seq][node]
	for i := range seen {
		seen[i] = make([]time.Time, n)
	}
	var mu sync.Mutex
	remaining := total * n
	allSeen := make(chan struct{})

	fctx, stopFollow := context.WithCancel(ctx)
	follow, err := followRows(fctx, clients, "b", total, func(node, seq int, now time.Time) {
		mu.Lock()
		defer mu.Unlock()
		if seen[seq][node].IsZero() {
			seen[seq][node] = now
			remaining--
			if remaining == 0 {
				close(allSeen)
			}
		}
	})
	defer func() {
		stopFollow()
		follow.Wait()
	}()
	if err != nil {
		return nil, err
	}
	before, err := bytesSent(ctx, clients)
	if err != nil {
		return nil, err
	}

	versions := map[string]struct{}{} // actor/version: writes that commit together share one
	elapsed, err := Pace(ctx, opts.Rate, total, func(seq int, t0 time.Time) error {
		transact := transact[seq%n]
		mu.Lock()
		sent[seq] = t0
		mu.Unlock()
		res, err := transact(ctx, client.Statement{Query: "INSERT INTO machines (id, app, state, updated_at) VALUES (?, 'bench', 'started', ?)", Params: []any{fmt.Sprintf("b%d", seq), t0.UnixMilli()}})
		acked[seq] = time.Since(t0)
		if err != nil {
			return err
		}
		if res.CommittedAt == nil {
			return fmt.Errorf("bench: write %d: the answer has no commit time", seq)
		}
		committed[seq] = *res.CommittedAt
		if res.Version != nil {
			mu.Lock()
			versions[res.ActorID+"/"+strconv.FormatUint(*res.Version, 10)] = struct{}{}
			mu.Unlock()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := awaitSeen(ctx, allSeen); err != nil {
		return nil, err
	}
	waited := time.Now()
	if err := follow.Err(); err != nil {
		return nil, err
	}
	after, err := bytesSent(ctx, clients)
	if err != nil {
		return nil, err
	}
	lag, err := applyLag(ctx, clients)
	if err != nil {
		return nil, err
	}
	stopFollow()

	mu.Lock()
	defer mu.Unlock()
	res := &PropagationResult{Nodes: n, Processes: opts.Binary != "", Procs: opts.agentProcs(), Rate: opts.Rate, Stream: opts.Stream, DurationSec: opts.Duration.Seconds(),
		Writes: total, Versions: len(versions), AchievedRate: float64(total) / elapsed.Seconds(), BytesPerVersion: float64(after-before) / float64(max(len(versions), 1)),
		ApplyLagP99Ms: lag * 1000}
	visible, notVisible := visibility(sent, seen, waited)
	fromCommit, _ := visibility(committed, seen, waited)
	acks := acked
	res.NotVisible = notVisible
	res.VisibleP50Ms, res.VisibleP99Ms, res.VisibleMaxMs = ms(pct(visible, 0.50)), ms(pct(visible, 0.99)), ms(pct(visible, 1))
	res.CommitVisibleP50Ms, res.CommitVisibleP99Ms, res.CommitVisibleMaxMs = ms(pct(fromCommit, 0.50)), ms(pct(fromCommit, 0.99)), ms(pct(fromCommit, 1))
	res.AckP50Ms, res.AckP99Ms = ms(pct(acks, 0.50)), ms(pct(acks, 0.99))
	return res, nil
}

func bytesSent(ctx context.Context, clients []*client.Client) (uint64, error) {
	var total uint64
	for _, c := range clients {
		s, err := c.ClusterStats(ctx)
		if err != nil {
			return 0, err
		}
		total += s["bytes_sent"]
	}
	return total, nil
}

// applyLag is the largest p99 replication lag the agents report, in
// seconds.
func applyLag(ctx context.Context, clients []*client.Client) (float64, error) {
	var worst float64
	for _, c := range clients {
		h, err := c.Health(ctx, "")
		if err != nil {
			return 0, err
		}
		worst = max(worst, h.P99Lag)
	}
	return worst, nil
}

// awaitSeen waits until all is closed (every write seen everywhere), 30 s
// at most: what is missing then is counted, not waited for.
func awaitSeen(ctx context.Context, all <-chan struct{}) error {
	select {
	case <-all:
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// visibility is, for each write, the time from start[seq] until the last
// node saw it. A write some node never saw is not left out, which would
// drop the slowest writes from the quantiles: it counts as at least
// waited-start[seq] (waited: when the benchmark stopped waiting for it),
// and notVisible counts such writes.
func visibility(start []time.Time, seen [][]time.Time, waited time.Time) (ds []time.Duration, notVisible int) {
	ds = make([]time.Duration, 0, len(start))
	for seq := range start {
		last, complete := lastSeen(seen[seq])
		if !complete {
			notVisible++
			last = waited
		}
		ds = append(ds, last.Sub(start[seq]))
	}
	return ds, notVisible
}

// lastSeen is when the last node saw a write, and whether every node did.
func lastSeen(seen []time.Time) (last time.Time, complete bool) {
	for _, t := range seen {
		if t.IsZero() {
			return time.Time{}, false
		}
		if t.After(last) {
			last = t
		}
	}
	return last, true
}

// pct is the p-quantile (0..1) of ds, by the nearest-rank method.
func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(float64(len(s))*p+0.999999) - 1
	return s[min(max(i, 0), len(s)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// followRows follows every node's machines updates and calls seen for each
// row named prefix+seq (0 <= seq < total), with the node and the time it
// was reported. Wait on the group after ending ctx.
func followRows(ctx context.Context, clients []*client.Client, prefix string, total int, seen func(node, seq int, now time.Time)) (*followers, error) {
	f := &followers{}
	for i, c := range clients {
		stream, err := c.Updates(ctx, "machines")
		if err != nil {
			return f, err
		}
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			defer stream.Close()
			for stream.Next() {
				now := time.Now()
				if seq, ok := rowSeq(stream.Notify().PK[0], prefix, total); ok {
					seen(i, seq, now)
				}
			}
			// A stream that ended before the benchmark ended it (the
			// agent cut off a consumer that fell behind, a broken
			// connection) would leave the rest of its node's writes
			// unseen: an error, not a slow write.
			if ctx.Err() == nil {
				f.mu.Lock()
				if f.err == nil {
					f.err = fmt.Errorf("bench: update stream of node %d ended: %v", i, stream.Err())
				}
				f.mu.Unlock()
			}
		}()
	}
	return f, nil
}

// followers are followRows' goroutines.
type followers struct {
	wg  sync.WaitGroup
	mu  sync.Mutex
	err error
}

// Wait waits for the followers, once their context has ended.
func (f *followers) Wait() { f.wg.Wait() }

// Err is why a stream ended early, nil while all follow.
func (f *followers) Err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// rowSeq reads the sequence number of a benchmark row id (prefix+seq).
func rowSeq(v any, prefix string, total int) (int, bool) {
	id, _ := v.(string)
	if len(id) <= len(prefix) || id[:len(prefix)] != prefix {
		return 0, false
	}
	seq, err := strconv.Atoi(id[len(prefix):])
	return seq, err == nil && seq >= 0 && seq < total
}
