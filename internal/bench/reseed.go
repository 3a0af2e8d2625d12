package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/regional/reseed"
)

// ReseedOptions describe the hosts' files to reseed a region from.
type ReseedOptions struct {
	Options
	Machines int // in all (default 1,000,000)
	Hosts    int // bbolt files (default 100)
	Checks   int // per machine
	Ranges   int // reseed's defaults when 0
	Parallel int
	Batch    int
	// Through is how many of the agents reseed writes through (default
	// all); the others only apply what they receive.
	Through int
}

// ReseedResult is what `patina bench reseed` reports.
type ReseedResult struct {
	Nodes     int  `json:"nodes"`
	Processes bool `json:"processes"`
	// Procs is each agent process's GOMAXPROCS (0: agents in process).
	Procs    int `json:"procs,omitempty"`
	Machines int `json:"machines"`
	Checks   int `json:"checks_per_machine"`
	Hosts    int `json:"hosts"`
	Ranges   int `json:"ranges"`
	Parallel int `json:"parallel"`
	Batch    int `json:"batch"`
	Through  int `json:"through"`
	// WriteSec is how long reseed.Run took; RowsPerSec its machine
	// records written per second.
	WriteSec   float64 `json:"write_s"`
	RowsPerSec float64 `json:"rows_per_s"`
	// ConvergedSec is from the start of the reseed until every agent
	// held every row.
	ConvergedSec float64 `json:"converged_s"`
	Transactions int64   `json:"transactions"`
}

// Reseed writes hosts' bbolt files, reseeds a fresh region from them
// through every agent, and times the reseed and the moment every agent
// holds every machine and check row.
func Reseed(ctx context.Context, opts ReseedOptions, progress io.Writer) (*ReseedResult, error) {
	if opts.Machines == 0 {
		opts.Machines = 1_000_000
	}
	if opts.Hosts == 0 {
		opts.Hosts = 100
	}
	if opts.Machines < 1 || opts.Hosts < 1 || opts.Checks < 0 {
		return nil, errors.New("bench: machines and hosts must be positive")
	}
	fmt.Fprintf(progress, "writing %d machines on %d hosts' bbolt files\n", opts.Machines, opts.Hosts)
	files, err := WriteHostFiles(HostFilesOptions{Dir: filepath.Join(opts.Dir, "hosts"), Hosts: opts.Hosts, Machines: opts.Machines, Checks: opts.Checks})
	if err != nil {
		return nil, err
	}
	region, err := startRegion(ctx, opts.Options)
	if err != nil {
		return nil, err
	}
	defer region.Stop()
	var apis []string
	var clients []*client.Client
	hc := httpClient()
	for _, n := range region.Nodes {
		apis = append(apis, n.API)
		c, err := client.NewWithHTTP(n.API, "", hc)
		if err != nil {
			return nil, err
		}
		clients = append(clients, c)
	}
	through := apis
	if opts.Through > 0 && opts.Through < len(apis) {
		through = apis[:opts.Through]
	}
	fmt.Fprintf(progress, "region of %d nodes up; reseeding through %d of them\n", len(apis), len(through))
	start := time.Now()
	sum, err := reseed.Run(ctx, reseed.Options{BBolt: files, APIs: through, Ranges: opts.Ranges, Parallel: opts.Parallel, Batch: opts.Batch,
		StatePath: filepath.Join(opts.Dir, "reseed-state.json"), Progress: progress})
	if err != nil {
		return nil, err
	}
	res := &ReseedResult{Nodes: len(apis), Processes: opts.Binary != "", Procs: opts.agentProcs(), Machines: opts.Machines, Checks: opts.Checks, Hosts: opts.Hosts,
		Ranges: sum.Ranges, Parallel: opts.Parallel, Batch: opts.Batch, Through: len(through), WriteSec: sum.Elapsed.Seconds(), RowsPerSec: sum.RowsPerSec, Transactions: sum.Transactions}
	fmt.Fprintf(progress, "written in %.1fs; waiting for every agent\n", res.WriteSec)
	want := map[string]int64{"SELECT count(*) FROM machines": int64(opts.Machines), "SELECT count(*) FROM machine_checks": int64(opts.Machines * opts.Checks)}
	deadline := time.Now().Add(30 * time.Minute)
	for {
		all := true
		for _, c := range clients {
			for q, n := range want {
				got, err := count(ctx, c, q)
				if err != nil {
					return nil, err
				}
				if got != n {
					all = false
				}
			}
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			return nil, errors.New("bench: agents did not all hold every row within 30 minutes")
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	res.ConvergedSec = time.Since(start).Seconds()
	return res, nil
}

func count(ctx context.Context, c *client.Client, q string) (int64, error) {
	rows, err := c.Query(ctx, client.Statement{Query: q})
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	if !rows.Next() {
		return 0, fmt.Errorf("bench: %s: %v", q, rows.Err())
	}
	n, _ := rows.Row()[0].(int64)
	return n, nil
}
