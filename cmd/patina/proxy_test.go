package main

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestProxyCommand: `patina proxy` refuses an unknown key naming it; with
// a valid configuration it serves (here without any reachable agent: a
// request naming no app is a 400, one for an app it cannot locate a 502)
// and exits cleanly on SIGTERM.
func TestProxyCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[proxy]\nmax_attempt = 2\n[region]\nname = \"ams\"\nlookup = [\"127.0.0.1:1\"]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(patinaBin, "proxy", "--config", bad)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "unknown key proxy.max_attempt") {
		t.Fatalf("patina proxy with an unknown key: %v, stderr %q", err, stderr.String())
	}

	addr := freeAddr(t)
	good := filepath.Join(dir, "proxy.toml")
	text := "[proxy]\naddr = \"" + addr + "\"\n[region]\nname = \"ams\"\nlookup = [\"" + freeAddr(t) + "\"]\n[cache]\ntimeout = \"200ms\"\n"
	if err := os.WriteFile(good, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	proc := exec.Command(patinaBin, "proxy", "--config", good)
	proc.Stderr = io.Discard
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	defer proc.Process.Kill()
	get := func(host string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if code, _ := get("localhost"); code == http.StatusBadRequest {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("patina proxy did not answer within 30s")
		}
		time.Sleep(25 * time.Millisecond)
	}
	if code, body := get("web.internal"); code != http.StatusBadGateway || !strings.Contains(body, "unreachable: ams") {
		t.Fatalf("web with no agent reachable: %d %q", code, body)
	}
	if err := proc.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := proc.Wait(); err != nil {
		t.Fatalf("patina proxy on SIGTERM: %v", err)
	}
}
