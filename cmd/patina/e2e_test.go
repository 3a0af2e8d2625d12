package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/patina-db/patina/internal/devcluster/topology"
)

// TestDevProcessesEndToEnd drives the built binary the way an operator
// would: `patina dev --processes` runs every component as its own
// process; DNS, the proxies, gRPC lookups and region health answer; an
// agent killed with SIGKILL turns its region degraded until its
// supervisor has started it again.
func TestDevProcessesEndToEnd(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := filepath.Join(t.TempDir(), "dev")
	dev := exec.Command(patinaBin, "dev", "--processes", "--data", dir, "--agents-per-region", "2", "--global-agents", "1", "--restart-delay", "4s")
	stdout, err := dev.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	dev.Stderr = &stderr
	if err := dev.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- dev.Wait() }()
	defer func() {
		dev.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("patina dev: %v\n%s", err, stderr.String())
			}
		case <-time.After(time.Minute):
			dev.Process.Kill()
			t.Error("patina dev did not stop within a minute of Ctrl-C")
		}
		// Every child went with it.
		if pids := childPids(dir); len(pids) > 0 {
			t.Errorf("processes left running: %v", pids)
			for _, p := range pids {
				syscall.Kill(p, syscall.SIGKILL)
			}
		}
	}()
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "Ctrl-C stops everything") {
				close(ready)
				io.Copy(io.Discard, stdout)
				return
			}
		}
	}()
	select {
	case <-ready:
	case err := <-exited:
		t.Fatalf("patina dev exited: %v\n%s", err, stderr.String())
	case <-ctx.Done():
		t.Fatalf("patina dev never printed its endpoints\n%s", stderr.String())
	}
	var e topology.Endpoints
	data, err := os.ReadFile(filepath.Join(dir, "endpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatal(err)
	}
	ams := e.Regions["ams"]
	if len(e.Regions) != 3 || len(ams.Agents) != 2 || ams.DNS == "" || ams.Proxy == "" {
		t.Fatalf("endpoints.json: %s", data)
	}
	if n := len(childPids(dir)); n != 2*3+1+2*3+3+2*3 {
		t.Errorf("%d child processes, want 22 (6 agents, 1 global, 6 hosts, 3 bridges, 3 DNS, 3 proxies)", n)
	}

	// DNS from ams: web runs in every region, each on its own address.
	eventually(t, "web.internal lists every region", func() error {
		got, err := lookupA(ams.DNS, "web.internal.")
		if err != nil {
			return err
		}
		if want := []string{"127.0.1.1", "127.0.2.1", "127.0.3.1"}; !slices.Equal(got, want) {
			return fmt.Errorf("got %v, want %v", got, want)
		}
		return nil
	})
	if got, err := lookupA(ams.DNS, "syd.web.internal."); err != nil || !slices.Equal(got, []string{"127.0.3.1"}) {
		t.Fatalf("syd.web.internal: %v %v", got, err)
	}

	// The ams proxy serves web from an ams machine.
	eventually(t, "the ams proxy serves web", func() error {
		req, _ := http.NewRequestWithContext(ctx, "GET", ams.Proxy+"/", nil)
		req.Host = "web.internal"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Patina-Region") != "ams" || resp.Header.Get("Patina-Machine") == "" {
			return fmt.Errorf("%d, region %q", resp.StatusCode, resp.Header.Get("Patina-Region"))
		}
		return nil
	})

	// gRPC: the global map and a region's Lookup, through the CLI.
	out, err := exec.CommandContext(ctx, patinaBin, "apps", "worker", "--global", e.Global.Agents[0].GRPC).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "syd") {
		t.Fatalf("patina apps worker: %v\n%s", err, out)
	}
	out, err = exec.CommandContext(ctx, patinaBin, "machines", "--app", "web", "--region", "iad", "--global", e.Global.Agents[0].GRPC).CombinedOutput()
	if err != nil || strings.Count(string(out), " iad ") != 3 {
		t.Fatalf("patina machines --region iad: %v\n%s", err, out)
	}

	health := func() (int, string) {
		cmd := exec.CommandContext(ctx, patinaBin, "region", "health", "--endpoints", filepath.Join(dir, "endpoints.json"), "--region", "ams")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), string(out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, string(out)
	}
	waitHealth := func(what string, want int) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			code, out := health()
			if code == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: region health exit %d, want %d:\n%s", what, code, want, out)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	waitHealth("at start", 0)

	// kill -9 an ams agent: degraded, then healthy once restarted.
	pids := childPids(dir, "ams-2.toml")
	if len(pids) != 1 {
		t.Fatalf("ams-2's process: %v", pids)
	}
	if err := syscall.Kill(pids[0], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitHealth("ams-2 killed", 1)
	waitHealth("ams-2 restarted", 0)
	if again := childPids(dir, "ams-2.toml"); len(again) != 1 || again[0] == pids[0] {
		t.Fatalf("ams-2 was not started again: %v", again)
	}
}

// lookupA asks server for name's A records, sorted.
func lookupA(server, name string) ([]string, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	in, err := dns.Exchange(m, server)
	if err != nil {
		return nil, err
	}
	if in.Rcode != dns.RcodeSuccess {
		return nil, fmt.Errorf("%s: %s", name, dns.RcodeToString[in.Rcode])
	}
	var out []string
	for _, rr := range in.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// childPids finds the processes whose command line names a file under
// dir (and contains every extra string).
func childPids(dir string, extra ...string) []int {
	entries, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range entries {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmdline), "\x00")
		if len(args) < 4 || args[2] != "--config" || !strings.HasPrefix(args[3], dir) {
			continue
		}
		match := true
		for _, x := range extra {
			match = match && strings.Contains(args[3], x)
		}
		if match {
			pids = append(pids, pid)
		}
	}
	return pids
}

// eventually retries fn until it succeeds or a minute passes.
func eventually(t *testing.T, what string, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
