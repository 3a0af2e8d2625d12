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

	"github.com/patina-db/patina/client"
)

// CatchUpOptions say how far behind the node falls.
type CatchUpOptions struct {
	Options
	Versions int
}

// CatchUpResult is what `patina bench catchup` reports.
type CatchUpResult struct {
	Nodes     int  `json:"nodes"`
	Processes bool `json:"processes"`
	// Procs is each agent process's GOMAXPROCS (0: agents in process).
	Procs int `json:"procs,omitempty"`
	// Versions is the versions the node missed, at least the Versions
	// asked for; Rows the transactions (one row each) written to make
	// them: transactions committed together share a version.
	Versions int     `json:"versions"`
	Rows     int64   `json:"rows"`
	CatchUpS float64 `json:"catch_up_s"`
	WriteSec float64 `json:"write_s"`
}

// CatchUp stops the last node, writes Versions versions through the
// others, starts it again and times until it holds them all: sync alone
// brings them.
func CatchUp(ctx context.Context, opts CatchUpOptions, progress io.Writer) (*CatchUpResult, error) {
	if opts.Versions < 1 || opts.Nodes < 2 {
		return nil, errors.New("bench: versions must be positive and nodes at least 2")
	}
	region, err := startRegion(ctx, opts.Options)
	if err != nil {
		return nil, err
	}
	defer region.Stop()
	behind := region.Nodes[len(region.Nodes)-1]
	if err := behind.Stop(); err != nil {
		return nil, err
	}
	hc := httpClient()
	var writers []*client.Client
	for _, node := range region.Nodes[:len(region.Nodes)-1] {
		c, err := client.NewWithHTTP(node.API, "", hc)
		if err != nil {
			return nil, err
		}
		writers = append(writers, c)
	}
	fmt.Fprintf(progress, "%s stopped; writing %d versions through the others\n", behind.Name, opts.Versions)
	start := time.Now()
	var wg sync.WaitGroup
	var firstErr error
	var once sync.Once
	var mu sync.Mutex
	versions := map[string]struct{}{} // actor/version
	var rows atomic.Int64
	const conc = 16
	// Concurrent transactions on one agent commit as one group and share
	// a version: write until the versions, not the rows, number
	// opts.Versions.
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := writers[w%len(writers)]
			for {
				mu.Lock()
				enough := len(versions) >= opts.Versions
				mu.Unlock()
				if enough {
					return
				}
				i := rows.Add(1) - 1
				res, err := c.Transact(ctx, client.Statement{Query: "INSERT INTO machines (id, app) VALUES (?, 'catchup')", Params: []any{fmt.Sprintf("c%d", i)}})
				if err != nil {
					once.Do(func() { firstErr = err })
					return
				}
				if res.Version != nil {
					mu.Lock()
					versions[res.ActorID+"/"+strconv.FormatUint(*res.Version, 10)] = struct{}{}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if firstErr != nil {
		return nil, fmt.Errorf("bench: write: %w", firstErr)
	}
	res := &CatchUpResult{Nodes: len(region.Nodes), Processes: opts.Binary != "", Procs: opts.agentProcs(), Versions: len(versions), Rows: rows.Load(), WriteSec: time.Since(start).Seconds()}
	fmt.Fprintf(progress, "wrote %d rows as %d versions in %.1fs; starting %s\n", res.Rows, res.Versions, res.WriteSec, behind.Name)
	t0 := time.Now()
	if err := behind.Start(); err != nil {
		return nil, err
	}
	c, err := client.NewWithHTTP(behind.API, "", hc)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Minute)
	for {
		n, err := countRows(ctx, c, "catchup")
		if err == nil && n == res.Rows {
			if h, err := c.Health(ctx, ""); err == nil && h.Gaps == 0 {
				break
			}
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bench: %s did not catch up within 10 minutes", behind.Name)
		}
		time.Sleep(20 * time.Millisecond)
	}
	res.CatchUpS = time.Since(t0).Seconds()
	return res, nil
}
