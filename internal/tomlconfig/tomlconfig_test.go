package tomlconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type conf struct {
	Server struct {
		Addr string `toml:"addr"`
		Port int    `toml:"port"`
	} `toml:"server"`
}

func (c conf) Validate() error {
	if c.Server.Port <= 0 {
		return errors.New("server.port must be positive")
	}
	return nil
}

func TestParse(t *testing.T) {
	def := conf{}
	def.Server.Addr, def.Server.Port = "127.0.0.1", 80
	got, err := Parse("[server]\nport = 8080\n", "a.toml", def)
	if err != nil || got.Server.Port != 8080 || got.Server.Addr != "127.0.0.1" {
		t.Fatalf("over the defaults: %+v %v", got, err)
	}
	for text, want := range map[string]string{
		"[server]\nprot = 1\n": "config a.toml: unknown key server.prot",
		"[server]\nport = 0\n": "config a.toml: server.port must be positive",
		"[server\n":            "config a.toml: toml:",
	} {
		if _, err := Parse(text, "a.toml", def); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("%q: %v, want %q", text, err, want)
		}
	}
	path := filepath.Join(t.TempDir(), "b.toml")
	os.WriteFile(path, []byte("[server]\naddr = \"::1\"\n"), 0o644)
	if got, err := Load(path, def); err != nil || got.Server.Addr != "::1" {
		t.Fatalf("load: %+v %v", got, err)
	}
	if _, err := Load(path+".missing", def); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing file: %v", err)
	}
}
