package bench

// Tests of how the benchmarks measure: pacing, quantiles, writes never
// seen, streams that end early, versions counted.

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/api"
)

// TestPaceCountsQueueing: when the first 64 writes stall for 400 ms
// (a checkpoint, a GC, an fsync stall), every worker is busy and the
// writes due meanwhile wait in Pace's queue. Timed from the due time Pace
// hands over, that wait is in their latencies (no coordinated omission):
// hundreds of writes are slow, not only the 64 that stalled.
func TestPaceCountsQueueing(t *testing.T) {
	const rate, total = 1000, 600
	var mu sync.Mutex
	fromDue := make([]time.Duration, total)
	_, err := Pace(context.Background(), rate, total, func(seq int, due time.Time) error {
		if seq < 64 {
			time.Sleep(400 * time.Millisecond)
		} else {
			time.Sleep(time.Millisecond)
		}
		mu.Lock()
		fromDue[seq] = time.Since(due)
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slow := 0
	for _, d := range fromDue {
		if d > 50*time.Millisecond {
			slow++
		}
	}
	if slow < 250 {
		t.Fatalf("%d writes over 50 ms from their due time: want the ~350 queued behind the stall", slow)
	}
}

// TestNotVisibleWritesStayInTheQuantiles: 1,000 writes, 980 seen on
// all three nodes 2 ms after being sent, 20 never seen on one node within
// the 30 s the benchmark waits. Left out, the 20 would make p99 and max
// say 2 ms while 2% of the writes did not arrive at all: visibility keeps
// them, as at least the time waited.
func TestNotVisibleWritesStayInTheQuantiles(t *testing.T) {
	const total, nodes = 1000, 3
	base := time.Now()
	sent := make([]time.Time, total)
	seen := make([][]time.Time, total)
	for seq := range total {
		sent[seq] = base.Add(time.Duration(seq) * time.Millisecond)
		seen[seq] = make([]time.Time, nodes)
		for n := range nodes {
			if seq%50 == 7 && n == 2 {
				continue // never reached node 2
			}
			seen[seq][n] = sent[seq].Add(2 * time.Millisecond)
		}
	}
	waited := sent[total-1].Add(30 * time.Second)
	ds, notVisible := visibility(sent, seen, waited)
	if notVisible != 20 || pct(ds, .99) < 30*time.Second || len(ds) != total || pct(ds, .5) != 2*time.Millisecond {
		t.Fatalf("%d not visible, p50 %v, p99 %v, %d samples", notVisible, pct(ds, .5), pct(ds, .99), len(ds))
	}
}

// TestPctIsNearestRank checks pct against the nearest-rank
// definition (the ceil(p*n)-th smallest), computed with exact integers,
// for every n up to 2,500 and the quantiles the benchmarks report, on
// unsorted input.
func TestPctIsNearestRank(t *testing.T) {
	for n := 1; n <= 2500; n++ {
		ds := make([]time.Duration, n)
		for i := range ds {
			ds[i] = time.Duration(i + 1)
		}
		rand.Shuffle(n, func(i, j int) { ds[i], ds[j] = ds[j], ds[i] })
		for _, q := range []struct {
			p        float64
			num, den int
		}{{0.5, 50, 100}, {0.99, 99, 100}, {1, 1, 1}, {0.999, 999, 1000}} {
			rank := (n*q.num + q.den - 1) / q.den // ceil(n*p), exactly
			if got := pct(ds, q.p); got != time.Duration(rank) {
				t.Fatalf("n=%d p=%v: got rank %d, want %d", n, q.p, got, rank)
			}
		}
	}
	_ = math.Ceil
}

// TestFollowerCutOffIsAnError: an agent cuts off an update stream
// whose reader fell 4,096 changes behind (it writes an error line and ends
// the response). followRows used to end that node's follower silently: the
// node's later writes were then "not visible", left out of the quantiles,
// and the run reported as valid. Now the follower's early end is an error.
func TestFollowerCutOffIsAnError(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/x-ndjson")
		enc := json.NewEncoder(w)
		for _, id := range []string{"b0", "b1"} {
			_ = enc.Encode(api.UpdateEvent{Notify: &api.Notify{Kind: "update", PK: []any{id}}})
		}
		msg := "cut off: this consumer fell more than 4096 changes behind"
		_ = enc.Encode(api.UpdateEvent{Error: &msg})
	}))
	defer srv.Close()
	c, err := client.NewWithHTTP(srv.URL, "", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var got []int
	f, err := followRows(ctx, []*client.Client{c}, "b", 10, func(node, seq int, now time.Time) {
		mu.Lock()
		got = append(got, seq)
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	f.Wait()
	t.Logf("seen %v, follower error: %v", got, f.Err())
	if f.Err() == nil {
		t.Fatal("a follower cut off by its agent went unreported")
	}
}

// TestCatchUpCountsVersions runs a tiny in-process catch-up and
// checks its bookkeeping: the versions reported are versions (at least
// the ones asked for), and the rows it took to make them are all there.
func TestCatchUpCountsVersions(t *testing.T) {
	res, err := CatchUp(context.Background(), CatchUpOptions{
		Options:  Options{Nodes: 2, Dir: t.TempDir(), SchemaPaths: []string{schemaDir()}},
		Versions: 500,
	}, testWriter{t})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", res)
	if res.Versions < 500 || res.Versions > 500+15 || res.Rows < int64(res.Versions) {
		t.Fatalf("versions %d, rows %d", res.Versions, res.Rows)
	}
}
