package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/devcluster"
)

var patinaBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "patina-bin-*")
	if err != nil {
		panic(err)
	}
	patinaBin = filepath.Join(dir, "patina")
	if out, err := exec.Command("go", "build", "-o", patinaBin, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build patina: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// testPorts hands out ports below the kernel's ephemeral range, in
// blocks no other test process holds: a port given to a child process
// cannot be taken meanwhile by another socket's ephemeral bind.
var (
	portsMu   sync.Mutex
	testPorts devcluster.Ports
)

// freeAddr is a loopback address (TCP and UDP) nothing listens on, for a
// child process to bind.
func freeAddr(t *testing.T) string {
	t.Helper()
	portsMu.Lock()
	defer portsMu.Unlock()
	ports, err := testPorts.Take(1)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0])
}

// startAgentProcess runs `patina agent` with the regional schema and
// waits until it answers.
func startAgentProcess(t *testing.T) (api string, proc *exec.Cmd, stderr *bytes.Buffer) {
	t.Helper()
	wd, _ := os.Getwd()
	api, proc, stderr, _ = startAgentWith(t, filepath.Join(wd, "..", "..", "schemas", "regional"), "")
	return api, proc, stderr
}

// startAgentWith runs `patina agent` with a database in a new directory,
// the given schema path and extra [api] lines, and waits until it
// answers. cfg is its config file.
func startAgentWith(t *testing.T, schema, apiExtra string) (api string, proc *exec.Cmd, stderr *bytes.Buffer, cfg string) {
	t.Helper()
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg = filepath.Join(dir, "agent.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("[db]\npath = %q\nschema_paths = [%q]\n[api]\naddr = %q\n%s",
		filepath.Join(dir, "patina.db"), schema, addr, apiExtra)), 0o644)
	stderr = &bytes.Buffer{}
	proc = exec.Command(patinaBin, "agent", "--config", cfg)
	proc.Stderr = stderr
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Process.Kill(); proc.Wait() })
	api = "http://" + addr
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(api + "/v1/health")
		if err == nil {
			resp.Body.Close()
			return api, proc, stderr, cfg
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not come up: %s", stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func patina(t *testing.T, api string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(patinaBin, args...)
	cmd.Env = append(os.Environ(), "PATINA_API="+api)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), errb.String(), code
}

func TestExecAndQueryAgainstAnAgent(t *testing.T) {
	api, proc, stderr := startAgentProcess(t)

	out, errOut, code := patina(t, api, "exec", "INSERT INTO machines (id, app, port, state) VALUES (?, ?, ?, ?)", "--param", "m1", "--param", "web", "--param", "8080", "--param", "started")
	if code != 0 || !strings.Contains(out, "version: 1") {
		t.Fatalf("exec: %d %q %q", code, out, errOut)
	}
	out, _, code = patina(t, api, "exec", "UPDATE machines SET state = ? WHERE id = ?", "-p", "started", "-p", "m1")
	if code != 0 || !strings.Contains(out, "version: none") {
		t.Fatalf("no-op exec: %d %q", code, out)
	}
	out, errOut, code = patina(t, api, "query", "SELECT id, app, port, 2.0 AS r, NULL AS n FROM machines WHERE app = ?", "--param", "web")
	want := "id  app  port  r    n\nm1  web  8080  2.0  NULL\n(1 rows)\n"
	if code != 0 || out != want {
		t.Fatalf("query: %d\n%s\nwant\n%s\n%s", code, out, want, errOut)
	}
	out, _, code = patina(t, api, "query", "SELECT port, id FROM machines", "--json")
	if code != 0 || strings.TrimSpace(out) != `{"port":8080,"id":"m1"}` {
		t.Fatalf("query --json: %d %q", code, out)
	}
	if _, errOut, code := patina(t, api, "query", "SELECT 1 AS id, 2 AS id", "--json"); code == 0 || !strings.Contains(errOut, `column "id" appears twice`) {
		t.Fatalf("query --json with a repeated column name: %d %q", code, errOut)
	}
	// A --param is one parameter, as given: commas and spaces included.
	out, errOut, code = patina(t, api, "query", "SELECT ? AS a, ? AS b, length(?) AS n", "--param", "hello, world", "--param", "x,y", "--param", "  x ")
	if want := "a             b    n\nhello, world  x,y  4\n(1 rows)\n"; code != 0 || out != want {
		t.Fatalf("params with commas and spaces: %d\n%s\nwant\n%s\n%s", code, out, want, errOut)
	}

	// Errors: non-zero exit and the server's message.
	_, errOut, code = patina(t, api, "exec", "INSERT INTO nope VALUES (1)")
	if code == 0 || !strings.Contains(errOut, "no such table: nope") {
		t.Fatalf("exec error: %d %q", code, errOut)
	}
	_, errOut, code = patina(t, api, "query", "DELETE FROM machines")
	if code == 0 || !strings.Contains(errOut, "not read-only") {
		t.Fatalf("query error: %d %q", code, errOut)
	}
	_, errOut, code = patina(t, "http://"+freeAddr(t), "query", "SELECT 1")
	if code == 0 || !strings.Contains(errOut, "connection refused") {
		t.Fatalf("unreachable agent: %d %q", code, errOut)
	}

	// SIGTERM stops the agent cleanly with exit 0.
	proc.Process.Signal(syscall.SIGTERM)
	if err := proc.Wait(); err != nil {
		t.Fatalf("agent exit after SIGTERM: %v\n%s", err, stderr)
	}
	if !strings.Contains(stderr.String(), "agent stopped") {
		t.Fatalf("no clean stop in the log:\n%s", stderr)
	}
}

