package bench

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
)

func schemaDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "schemas", "regional")
}

// TestPropagationRuns runs a short in-process propagation benchmark and
// checks its bookkeeping, not its timings: every version written is
// counted, seen everywhere, and reported with sane quantiles.
func TestPropagationRuns(t *testing.T) {
	rate, dur := 200, time.Second
	if os.Getenv("PATINA_BENCH_RATE") != "" {
		rate, dur = 1000, 5*time.Second
	}
	for _, stream := range []bool{false, true} {
		res, err := Propagation(context.Background(), PropagationOptions{
			Options: Options{Nodes: 3, Dir: t.TempDir(), SchemaPaths: []string{schemaDir()}},
			Rate:    rate, Duration: dur, Stream: stream,
		}, testWriter{t})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%+v", res)
		if res.Writes != int(float64(rate)*dur.Seconds()) || res.Versions < 1 || res.Versions > res.Writes || res.NotVisible != 0 || res.Stream != stream {
			t.Fatalf("writes %d, versions %d, not visible %d, stream %v", res.Writes, res.Versions, res.NotVisible, res.Stream)
		}
		if !(res.VisibleP50Ms > 0 && res.VisibleP50Ms <= res.VisibleP99Ms && res.VisibleP99Ms <= res.VisibleMaxMs) {
			t.Fatalf("quantiles out of order: %+v", res)
		}
		// A row shows up only after its commit, which comes after the
		// request: from the commit is shorter, and still positive.
		if !(res.CommitVisibleP50Ms > 0 && res.CommitVisibleP50Ms <= res.CommitVisibleP99Ms && res.CommitVisibleP99Ms <= res.CommitVisibleMaxMs) ||
			res.CommitVisibleP50Ms > res.VisibleP50Ms || res.CommitVisibleMaxMs > res.VisibleMaxMs {
			t.Fatalf("from-commit quantiles out of order or above from-request ones: %+v", res)
		}
		if res.BytesPerVersion <= 0 {
			t.Fatal("no data-plane bytes counted")
		}
	}
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }
