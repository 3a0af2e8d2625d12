package reseed_test

import (
	"context"
	"io"
	"os"
	"strconv"
	"testing"

	"github.com/patina-db/patina/internal/bench"
)

// BenchmarkReseed reseeds a fresh in-process region of three agents from
// hosts' bbolt files (PATINA_RESEED_MACHINES machines, default 1,000,000,
// PATINA_RESEED_CHECKS checks each, default 0) and reports machine rows
// per second and the seconds until every agent held every row. For
// agents in their own processes, use `patina bench reseed`.
func BenchmarkReseed(b *testing.B) {
	machines, checks := 1_000_000, 0
	if v, err := strconv.Atoi(os.Getenv("PATINA_RESEED_MACHINES")); err == nil {
		machines = v
	}
	if v, err := strconv.Atoi(os.Getenv("PATINA_RESEED_CHECKS")); err == nil {
		checks = v
	}
	for i := 0; i < b.N; i++ {
		res, err := bench.Reseed(context.Background(), bench.ReseedOptions{
			Options:  bench.Options{Nodes: benchNodes(), Dir: b.TempDir(), SchemaPaths: []string{schemaDir()}},
			Machines: machines, Hosts: 100, Checks: checks,
		}, io.Discard)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(res.RowsPerSec, "rows/s")
		b.ReportMetric(res.ConvergedSec, "converged_s")
	}
}

// benchNodes is the region's size: PATINA_RESEED_NODES, default 3.
func benchNodes() int {
	if v, err := strconv.Atoi(os.Getenv("PATINA_RESEED_NODES")); err == nil && v > 0 {
		return v
	}
	return 3
}