// TestExitCodes: a command's own exit code is the process's: region
// health exits 2 when the global directory is unreachable, a usage error
// 2, a failed command 1.
func TestExitCodes(t *testing.T) {
	if _, errOut, code := patina(t, "", "region", "health", "--global", freeAddr(t), "--timeout", "2s"); code != 2 {
		t.Fatalf("region health, global directory unreachable: exit %d, want 2\n%s", code, errOut)
	}
	if _, errOut, code := patina(t, "", "query"); code != 2 || !strings.Contains(errOut, "want exactly one SQL statement") {
		t.Fatalf("query without SQL: exit %d, want 2\n%s", code, errOut)
	}
	if _, errOut, code := patina(t, "http://"+freeAddr(t), "query", "SELECT 1"); code != 1 {
		t.Fatalf("query against nothing: exit %d, want 1\n%s", code, errOut)
	}
	// Every kind of usage error is 2: an unknown flag, a bad flag value,
	// a required flag left out, an unknown command or subcommand.
	for _, args := range [][]string{
		{"exec", "--nosuch", "x"},
		{"bench", "throughput", "--nodes", "x"},
		{"tls", "cert"},
		{"apps"},
		{"nosuchcmd"},
		{"bench", "nosuch"},
	} {
		if _, errOut, code := patina(t, "", args...); code != 2 {
			t.Errorf("%v: exit %d, want 2\n%s", args, code, errOut)
		}
	}
	if _, errOut, _ := patina(t, "", "bench", "nosuch"); !strings.Contains(errOut, `unknown command "nosuch" (see patina bench --help)`) {
		t.Errorf("unknown subcommand: %s", errOut)
	}
	if _, errOut, _ := patina(t, "", "region", "health"); !strings.Contains(errOut, "--global") || !strings.Contains(errOut, "--endpoints") {
		t.Errorf("region health without a directory: %s", errOut)
	}
}

func TestFlagsFirst(t *testing.T) {
	got := strings.Join(flagsFirst([]string{"patina", "exec", "SQL ?", "--param", "1", "-p=2", "--json"}), " ")
	if want := "patina exec --param 1 -p=2 --json -- SQL ?"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// --agent-binary names a binary that exists, and does not go with
// --in-process.
func TestBenchAgentBinaryIsChecked(t *testing.T) {
	for args, want := range map[string]string{
		"--agent-binary /nonexistent/patina":            "--agent-binary: stat /nonexistent/patina",
		"--agent-binary " + patinaBin + " --in-process": "does not go with --in-process",
	} {
		_, errOut, code := patina(t, "", append([]string{"bench", "throughput"}, strings.Fields(args)...)...)
		if code != 2 || !strings.Contains(errOut, want) {
			t.Errorf("%s: exit %d, %q", args, code, errOut)
		}
	}
}

// A negative --procs is refused before anything starts, by every bench
// command that takes it.
func TestBenchRefusesNegativeProcs(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "throughput", "--procs", "-1"},
		{"bench", "propagation", "--procs", "-3"},
		{"bench", "etcd", "throughput", "--procs", "-1"},
	} {
		out, err := exec.Command(patinaBin, args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "--procs must be at least 1") {
			t.Fatalf("%v: err %v, output %q", args, err, out)
		}
	}
}
