package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patina-db/patina/client"
)

// ThroughputOptions add the writers.
type ThroughputOptions struct {
	Options
	Writers  int // concurrent writers, spread over the nodes
	Duration time.Duration
	// Stream sends the writes over one transaction stream per node
	// (POST /v1/transactions/stream) instead of one request each.
	Stream bool
}

// ThroughputResult is what `patina bench throughput` reports.
type ThroughputResult struct {
	Nodes     int  `json:"nodes"`
	Processes bool `json:"processes"`
	// Procs is each agent process's GOMAXPROCS (0: agents in process).
	Procs        int     `json:"procs,omitempty"`
	Writers      int     `json:"writers"`
	Stream       bool    `json:"stream"`
	DurationSec  float64 `json:"duration_s"`
	Writes       int64   `json:"writes"`
	WritesPerSec float64 `json:"writes_per_s"`
	// ConvergedSec is how long after the last write every node held the
	// same number of rows.
	ConvergedSec float64 `json:"converged_s"`
}

// Throughput runs Writers writers, each against one node in turn, as fast
// as their writes are acknowledged, and counts acknowledged writes.
func Throughput(ctx context.Context, opts ThroughputOptions, progress io.Writer) (*ThroughputResult, error) {
	if opts.Writers < 1 || opts.Duration <= 0 {
		return nil, errors.New("bench: writers and duration must be positive")
	}
	region, err := startRegion(ctx, opts.Options)
	if err != nil {
		return nil, err
	}
	defer region.Stop()
	hc := httpClient()
	var clients []*client.Client
	for _, node := range region.Nodes {
		c, err := client.NewWithHTTP(node.API, "", hc)
		if err != nil {
			return nil, err
		}
		clients = append(clients, c)
	}
	transact, closeStreams, err := transactors(ctx, clients, opts.Stream)
	if err != nil {
		return nil, err
	}
	defer closeStreams()
	fmt.Fprintf(progress, "region of %d nodes up; %d writers for %s\n", len(clients), opts.Writers, opts.Duration)
	var writes atomic.Int64
	var firstErr error
	var errOnce sync.Once
	deadline := time.Now().Add(opts.Duration)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < opts.Writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			transact := transact[w%len(clients)]
			for i := 0; time.Now().Before(deadline); i++ {
				_, err := transact(ctx, client.Statement{Query: "INSERT INTO machines (id, app) VALUES (?, 'throughput')", Params: []any{fmt.Sprintf("t%d-%d", w, i)}})
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				writes.Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return nil, fmt.Errorf("bench: write: %w", firstErr)
	}
	res := &ThroughputResult{Nodes: len(clients), Processes: opts.Binary != "", Procs: opts.agentProcs(), Writers: opts.Writers, Stream: opts.Stream, DurationSec: elapsed.Seconds(),
		Writes: writes.Load(), WritesPerSec: float64(writes.Load()) / elapsed.Seconds()}
	end := time.Now()
	if err := waitRows(ctx, clients, "throughput", res.Writes, 120*time.Second); err != nil {
		return nil, err
	}
	res.ConvergedSec = time.Since(end).Seconds()
	return res, nil
}

// waitRows waits until every node holds want rows of the given app.
func waitRows(ctx context.Context, clients []*client.Client, app string, want int64, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		all := true
		for _, c := range clients {
			n, err := countRows(ctx, c, app)
			if err != nil {
				return err
			}
			if n != want {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: nodes do not all hold %d rows after %s", want, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func countRows(ctx context.Context, c *client.Client, app string) (int64, error) {
	rows, err := c.Query(ctx, client.Statement{Query: "SELECT count(*) FROM machines WHERE app = ?", Params: []any{app}})
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	if !rows.Next() {
		return 0, fmt.Errorf("bench: count: %v", rows.Err())
	}
	n, _ := rows.Row()[0].(int64)
	return n, nil
}
