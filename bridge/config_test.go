package bridge

import (
	"strings"
	"testing"
	"time"
)

const minimal = `
[bridge]
region = "syd"
[region]
agents = ["http://127.0.0.1:8080"]
[global]
agents = ["http://127.0.0.1:9080", "http://127.0.0.1:9081"]
`

func TestConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig(minimal, "bridge.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Bridge.FlushInterval != time.Second || cfg.Bridge.HeartbeatInterval != 10*time.Second {
		t.Fatalf("intervals %s %s", cfg.Bridge.FlushInterval, cfg.Bridge.HeartbeatInterval)
	}
	if cfg.Bridge.Name == "" || cfg.Log.Level != "info" || cfg.Region.FailoverAfter <= 0 || cfg.Global.Timeout <= 0 {
		t.Fatalf("defaults not filled: %+v", cfg)
	}
	cfg, err = ParseConfig(minimal+`[directory]
lookup = ["10.0.0.1:7950"]
latitude = -33.9
longitude = 151.2
[log]
format = "json"
`, "bridge.toml")
	if err != nil || cfg.Directory.Lookup[0] != "10.0.0.1:7950" || cfg.Directory.Latitude != -33.9 {
		t.Fatalf("%+v %v", cfg, err)
	}
	text := strings.Replace(minimal, `region = "syd"`, "region = \"syd\"\nflush_interval = \"250ms\"", 1)
	if cfg, err := ParseConfig(text, "x"); err != nil || cfg.Bridge.FlushInterval != 250*time.Millisecond {
		t.Fatalf("flush_interval: %v %v", cfg.Bridge.FlushInterval, err)
	}
}

// TestConfigErrors: unknown keys and bad values are errors naming them.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{minimal + "[bridge.extra]\nx = 1\n", "bridge.extra.x"},
		{minimal + "[global]\n", "global"}, // a table defined twice: a TOML error
		{strings.Replace(minimal, "[region]", "[region]\nagent = \"http://x\"", 1), "unknown key region.agent"},
		{minimal + "[directory]\nlookups = []\n", "unknown key directory.lookups"},
		{strings.Replace(minimal, `region = "syd"`, "", 1), "bridge.region is required"},
		{strings.Replace(minimal, `region = "syd"`, `region = "Sydney!"`, 1), "bridge.region \"Sydney!\""},
		{strings.Replace(minimal, `agents = ["http://127.0.0.1:8080"]`, "", 1), "region.agents is required"},
		{strings.Replace(minimal, `agents = ["http://127.0.0.1:8080"]`, `agents = ["127.0.0.1:8080"]`, 1), `region.agents "127.0.0.1:8080"`},
		{strings.Replace(minimal, `region = "syd"`, "region = \"syd\"\nflush_interval = 5", 1), "bridge.flush_interval"},
		{strings.Replace(minimal, `region = "syd"`, "region = \"syd\"\nheartbeat_interval = \"soon\"", 1), "soon"},
		{minimal + "[directory]\nlookup = [\"nohost\"]\n", `directory.lookup "nohost"`},
		{minimal + "[directory]\nlatitude = 91.0\n", "directory.latitude"},
		{minimal + "[log]\nlevel = \"loud\"\n", "log.level"},
		{minimal + "[log]\nformat = \"xml\"\n", "log.format"},
	} {
		_, err := ParseConfig(tc.text, "bridge.toml")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "bridge.toml") {
			t.Errorf("config %q: error %v, want one naming %q and the file", tc.text, err, tc.want)
		}
	}
	if _, err := LoadConfig("/nonexistent/bridge.toml"); err == nil {
		t.Error("a missing file loaded")
	}
}
