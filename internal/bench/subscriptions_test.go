package bench

import (
	"context"
	"testing"
	"time"
)

// TestSubscriptionsRuns runs a short in-process subscription benchmark
// and checks its bookkeeping, not its timings: every write's event
// arrives and the quantiles are in order.
func TestSubscriptionsRuns(t *testing.T) {
	res, err := Subscriptions(context.Background(), SubscriptionsOptions{
		Options:       Options{Nodes: 2, Dir: t.TempDir(), SchemaPaths: []string{schemaDir()}},
		Subscriptions: 10, Rate: 100, Duration: time.Second,
	}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Missing != 0 {
		t.Fatalf("%d events missing", res.Missing)
	}
	if !(res.EventP50Ms > 0 && res.EventP50Ms <= res.EventP99Ms && res.EventP99Ms <= res.EventMaxMs && res.BaselineP99Ms > 0) {
		t.Fatalf("quantiles out of order: %+v", res)
	}
}
