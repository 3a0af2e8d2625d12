package devcluster

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestProcessGetsItsEnvironment: Env reaches the child on top of this
// process's environment (how benchmarks set each agent's GOMAXPROCS).
func TestProcessGetsItsEnvironment(t *testing.T) {
	t.Setenv("PATINA_TEST_INHERITED", "kept")
	logPath := filepath.Join(t.TempDir(), "child.log")
	p := &Process{Binary: "/bin/sh", Args: []string{"-c", `echo "$PATINA_TEST_INHERITED $GOMAXPROCS"; exec sleep 60`}, LogPath: logPath, Env: []string{"GOMAXPROCS=3"}}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, _ := os.ReadFile(logPath)
		if strings.Contains(string(out), "\n") {
			if got := strings.TrimSpace(string(out)); got != "kept 3" {
				t.Fatalf("child saw %q, want %q", got, "kept 3")
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("child wrote nothing; log %q", out)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
