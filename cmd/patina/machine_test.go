package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/regional"
)

// machineCLI runs `patina ARGS` against a host API.
func machineCLI(t *testing.T, hostAPI string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(patinaBin, args...)
	cmd.Env = append(os.Environ(), "PATINA_HOST_API="+hostAPI, "PATINA_HOST_TOKEN=t0ken")
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

// TestHostAndMachineCommands: `patina host` publishes to a `patina
// agent`; `patina machine` creates, lists, stops and destroys through it.
func TestHostAndMachineCommands(t *testing.T) {
	ctx := context.Background()
	agentAPI, _, _ := startAgentProcess(t)
	agent, _ := client.New(agentAPI, "")
	dir := t.TempDir()
	addr := freeAddr(t)
	cfg := filepath.Join(dir, "host.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`[host]
name = "worker-1"
region = "ams"
db = %q
[agent]
api = [%q]
[api]
addr = %q
token = "t0ken"
`, filepath.Join(dir, "host.db"), agentAPI, addr)), 0o644)
	var stderr bytes.Buffer
	proc := exec.Command(patinaBin, "host", "--config", cfg)
	proc.Stderr = &stderr
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proc.Process.Kill(); proc.Wait() })
	hostAPI := "http://" + addr
	waitUntil(t, "the host API answering", func() bool {
		resp, err := http.Get(hostAPI + "/v1/machines")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})

	out, errOut, code := machineCLI(t, hostAPI, "machine", "create", "--app", "web", "--id", "web-1", "--check", "http:/@100ms", "--start")
	if code != 0 || !strings.Contains(out, "created web-1: app web") {
		t.Fatalf("create: %d %q %q", code, out, errOut)
	}
	waitUntil(t, "the check passing in the agent", func() bool {
		rows, err := agent.Query(ctx, client.Statement{Query: "SELECT status FROM machine_checks WHERE machine_id = 'web-1'"})
		if err != nil {
			return false
		}
		defer rows.Close()
		return rows.Next() && rows.Row()[0] == "passing"
	})
	out, _, code = machineCLI(t, hostAPI, "machine", "list")
	if code != 0 || !strings.Contains(out, "web-1") || !strings.Contains(out, "http=passing") {
		t.Fatalf("list: %d %q", code, out)
	}
	out, _, code = machineCLI(t, hostAPI, "machine", "list", "--json")
	var list []regional.Machine
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) != 1 || list[0].State != "started" {
		t.Fatalf("list --json: %d %q", code, out)
	}
	if out, errOut, code = machineCLI(t, hostAPI, "machine", "stop", "web-1"); code != 0 || !strings.Contains(out, "stop web-1") {
		t.Fatalf("stop: %d %q %q", code, out, errOut)
	}
	if out, errOut, code = machineCLI(t, hostAPI, "machine", "destroy", "web-1"); code != 0 || !strings.Contains(out, "destroyed") {
		t.Fatalf("destroy: %d %q %q", code, out, errOut)
	}
	waitUntil(t, "the machine gone from the agent", func() bool {
		rows, err := agent.Query(ctx, client.Statement{Query: "SELECT count(*) FROM machines"})
		if err != nil {
			return false
		}
		defer rows.Close()
		return rows.Next() && rows.Row()[0] == int64(0)
	})

	// Errors: the host's message and a non-zero exit.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"machine", "create", "--app", "Web!"}, `app "Web!"`},
		{[]string{"machine", "create", "--app", "web", "--check", "udp"}, `kind "udp"`},
		{[]string{"machine", "start", "nope"}, "no such machine"},
		{[]string{"machine", "stop"}, "want one machine id"},
	} {
		if _, errOut, code := machineCLI(t, hostAPI, tc.args...); code == 0 || !strings.Contains(errOut, tc.want) {
			t.Errorf("%v: %d %q, want %q", tc.args, code, errOut, tc.want)
		}
	}
	cmd := exec.Command(patinaBin, "machine", "list", "--host-api", hostAPI)
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "bearer token") {
		t.Fatalf("without the token: %v %s", err, out)
	}

	proc.Process.Signal(syscall.SIGTERM)
	if err := proc.Wait(); err != nil {
		t.Fatalf("host exit after SIGTERM: %v\n%s", err, &stderr)
	}
	if !strings.Contains(stderr.String(), "host stopped") {
		t.Fatalf("no clean stop in the log:\n%s", &stderr)
	}
}
