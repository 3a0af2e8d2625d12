package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/devcluster"
)

func TestTLSCommands(t *testing.T) {
	dir := t.TempDir()
	if out, errOut, code := patina(t, "", "tls", "ca", "--out", filepath.Join(dir, "ca")); code != 0 || !strings.Contains(out, "ca.pem") {
		t.Fatalf("tls ca: %d %s %s", code, out, errOut)
	}
	if _, errOut, code := patina(t, "", "tls", "ca", "--out", filepath.Join(dir, "ca")); code == 0 || !strings.Contains(errOut, "exists") {
		t.Fatalf("tls ca over an existing CA must refuse: %d %s", code, errOut)
	}
	out, errOut, code := patina(t, "", "tls", "cert", "--ca", filepath.Join(dir, "ca"), "--name", "n1", "--ip", "127.0.0.1", "--dns", "n1.local", "--out", filepath.Join(dir, "certs"))
	if code != 0 || !strings.Contains(out, "n1.pem") {
		t.Fatalf("tls cert: %d %s %s", code, out, errOut)
	}
	for _, f := range []string{"ca/ca.pem", "ca/ca-key.pem", "certs/n1.pem", "certs/n1-key.pem"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	if _, errOut, code := patina(t, "", "tls", "cert", "--ca", filepath.Join(dir, "ca"), "--name", "n2", "--ip", "not-an-ip", "--out", dir); code == 0 || !strings.Contains(errOut, "not an IP") {
		t.Fatalf("bad --ip: %d %s", code, errOut)
	}
	// An old key of that name is there: refused, and no certificate is
	// left beside a key that is not its own.
	oldKey := filepath.Join(dir, "certs", "n3-key.pem")
	if err := os.WriteFile(oldKey, []byte("an old key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := patina(t, "", "tls", "cert", "--ca", filepath.Join(dir, "ca"), "--name", "n3", "--out", filepath.Join(dir, "certs")); code == 0 || !strings.Contains(errOut, "exists") {
		t.Fatalf("tls cert over an existing key must refuse: %d %s", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "certs", "n3.pem")); err == nil {
		t.Fatal("a refused tls cert left n3.pem beside an old key")
	}
	if b, _ := os.ReadFile(oldKey); string(b) != "an old key\n" {
		t.Fatalf("the old key changed: %q", b)
	}
}

// TestRegionOfProcesses: three `patina agent` processes with mutual TLS
// form a cluster; a write through one is visible through another, and
// `patina cluster members` lists all three.
func TestRegionOfProcesses(t *testing.T) {
	ctx := context.Background()
	wd, _ := os.Getwd()
	r, err := devcluster.StartRegion(ctx, devcluster.RegionOptions{Nodes: 3, Dir: t.TempDir(), Binary: patinaBin,
		SchemaPaths: []string{filepath.Join(wd, "..", "..", "schemas", "regional")}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	}()
	out, errOut, code := patina(t, r.Nodes[0].API, "cluster", "members")
	if code != 0 || strings.Count(out, "alive") != 3 || !strings.Contains(out, "(self)") {
		t.Fatalf("cluster members: %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := patina(t, r.Nodes[0].API, "exec", "INSERT INTO machines (id, app) VALUES (?, ?)", "-p", "m1", "-p", "web"); code != 0 {
		t.Fatalf("exec: %s", errOut)
	}
	c, _ := client.New(r.Nodes[2].API, "")
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows, err := c.Query(ctx, client.Statement{Query: "SELECT app FROM machines WHERE id = 'm1'"})
		if err != nil {
			t.Fatal(err)
		}
		found := rows.Next() && rows.Row()[0] == "web"
		rows.Close()
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the write never reached the third agent")
		}
		time.Sleep(20 * time.Millisecond)
	}
	h, err := c.Health(ctx, "gaps=0")
	if err != nil || h.Members != 3 {
		t.Fatalf("health: %+v %v", h, err)
	}
}
