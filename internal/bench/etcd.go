package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// EtcdOptions place an etcd cluster on this host for the same workloads
// the region's benchmarks run.
type EtcdOptions struct {
	Binary  string // the etcd executable (looked up in PATH)
	Dir     string // members' data directories and logs
	Members int
	// Procs is each member's GOMAXPROCS (default SharedProcs).
	Procs int
}

// procs is each member's GOMAXPROCS.
func (o EtcdOptions) procs() int { return procsFor(o.Procs, o.Members) }

// start starts the cluster o describes.
func (o EtcdOptions) start(ctx context.Context) (*etcdPeer, error) {
	return startEtcd(ctx, o.Binary, o.Dir, o.Members, o.procs())
}

// EtcdPropagationResult is what `patina bench etcd propagation` reports:
// the shape of PropagationResult where etcd has an equivalent. etcd
// answers a put once the leader has committed and applied it, so there
// is no separate commit time; visibility is timed from the request.
type EtcdPropagationResult struct {
	Members      int     `json:"members"`
	Procs        int     `json:"procs"` // each member's GOMAXPROCS
	Rate         int     `json:"rate"`
	DurationSec  float64 `json:"duration_s"`
	Writes       int     `json:"writes"`
	AchievedRate float64 `json:"achieved_rate"`
	VisibleP50Ms float64 `json:"visible_all_p50_ms"`
	VisibleP99Ms float64 `json:"visible_all_p99_ms"`
	VisibleMaxMs float64 `json:"visible_all_max_ms"`
	AckP50Ms     float64 `json:"ack_p50_ms"`
	AckP99Ms     float64 `json:"ack_p99_ms"`
	NotVisible   int     `json:"not_visible,omitempty"`
}

// EtcdPropagation writes Rate keys a second for Duration, round-robin
// over the members, and times each from its request until a watch on
// every member has reported it: the workload of Propagation.
func EtcdPropagation(ctx context.Context, opts EtcdOptions, rate int, duration time.Duration, progress io.Writer) (*EtcdPropagationResult, error) {
	if rate < 1 || duration <= 0 {
		return nil, errors.New("bench: rate and duration must be positive")
	}
	peer, err := opts.start(ctx)
	if err != nil {
		return nil, err
	}
	defer peer.stop()
	n := len(peer.conns)
	total := max(int(float64(rate)*duration.Seconds()), 1)
	fmt.Fprintf(progress, "etcd cluster of %d members up; writing %d keys at %d/s\n", n, total, rate)

	sent := make([]time.Time, total)
	acked := make([]time.Duration, total)
	seen := make([][]time.Time, total) // [seq][member]
	for i := range seen {
		seen[i] = make([]time.Time, n)
	}
	var mu sync.Mutex
	remaining := total * n
	allSeen := make(chan struct{})
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	var waits []func() error
	for i := 0; i < n; i++ {
		wait, err := peer.watchPrefix(wctx, i, "b/", func(key []byte) {
			now := time.Now()
			seq, err := strconv.Atoi(string(key[2:]))
			if err != nil || seq < 0 || seq >= total {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if seen[seq][i].IsZero() {
				seen[seq][i] = now
				if remaining--; remaining == 0 {
					close(allSeen)
				}
			}
		})
		if err != nil {
			return nil, err
		}
		waits = append(waits, wait)
	}
	value := make([]byte, 100) // about a machine row's size on the wire
	elapsed, err := Pace(ctx, rate, total, func(seq int, t0 time.Time) error {
		mu.Lock()
		sent[seq] = t0
		mu.Unlock()
		err := peer.put(ctx, seq%n, []byte("b/"+strconv.Itoa(seq)), value)
		acked[seq] = time.Since(t0)
		return err
	})
	if err != nil {
		return nil, err
	}
	if err := awaitSeen(ctx, allSeen); err != nil {
		return nil, err
	}
	waited := time.Now()
	stopWatch()
	for _, wait := range waits {
		if err := wait(); err != nil {
			return nil, err
		}
	}
	mu.Lock()
	defer mu.Unlock()
	res := &EtcdPropagationResult{Members: n, Procs: opts.procs(), Rate: rate, DurationSec: duration.Seconds(), Writes: total, AchievedRate: float64(total) / elapsed.Seconds()}
	visible, notVisible := visibility(sent, seen, waited)
	res.NotVisible = notVisible
	res.VisibleP50Ms, res.VisibleP99Ms, res.VisibleMaxMs = ms(pct(visible, 0.50)), ms(pct(visible, 0.99)), ms(pct(visible, 1))
	res.AckP50Ms, res.AckP99Ms = ms(pct(acked, 0.50)), ms(pct(acked, 0.99))
	return res, nil
}

// EtcdThroughputResult is what `patina bench etcd throughput` reports.
type EtcdThroughputResult struct {
	Members      int     `json:"members"`
	Procs        int     `json:"procs"` // each member's GOMAXPROCS
	Writers      int     `json:"writers"`
	DurationSec  float64 `json:"duration_s"`
	Writes       int64   `json:"writes"`
	WritesPerSec float64 `json:"writes_per_s"`
}

// EtcdThroughput runs writers closed-loop writers, each on a connection
// of its own to one member in turn, for duration, and counts the puts
// acknowledged: the workload of Throughput.
func EtcdThroughput(ctx context.Context, opts EtcdOptions, writers int, duration time.Duration, progress io.Writer) (*EtcdThroughputResult, error) {
	if writers < 1 || duration <= 0 {
		return nil, errors.New("bench: writers and duration must be positive")
	}
	peer, err := opts.start(ctx)
	if err != nil {
		return nil, err
	}
	defer peer.stop()
	n := len(peer.conns)
	// A connection per writer, as each of the region benchmark's writers
	// has one: gRPC would otherwise multiplex them all on one per member.
	var conns []*grpc.ClientConn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for w := 0; w < writers; w++ {
		conn, err := peer.dial(peer.clientAddrs[w%n])
		if err != nil {
			return nil, err
		}
		conns = append(conns, conn)
	}
	fmt.Fprintf(progress, "etcd cluster of %d members up; %d writers for %s\n", n, writers, duration)
	var writes atomic.Int64
	var firstErr error
	var errOnce sync.Once
	deadline := time.Now().Add(duration)
	value := make([]byte, 100)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(deadline) && ctx.Err() == nil; i++ {
				if err := etcdPut(ctx, conns[w], []byte(fmt.Sprintf("t/%d-%d", w, i)), value); err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				writes.Add(1)
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	if firstErr != nil {
		return nil, fmt.Errorf("bench: %w", firstErr)
	}
	return &EtcdThroughputResult{Members: n, Procs: opts.procs(), Writers: writers, DurationSec: el.Seconds(), Writes: writes.Load(), WritesPerSec: float64(writes.Load()) / el.Seconds()}, nil
}
