package proxy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/locate"
)

const minimal = `
[region]
name = "ams"
lookup = ["127.0.0.1:7950"]
`

func TestConfigDefaults(t *testing.T) {
	cfg, err := ParseConfig(minimal, "proxy.toml")
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Proxy
	if p.Addr != "127.0.0.1:8000" || p.Domain != "internal" || p.AppHeader != "" || p.MaxAttempts != 3 ||
		p.IdleTimeout != 5*time.Minute || p.DialTimeout != time.Second || p.RetryBodyLimit != 64<<10 || p.ShutdownTimeout != 10*time.Second {
		t.Fatalf("proxy defaults: %+v", p)
	}
	if cfg.Cache.TTL != 2*time.Second || cfg.Cache.Timeout != time.Second || cfg.Log.Format != "text" || len(cfg.Global.Agents) != 0 {
		t.Fatalf("defaults: %+v", cfg)
	}
	cfg, err = ParseConfig(minimal+`
[proxy]
addr = "0.0.0.0:80"
domain = "apps.example.com"
app_header = "Patina-App"
max_attempts = 5
idle_timeout = "30s"
dial_timeout = "250ms"
retry_body_limit = 0
shutdown_timeout = "0s"
[global]
agents = ["10.0.0.9:7950", "10.1.0.9:7950"]
[grpc]
token = "s3cret"
ca_file = "ca.pem"
cert_file = "proxy.pem"
key_file = "proxy-key.pem"
[cache]
ttl = "500ms"
timeout = "2s"
[log]
format = "json"
level = "debug"
`, "proxy.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Proxy.Domain != "apps.example.com" || cfg.Proxy.AppHeader != "Patina-App" || cfg.Proxy.MaxAttempts != 5 ||
		cfg.Proxy.IdleTimeout != 30*time.Second || cfg.Proxy.DialTimeout != 250*time.Millisecond || cfg.Proxy.RetryBodyLimit != 0 ||
		len(cfg.Global.Agents) != 2 || cfg.GRPC.Token != "s3cret" || cfg.Cache.TTL != 500*time.Millisecond || cfg.Log.Level != "debug" {
		t.Fatalf("parsed: %+v", cfg)
	}
	if d := locate.ConfigFrom(cfg.Region, cfg.Global, cfg.GRPC, cfg.Cache, nil).Dial; d.Token != "s3cret" || d.CAFile != "ca.pem" || d.CertFile != "proxy.pem" || d.KeyFile != "proxy-key.pem" {
		t.Fatalf("dial options: %+v", d)
	}
}

// TestConfigErrors: unknown keys and bad values are errors naming them.
func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{minimal + "[proxy]\nport = 80\n", "unknown key proxy.port"},
		{minimal + "[cache]\nttl = \"1s\"\nsize = 10\n", "unknown key cache.size"},
		{minimal + "[tls]\nca = \"x\"\n", "unknown key tls, tls.ca"},
		{strings.Replace(minimal, "[region]", "[region]\nlookups = []", 1), "unknown key region.lookups"},
		{minimal + "[region]\n", "region"}, // a table defined twice: a TOML error
		{strings.Replace(minimal, `name = "ams"`, "", 1), "region.name is required"},
		{strings.Replace(minimal, `name = "ams"`, `name = "Amsterdam!"`, 1), `region.name "Amsterdam!"`},
		{strings.Replace(minimal, `lookup = ["127.0.0.1:7950"]`, "", 1), "region.lookup is required"},
		{strings.Replace(minimal, `lookup = ["127.0.0.1:7950"]`, `lookup = ["nohost"]`, 1), `region.lookup "nohost"`},
		{minimal + "[global]\nagents = [\"http://x:1\"]\n", `global.agents "http://x:1"`},
		{minimal + "[proxy]\naddr = \"8000\"\n", `proxy.addr "8000"`},
		{minimal + "[proxy]\ndomain = \"\"\n", "proxy.domain"},
		{minimal + "[proxy]\ndomain = \".internal\"\n", "proxy.domain"},
		{minimal + "[proxy]\napp_header = \"Patina App\"\n", "proxy.app_header"},
		{minimal + "[proxy]\nmax_attempts = 0\n", "proxy.max_attempts 0"},
		{minimal + "[proxy]\nidle_timeout = 5\n", "proxy.idle_timeout"},
		{minimal + "[proxy]\ndial_timeout = \"soon\"\n", "soon"},
		{minimal + "[proxy]\nretry_body_limit = -1\n", "proxy.retry_body_limit"},
		{minimal + "[cache]\nttl = \"0s\"\n", "cache.ttl"},
		{minimal + "[grpc]\ncert_file = \"c.pem\"\n", "grpc.cert_file and grpc.key_file"},
		{minimal + "[grpc]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n", "grpc.cert_file needs grpc.ca_file"},
		{minimal + "[log]\nlevel = \"loud\"\n", "log.level"},
		{minimal + "[log]\nformat = \"xml\"\n", "log.format"},
	} {
		_, err := ParseConfig(tc.text, "proxy.toml")
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "proxy.toml") {
			t.Errorf("%q: got %v, want an error naming %q", tc.text, err, tc.want)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "proxy.toml")
	if _, err := LoadConfig(path); err == nil {
		t.Fatal("a missing file loaded")
	}
	if err := os.WriteFile(path, []byte(minimal), 0o644); err != nil {
		t.Fatal(err)
	}
	if cfg, err := LoadConfig(path); err != nil || cfg.Region.Name != "ams" {
		t.Fatalf("%+v %v", cfg, err)
	}
	// The example shipped in deploy/config parses.
	if _, err := LoadConfig("../../deploy/config/ams/proxy.toml"); err != nil {
		t.Fatal(err)
	}
}
