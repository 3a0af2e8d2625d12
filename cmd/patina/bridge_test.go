package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestBridgeCommandRefusesUnknownKeys: `patina bridge` exits non-zero
// naming a key its configuration does not know.
func TestBridgeCommandRefusesUnknownKeys(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "bridge.toml")
	text := `[bridge]
region = "syd"
flush_intervall = "1s"
[region]
agents = ["http://127.0.0.1:1"]
[global]
agents = ["http://127.0.0.1:2"]
`
	if err := os.WriteFile(cfg, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd := exec.Command(patinaBin, "bridge", "--config", cfg)
	cmd.Stderr = &stderr
	if err := cmd.Run(); err == nil {
		t.Fatal("patina bridge ran with an unknown key")
	}
	if !strings.Contains(stderr.String(), "unknown key bridge.flush_intervall") {
		t.Fatalf("stderr %q does not name the unknown key", stderr.String())
	}
}
