package main

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
)

// TestDNSCommand: `patina dns` refuses an unknown key by name; with a
// good configuration it serves, answers SERVFAIL (not silence) while its
// region cannot be reached, and stops cleanly on SIGTERM.
func TestDNSCommand(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.toml")
	os.WriteFile(bad, []byte("[dns]\nzones = \"internal\"\n[region]\nname = \"ams\"\nlookup = [\"127.0.0.1:1\"]\n"), 0o644)
	var stderr bytes.Buffer
	cmd := exec.Command(patinaBin, "dns", "--config", bad)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil || !strings.Contains(stderr.String(), "unknown key dns.zones") {
		t.Fatalf("unknown key: %v, stderr %q", err, stderr.String())
	}

	good := filepath.Join(dir, "dns.toml")
	os.WriteFile(good, []byte("[dns]\naddr = \"127.0.0.1:0\"\n[region]\nname = \"ams\"\nlookup = [\"127.0.0.1:1\"]\n[cache]\ntimeout = \"200ms\"\n"), 0o644)
	cmd = exec.Command(patinaBin, "dns", "--config", good)
	out, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := bufio.NewScanner(out)
	addr := ""
	for addr == "" && lines.Scan() {
		if m := regexp.MustCompile(`msg="dns serving" addr=(\S+)`).FindStringSubmatch(lines.Text()); m != nil {
			addr = m[1]
		}
	}
	if addr == "" {
		t.Fatal("patina dns did not say where it serves")
	}
	go func() {
		for lines.Scan() {
		}
	}()
	c := &miekg.Client{Timeout: 5 * time.Second}
	for name, rcode := range map[string]int{"web.internal.": miekg.RcodeServerFailure, "example.com.": miekg.RcodeRefused} {
		req := new(miekg.Msg)
		req.SetQuestion(name, miekg.TypeA)
		resp, _, err := c.Exchange(req, addr)
		if err != nil || resp.Rcode != rcode {
			t.Fatalf("%s: got %v %v, want %s", name, resp, err, miekg.RcodeToString[rcode])
		}
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("patina dns did not stop cleanly: %v", err)
	}
}
