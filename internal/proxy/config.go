package proxy

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/locate"
	"github.com/patina-db/patina/internal/tomlconfig"
	"github.com/patina-db/patina/regional"
)

// Config is a proxy's TOML configuration. Every key has a default except
// the region's name and its agents' Lookup addresses.
type Config struct {
	Proxy  ProxyConfig     `toml:"proxy"`
	Region RegionConfig    `toml:"region"`
	Global GlobalConfig    `toml:"global"`
	GRPC   GRPCConfig      `toml:"grpc"`
	Cache  CacheConfig     `toml:"cache"`
	Log    agent.LogConfig `toml:"log"`
}

// ProxyConfig is the HTTP side: where it listens, how it routes and
// retries.
type ProxyConfig struct {
	// Addr is the address the proxy listens on (default "127.0.0.1:8000").
	Addr string `toml:"addr"`
	// Domain is the suffix of the Host names routed: <app>.<domain>
	// (default "internal").
	Domain string `toml:"domain"`
	// AppHeader, when set, names a request header that names the app and
	// wins over the Host when present (e.g. "Patina-App"). Default: off.
	AppHeader string `toml:"app_header"`
	// MaxAttempts bounds how many machines one request is tried on,
	// retries included (default 3).
	MaxAttempts int `toml:"max_attempts"`
	// IdleTimeout is how long an app's state is kept after its last
	// request (default "5m").
	IdleTimeout time.Duration `toml:"idle_timeout"`
	// DialTimeout bounds a connection to a machine (default "1s"); a
	// machine that does not accept within it is retried on the next.
	DialTimeout time.Duration `toml:"dial_timeout"`
	// RetryBodyLimit is the largest request body, in bytes, buffered so
	// that an idempotent request can be retried after it was sent
	// (default 65536; 0 buffers none).
	RetryBodyLimit int64 `toml:"retry_body_limit"`
	// ShutdownTimeout bounds the wait for requests in flight when the
	// proxy stops (default "10s").
	ShutdownTimeout time.Duration `toml:"shutdown_timeout"`
}

// The [region], [global], [grpc] and [cache] sections are the ones every
// edge component shares.
type (
	RegionConfig = locate.RegionSection
	GlobalConfig = locate.GlobalSection
	GRPCConfig   = locate.GRPCSection
	CacheConfig  = locate.CacheSection
)

// DefaultConfig is a configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		Proxy: ProxyConfig{
			Addr: "127.0.0.1:8000", Domain: "internal", MaxAttempts: 3, IdleTimeout: 5 * time.Minute,
			DialTimeout: time.Second, RetryBodyLimit: 64 << 10, ShutdownTimeout: 10 * time.Second,
		},
		Cache: locate.DefaultCache(),
		Log:   agent.LogConfig{Format: "text", Level: "info"},
	}
}

// LoadConfig reads and validates a proxy configuration file.
func LoadConfig(path string) (Config, error) {
	return tomlconfig.Load(path, DefaultConfig())
}

// ParseConfig parses TOML text over the defaults; name is used in error
// messages. An unknown key is an error naming it.
func ParseConfig(text, name string) (Config, error) {
	return tomlconfig.Parse(text, name, DefaultConfig())
}

// Validate checks what the defaults cannot fill and names every problem.
func (c Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.Proxy.Addr); err != nil {
		errs = append(errs, fmt.Errorf("proxy.addr %q: want host:port", c.Proxy.Addr))
	}
	if err := validDomain(c.Proxy.Domain); err != nil {
		errs = append(errs, fmt.Errorf("proxy.domain %q: %w", c.Proxy.Domain, err))
	}
	if h := c.Proxy.AppHeader; h != "" && strings.ContainsAny(h, " \t\r\n:") {
		errs = append(errs, fmt.Errorf("proxy.app_header %q: not a header name", h))
	}
	if c.Proxy.MaxAttempts < 1 || c.Proxy.MaxAttempts > 10 {
		errs = append(errs, fmt.Errorf("proxy.max_attempts %d: want 1 to 10", c.Proxy.MaxAttempts))
	}
	if c.Proxy.RetryBodyLimit < 0 || c.Proxy.RetryBodyLimit > 16<<20 {
		errs = append(errs, fmt.Errorf("proxy.retry_body_limit %d: want 0 to 16 MiB", c.Proxy.RetryBodyLimit))
	}
	errs = append(errs,
		atLeast("proxy.idle_timeout", c.Proxy.IdleTimeout, 10*time.Millisecond),
		atLeast("proxy.dial_timeout", c.Proxy.DialTimeout, time.Millisecond),
		atLeast("proxy.shutdown_timeout", c.Proxy.ShutdownTimeout, 0),
		locate.ValidateSections(c.Region, c.Global, c.GRPC, c.Cache))
	if _, err := agent.NewLogger(c.Log, nil); err != nil {
		errs = append(errs, err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format %q: want text or json", c.Log.Format))
	}
	return errors.Join(errs...)
}

// validDomain accepts one or more DNS labels separated by dots.
func validDomain(d string) error {
	if d == "" {
		return errors.New("empty")
	}
	for _, label := range strings.Split(d, ".") {
		if !regional.ValidName(label) {
			return fmt.Errorf("label %q: want lower-case DNS labels separated by dots", label)
		}
	}
	return nil
}

// atLeast refuses a duration below min (a TOML integer is read as
// nanoseconds, which this catches).
func atLeast(key string, d, min time.Duration) error {
	if d < min {
		return fmt.Errorf("%s %s: want at least %s (a duration like \"1s\")", key, d, min)
	}
	return nil
}
