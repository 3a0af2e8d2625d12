package devcluster

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestChildLeavesTheProcessGroupAndDiesWithItsParent: a child is in a
// process group of its own (Ctrl-C at a terminal reaches the parent
// alone), and a parent killed without stopping its children takes them
// with it. The parent is this test binary run again as
// TestHelperParent, which starts a child and prints its PID.
func TestChildLeavesTheProcessGroupAndDiesWithItsParent(t *testing.T) {
	parent := exec.Command(os.Args[0], "-test.run=^TestHelperParent$")
	parent.Env = append(os.Environ(), "PATINA_HELPER_PARENT="+filepath.Join(t.TempDir(), "child.log"))
	out, err := parent.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := parent.Start(); err != nil {
		t.Fatal(err)
	}
	defer parent.Process.Kill()
	var child int
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if pid, ok := strings.CutPrefix(sc.Text(), "child "); ok {
			child, _ = strconv.Atoi(pid)
			break
		}
	}
	if child == 0 {
		t.Fatalf("the helper parent named no child: %v", sc.Err())
	}
	if pg, err := syscall.Getpgid(child); err != nil || pg != child {
		t.Fatalf("child %d is in process group %d (%v), want its own", child, pg, err)
	}
	if err := parent.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	parent.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for alive(child) {
		if time.Now().After(deadline) {
			syscall.Kill(child, syscall.SIGKILL)
			t.Fatalf("child %d outlived its killed parent by 10 s", child)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// alive reports whether pid runs: it exists and is not a zombie waiting
// for whoever inherited it to reap it.
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state ...: comm may hold spaces and parentheses.
	rest := string(stat[strings.LastIndexByte(string(stat), ')')+1:])
	return !strings.HasPrefix(strings.TrimSpace(rest), "Z")
}

// TestHelperParent is the parent of the test above; run alone it does
// nothing.
func TestHelperParent(t *testing.T) {
	logPath := os.Getenv("PATINA_HELPER_PARENT")
	if logPath == "" {
		t.Skip("helper for TestChildLeavesTheProcessGroupAndDiesWithItsParent")
	}
	p := &Process{Binary: "/bin/sleep", Args: []string{"60"}, LogPath: logPath}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	fmt.Printf("child %d\n", p.PID())
	time.Sleep(time.Minute)
}
