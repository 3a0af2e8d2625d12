package bridge_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/patina-db/patina/bridge"
	"github.com/patina-db/patina/internal/devcluster"
	"github.com/patina-db/patina/regional"
)

// BenchmarkGlobalVersionsPer10kRegionalChanges: each iteration is 10k
// machine re-publishes, one transaction each, by 4 writers on the agent
// the bridge follows (default 1s flush interval), then a marker machine
// of a new app whose row the bridge must write; the iteration ends when
// every global agent has that row. Reported: global versions per 10k
// changes and flushes per 10k changes, the marker's one excluded, and
// the flush intervals the iteration lasted.
//
//   - unchanged-facts: state created↔stopped, image and updated_at flip;
//     no app's counts change (target: 0).
//   - healthy-flips: a check flips passing↔critical, so an app's healthy
//     count changes at every write; the bridge coalesces them per flush.
func BenchmarkGlobalVersionsPer10kRegionalChanges(b *testing.B) {
	for _, kind := range []string{"unchanged-facts", "healthy-flips"} {
		b.Run(kind, func(b *testing.B) {
			region, global := clusters(b)
			cfg := testConfig(region, global, "bench")
			cfg.Bridge.FlushInterval = bridge.DefaultConfig().Bridge.FlushInterval
			br := startBridge(b, cfg)
			node := region.Nodes[0]
			const writers, perWriter = 4, 2500
			ms := make([]*regional.Machine, 40)
			for i := range ms {
				app := fmt.Sprintf("bench-%s-%d", kind, i%10)
				ms[i] = machine(fmt.Sprintf("bench-%s-%d", kind, i), app, regional.StateCreated, "http", regional.CheckPassing)
				if kind == "healthy-flips" {
					ms[i].State = regional.StateStarted
				}
			}
			publish(b, node, ms...)
			settleMarker(b, region, global, br, kind, -1)
			var versions, flushes, ticks float64
			b.ResetTimer()
			for iter := 0; iter < b.N; iter++ {
				v0, s0 := globalVersions(global), br.Stats()
				var wg sync.WaitGroup
				errs := make(chan error, writers)
				for w := 0; w < writers; w++ {
					wg.Add(1)
					go func(w int) {
						defer wg.Done()
						c := node.Client()
						// Each writer owns ten machines, so that records
						// are re-published whole by one writer, like hosts.
						own := ms[w*10 : w*10+10]
						for n := 0; n < perWriter; n++ {
							m := *own[n%len(own)]
							m.Checks = append([]regional.Check(nil), m.Checks...)
							step := iter*perWriter + n/len(own)
							m.UpdatedAt += int64(step)
							m.Image = fmt.Sprintf("img:%d", step)
							if kind == "unchanged-facts" {
								if step%2 == 0 {
									m.State = regional.StateStopped
								}
							} else if step%2 == 0 {
								m.Checks[0].Status = regional.CheckCritical
							}
							if _, err := c.Transact(context.Background(), regional.Publish(&m)...); err != nil {
								errs <- err
								return
							}
						}
					}(w)
				}
				wg.Wait()
				close(errs)
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
				settleMarker(b, region, global, br, kind, iter)
				s1 := br.Stats()
				versions += float64(globalVersions(global)-v0) - 1
				flushes += float64(s1.Flushes-s0.Flushes) - 1
				ticks += float64(s1.FlushTicks - s0.FlushTicks)
			}
			b.StopTimer()
			b.ReportMetric(versions/float64(b.N), "global-versions/10k-changes")
			b.ReportMetric(flushes/float64(b.N), "flushes/10k-changes")
			b.ReportMetric(ticks/float64(b.N), "flush-intervals/10k-changes")
		})
	}
}

// settleMarker moves the marker machine to a new app (which makes one
// flush, one version) and waits until every global agent has the new
// app's row and the bridge has flushed everything before it.
func settleMarker(tb testing.TB, region, global *devcluster.Region, br *bridge.Bridge, kind string, iter int) {
	tb.Helper()
	app := fmt.Sprintf("bench-marker-%s-%d", kind, iter+1)
	publish(tb, region.Nodes[0], machine("bench-marker-"+kind, app, regional.StateStarted))
	waitGlobal(tb, global, app, "syd", counts(1, 1))
	settle(tb, app, counts(1, 1), br)
}
