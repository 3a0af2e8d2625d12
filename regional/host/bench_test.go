package host

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// BenchmarkRepublish: a full re-publish of 1,000 machines with two
// checks each, in transactions of 200, to one in-process agent. After
// the first, nothing changes: this is the steady cost every
// republish_interval.
func BenchmarkRepublish(b *testing.B) {
	ctx := context.Background()
	r := startRegion(b, 1)
	h := startHost(b, hostConfig(b, filepath.Join(b.TempDir(), "h.db"), []string{r.Nodes[0].API}))
	for i := range 1000 {
		if _, err := h.Create(ctx, MachineSpec{ID: fmt.Sprintf("m%04d", i), App: fmt.Sprintf("app%d", i%50),
			Checks: []CheckSpec{{Kind: "http"}, {Kind: "tcp"}}}); err != nil {
			b.Fatal(err)
		}
	}
	if _, err := h.Republish(ctx); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		stats, err := h.Republish(ctx)
		if err != nil || stats.Versions != 0 {
			b.Fatalf("%+v %v", stats, err)
		}
	}
}

// BenchmarkCreate: creating a machine (stored durably in bbolt, queued
// for the agent).
func BenchmarkCreate(b *testing.B) {
	ctx := context.Background()
	cfg := hostConfig(b, filepath.Join(b.TempDir(), "h.db"), []string{"http://127.0.0.1:1"})
	cfg.Log.Level = "error"
	h := startHost(b, cfg)
	i := 0
	for b.Loop() {
		i++
		if _, err := h.Create(ctx, MachineSpec{ID: fmt.Sprintf("m%d", i), App: "web", Port: 20000 + i%30000, Checks: []CheckSpec{{Kind: "tcp"}}}); err != nil {
			b.Fatal(err)
		}
	}
}
