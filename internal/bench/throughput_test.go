package bench

import (
	"context"
	"os"
	"testing"
	"time"
)

// TestThroughputRuns runs a short in-process throughput benchmark, with
// a request per write and over streams, and checks that every
// acknowledged write reached every node.
func TestThroughputRuns(t *testing.T) {
	dur := 500 * time.Millisecond
	if os.Getenv("PATINA_BENCH_RATE") != "" {
		dur = 5 * time.Second
	}
	for _, stream := range []bool{false, true} {
		res, err := Throughput(context.Background(), ThroughputOptions{
			Options: Options{Nodes: 3, Dir: t.TempDir(), SchemaPaths: []string{schemaDir()}},
			Writers: 16, Duration: dur, Stream: stream,
		}, testWriter{t})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v", res)
		if res.Writes <= 0 || res.WritesPerSec <= 0 || res.Stream != stream {
			t.Fatalf("no writes counted: %+v", res)
		}
	}
}
