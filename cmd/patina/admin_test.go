package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReloadBackupRestore(t *testing.T) {
	wd, _ := os.Getwd()
	schema := t.TempDir()
	regional, _ := filepath.Glob(filepath.Join(wd, "..", "..", "schemas", "regional", "*.sql"))
	for _, f := range regional {
		data, _ := os.ReadFile(f)
		os.WriteFile(filepath.Join(schema, filepath.Base(f)), data, 0o644)
	}
	api, _, _, cfg := startAgentWith(t, schema, "admin_token = \"adm\"\n")

	out, errOut, code := patina(t, api, "reload", "--token", "adm")
	if code != 0 || out != "schema unchanged: tables hosts, machine_checks, machines\n" {
		t.Fatalf("reload: %d %q %q", code, out, errOut)
	}
	os.WriteFile(filepath.Join(schema, "zz_apps.sql"), []byte(`CREATE TABLE apps (name TEXT NOT NULL PRIMARY KEY, owner TEXT);`), 0o644)
	if _, errOut, code := patina(t, api, "reload"); code == 0 || !strings.Contains(errOut, "admin token") {
		t.Fatalf("reload without the admin token: %d %q", code, errOut)
	}
	out, errOut, code = patina(t, api, "reload", "--token", "adm")
	if code != 0 || out != "schema changed: tables apps, hosts, machine_checks, machines\n" {
		t.Fatalf("reload: %d %q %q", code, out, errOut)
	}
	if _, errOut, code := patina(t, api, "exec", "INSERT INTO apps (name, owner) VALUES ('web', 'ops')"); code != 0 {
		t.Fatalf("write to the reloaded table: %q", errOut)
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "b.db")
	out, errOut, code = patina(t, api, "backup", file, "--token", "adm")
	if code != 0 || !strings.Contains(out, "wrote "+file) {
		t.Fatalf("backup: %d %q %q", code, out, errOut)
	}
	if _, errOut, code := patina(t, api, "backup", filepath.Join(dir, "c.db")); code == 0 || !strings.Contains(errOut, "401") {
		t.Fatalf("backup without the admin token: %d %q", code, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "c.db.tmp")); !os.IsNotExist(err) {
		t.Fatal("a failed backup left its temporary file")
	}

	// Into the running agent's own database: refused.
	if _, errOut, code := patina(t, api, "restore", file, "--config", cfg, "--force"); code == 0 || !strings.Contains(errOut, "stop the agent first") {
		t.Fatalf("restore under a running agent: %d %q", code, errOut)
	}
	newCfg := filepath.Join(dir, "new.toml")
	os.WriteFile(newCfg, []byte(fmt.Sprintf("[db]\npath = %q\n", filepath.Join(dir, "new.db"))), 0o644)
	out, errOut, code = patina(t, api, "restore", file, "--config", newCfg)
	if code != 0 || !strings.Contains(out, "actor id: ") {
		t.Fatalf("restore: %d %q %q", code, out, errOut)
	}
	if _, errOut, code := patina(t, api, "restore", file, "--config", newCfg); code == 0 || !strings.Contains(errOut, "--force") {
		t.Fatalf("restore over a database: %d %q", code, errOut)
	}
	if _, _, code := patina(t, api, "restore", file, "--config", newCfg, "--force"); code != 0 {
		t.Fatal("restore --force")
	}
}

func TestFlagsFollowTheFileArgument(t *testing.T) {
	got := strings.Join(flagsFirst([]string{"patina", "restore", "in.db", "--config", "a.toml", "--force"}), " ")
	if want := "patina restore --config a.toml --force -- in.db"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
