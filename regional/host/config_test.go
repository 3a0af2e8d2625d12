package host

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestConfigDefaultsAndErrors(t *testing.T) {
	cfg, err := ParseConfig(`
[host]
name = "h1"
region = "ams"
db = "/tmp/h1.db"
`, "host.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host.Address != "127.0.0.1" || cfg.API.Addr != "127.0.0.1:8090" || cfg.Agent.API[0] != "http://127.0.0.1:8080" ||
		cfg.republishInterval() != 30*time.Second || cfg.checkInterval() != 10*time.Second || cfg.Agent.BatchSize != 200 {
		t.Fatalf("defaults: %+v", cfg)
	}
	for name, tc := range map[string]struct{ text, want string }{
		"unknown key":     {"[host]\nname = \"h\"\nregion = \"ams\"\ndb = \"x\"\nnmae = \"y\"\n", "unknown key host.nmae"},
		"unknown section": {"[host]\nname = \"h\"\nregion = \"ams\"\ndb = \"x\"\n[agnet]\napi = []\n", "unknown key agnet"},
		"missing name":    {"[host]\nregion = \"ams\"\ndb = \"x\"\n", "host.name is required"},
		"missing db":      {"[host]\nname = \"h\"\nregion = \"ams\"\n", "host.db is required"},
		"bad region":      {"[host]\nname = \"h\"\nregion = \"AMS!\"\ndb = \"x\"\n", `host.region "AMS!"`},
		"bad address":     {"[host]\nname = \"h\"\nregion = \"ams\"\ndb = \"x\"\naddress = \"localhost\"\n", `host.address "localhost"`},
		"bad interval":    {"[host]\nname = \"h\"\nregion = \"ams\"\ndb = \"x\"\n[agent]\nrepublish_interval = \"often\"\n", "agent.republish_interval"},
		"no agents":       {"[host]\nname = \"h\"\nregion = \"ams\"\ndb = \"x\"\n[agent]\napi = []\n", "agent.api"},
		"bad agent url":   {"[host]\nname = \"h\"\nregion = \"ams\"\ndb = \"x\"\n[agent]\napi = [\"127.0.0.1:8080\"]\n", `agent.api "127.0.0.1:8080"`},
		"bad log level":   {"[host]\nname = \"h\"\nregion = \"ams\"\ndb = \"x\"\n[log]\nlevel = \"loud\"\n", `log.level "loud"`},
		"bad toml":        {"[host\n", "host.toml"},
	} {
		_, err := ParseConfig(tc.text, "host.toml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, tc.want)
		}
	}
}

func TestParseCheckSpec(t *testing.T) {
	for in, want := range map[string]CheckSpec{
		"http":             {Kind: "http"},
		"http:/healthz":    {Kind: "http", Path: "/healthz"},
		"http:/a:b@1500ms": {Kind: "http", Path: "/a:b", IntervalMS: 1500},
		"tcp@2s":           {Kind: "tcp", IntervalMS: 2000},
	} {
		got, err := ParseCheckSpec(in)
		if err != nil || got != want {
			t.Errorf("%s: %+v %v, want %+v", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{"udp": `kind "udp"`, "tcp@soon": `interval "soon"`, "http@-1s": `interval "-1s"`, "http@500us": `interval "500us"`} {
		if _, err := ParseCheckSpec(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: %v, want %q", in, err, msg)
		}
	}
}

// TestDeployExampleParses: the example configuration in deploy/config is valid.
func TestDeployExampleParses(t *testing.T) {
	if _, err := LoadConfig(filepath.Join("..", "..", "deploy", "config", "ams", "host.toml")); err != nil {
		t.Fatal(err)
	}
}
