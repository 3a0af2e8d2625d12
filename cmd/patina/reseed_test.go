package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/bench"
	"github.com/patina-db/patina/regional/reseed"
)

// TestReseedCommandResumesAfterCtrlC: `patina reseed` interrupted with
// SIGINT after a range finished exits non-zero and keeps its state file;
// the same command again skips the finished ranges and completes.
func TestReseedCommandResumesAfterCtrlC(t *testing.T) {
	api, _, _ := startAgentProcess(t)
	dir := t.TempDir()
	files, err := bench.WriteHostFiles(bench.HostFilesOptions{Dir: dir, Hosts: 2, Machines: 2000, Checks: 1})
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state.json")
	args := []string{"reseed", "--bbolt", files[0], "--bbolt", files[1], "--api", api, "--ranges", "10", "--parallel", "1",
		"--batch", "50", "--rate", "400", "--state", state}

	cmd := exec.Command(patinaBin, args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		var st struct{ Done []int }
		if data, err := os.ReadFile(state); err == nil && json.Unmarshal(data, &st) == nil && len(st.Done) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			t.Fatalf("no range finished within 60s: %s", errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGINT)
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Fatalf("interrupted reseed: %v, want exit 1\n%s\n%s", err, out.String(), errb.String())
	}
	if !strings.Contains(errb.String(), "interrupted") || !strings.Contains(out.String(), "skipped") {
		t.Fatalf("interrupted reseed said:\n%s\n%s", out.String(), errb.String())
	}
	if _, err := os.Stat(state); err != nil {
		t.Fatalf("state file gone after the interruption: %v", err)
	}

	stdout, stderr, code := patina(t, api, append(args[:len(args)-4], "--state", state, "--json", "--quiet")...)
	if code != 0 {
		t.Fatalf("resumed reseed: exit %d\n%s\n%s", code, stdout, stderr)
	}
	var sum reseed.Summary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil {
		t.Fatalf("summary %q: %v", stdout, err)
	}
	if sum.RangesSkipped < 1 || sum.RangesSkipped+sum.RangesDone != 10 || sum.RangesFailed != 0 {
		t.Fatalf("resumed summary %+v: want the finished ranges skipped, the rest done", sum)
	}
	if _, err := os.Stat(state); !os.IsNotExist(err) {
		t.Fatalf("state file left after a complete run: %v", err)
	}
	got, _, _ := patina(t, api, "query", "SELECT count(*) FROM machines")
	if strings.TrimSpace(got) != "2000" && !strings.Contains(got, "2000") {
		t.Fatalf("machines after the reseed: %q", got)
	}
}
