package main

import (
	"bufio"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// follower runs `patina subscribe` and reads its output line by line.
type follower struct {
	cmd   *exec.Cmd
	lines chan string
}

func startSubscribe(t *testing.T, api string, args ...string) *follower {
	t.Helper()
	cmd := exec.Command(patinaBin, append([]string{"subscribe"}, args...)...)
	cmd.Env = append(os.Environ(), "PATINA_API="+api)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	f := &follower{cmd: cmd, lines: make(chan string, 100)}
	go func() {
		defer close(f.lines)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			f.lines <- sc.Text()
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return f
}

// expect reads lines until one equals want, failing after a deadline.
func (f *follower) expect(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(20 * time.Second)
	var seen []string
	for {
		select {
		case line, ok := <-f.lines:
			if !ok {
				t.Fatalf("output ended before %q; saw:\n%s", want, strings.Join(seen, "\n"))
			}
			if line == want {
				return
			}
			seen = append(seen, line)
		case <-deadline:
			t.Fatalf("no line %q within 20s; saw:\n%s", want, strings.Join(seen, "\n"))
		}
	}
}

func TestSubscribeCommand(t *testing.T) {
	api, _, _ := startAgentProcess(t)
	if _, errOut, code := patina(t, api, "exec", "INSERT INTO machines (id, app, state) VALUES ('m1', 'web', 'started')"); code != 0 {
		t.Fatalf("exec: %s", errOut)
	}
	f := startSubscribe(t, api, "SELECT id, state FROM machines WHERE app = ?", "--param", "web")
	f.expect(t, "columns: id | state")
	f.expect(t, "row 1: m1 | started")
	f.expect(t, "-- 1 rows, as of change 1; following changes")
	patina(t, api, "exec", "UPDATE machines SET state = 'stopped' WHERE id = 'm1'")
	f.expect(t, "change 2: update row 1: m1 | stopped")
	patina(t, api, "exec", "INSERT INTO machines (id, app, state) VALUES ('m2', 'web', 'created')")
	f.expect(t, "change 3: insert row 2: m2 | created")

	// Resume by query from change 2, as NDJSON.
	j := startSubscribe(t, api, "SELECT id, state FROM machines WHERE app = ?", "--param", "web", "--from", "2", "--json")
	j.expect(t, `{"change":["insert",2,["m2","created"],3]}`)
	patina(t, api, "exec", "DELETE FROM machines WHERE id = 'm1'")
	j.expect(t, `{"change":["delete",1,["m1","stopped"],4]}`)
	f.expect(t, "change 4: delete row 1: m1 | stopped")

	// Interrupted, it exits cleanly.
	f.cmd.Process.Signal(syscall.SIGINT)
	if err := f.cmd.Wait(); err != nil {
		t.Fatalf("subscribe after SIGINT: %v", err)
	}

	// A query it cannot follow is refused with the reason.
	_, errOut, code := patina(t, api, "subscribe", "SELECT count(*) FROM machines")
	if code == 0 || !strings.Contains(errOut, "aggregate") {
		t.Fatalf("refused query: %d %q", code, errOut)
	}
}
