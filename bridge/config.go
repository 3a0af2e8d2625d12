package bridge

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/tomlconfig"
	"github.com/patina-db/patina/regional"
)

// Config is a bridge's TOML configuration. Every key has a default except
// the region's name and the agents' addresses.
type Config struct {
	Bridge    BridgeConfig    `toml:"bridge"`
	Region    RegionConfig    `toml:"region"`
	Global    GlobalConfig    `toml:"global"`
	Directory DirectoryConfig `toml:"directory"`
	Log       agent.LogConfig `toml:"log"`
}

// BridgeConfig is the bridge itself.
type BridgeConfig struct {
	// Name identifies this bridge in logs (default: the host name). Two
	// bridges of one region should have different names.
	Name string `toml:"name"`
	// Region is the region summarized: the region column of the global
	// rows this bridge writes. Required.
	Region string `toml:"region"`
	// FlushInterval is how often changed counts are written to the global
	// cluster, at most one transaction each time (default "1s").
	FlushInterval time.Duration `toml:"flush_interval"`
	// HeartbeatInterval is how often the region's directory row and
	// heartbeat are refreshed (default "10s").
	HeartbeatInterval time.Duration `toml:"heartbeat_interval"`
	// ReconcileInterval is how often the region's global rows are read
	// back and corrected where they differ from the region's truth
	// (default "1m"); a read that finds nothing to correct writes nothing.
	ReconcileInterval time.Duration `toml:"reconcile_interval"`
}

// RegionConfig is the regional cluster read from.
type RegionConfig struct {
	// Agents are the region's agents' HTTP APIs, http://host:port; the
	// bridge follows one and moves to the next when it fails. Required.
	Agents []string `toml:"agents"`
	// Token is the agents' bearer token, if they require one.
	Token string `toml:"token"`
	// FailoverAfter is how long the followed agent may stay unreachable
	// before the bridge moves to the next one (default "3s").
	FailoverAfter time.Duration `toml:"failover_after"`
}

// GlobalConfig is the global cluster written to.
type GlobalConfig struct {
	// Agents are global agents' HTTP APIs, nearest first; writes go to
	// the first that answers. Required.
	Agents []string `toml:"agents"`
	// Token is the agents' bearer token, if they require one.
	Token string `toml:"token"`
	// Timeout bounds each request to a global agent (default "5s").
	Timeout time.Duration `toml:"timeout"`
}

// DirectoryConfig is what the region's row of the global regions table
// says about it.
type DirectoryConfig struct {
	// Lookup lists the region's gRPC Lookup endpoints, host:port, that
	// other regions' DNS servers and proxies ask.
	Lookup []string `toml:"lookup"`
	// Latitude and Longitude place the region for nearest-region ranking.
	Latitude  float64 `toml:"latitude"`
	Longitude float64 `toml:"longitude"`
}

// DefaultConfig is a configuration with every default filled in.
func DefaultConfig() Config {
	host, _ := os.Hostname()
	return Config{
		Bridge: BridgeConfig{Name: host, FlushInterval: time.Second, HeartbeatInterval: 10 * time.Second,
			ReconcileInterval: time.Minute},
		Region: RegionConfig{FailoverAfter: 3 * time.Second},
		Global: GlobalConfig{Timeout: 5 * time.Second},
		Log:    agent.LogConfig{Format: "text", Level: "info"},
	}
}

// LoadConfig reads and validates a bridge configuration file.
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
	if c.Bridge.Region == "" {
		errs = append(errs, errors.New("bridge.region is required"))
	} else if !regional.ValidName(c.Bridge.Region) {
		errs = append(errs, fmt.Errorf("bridge.region %q: want a DNS label", c.Bridge.Region))
	}
	if c.Bridge.Name == "" {
		errs = append(errs, errors.New("bridge.name is empty and the host has no name"))
	}
	errs = append(errs, atLeast("bridge.flush_interval", c.Bridge.FlushInterval, 10*time.Millisecond))
	errs = append(errs, atLeast("bridge.heartbeat_interval", c.Bridge.HeartbeatInterval, 100*time.Millisecond))
	errs = append(errs, atLeast("bridge.reconcile_interval", c.Bridge.ReconcileInterval, 100*time.Millisecond))
	errs = append(errs, atLeast("region.failover_after", c.Region.FailoverAfter, 10*time.Millisecond))
	errs = append(errs, atLeast("global.timeout", c.Global.Timeout, 10*time.Millisecond))
	errs = append(errs, urls("region.agents", c.Region.Agents), urls("global.agents", c.Global.Agents))
	for _, a := range c.Directory.Lookup {
		if _, _, err := net.SplitHostPort(a); err != nil {
			errs = append(errs, fmt.Errorf("directory.lookup %q: want host:port", a))
		}
	}
	if c.Directory.Latitude < -90 || c.Directory.Latitude > 90 {
		errs = append(errs, fmt.Errorf("directory.latitude %v: want -90 to 90", c.Directory.Latitude))
	}
	if c.Directory.Longitude < -180 || c.Directory.Longitude > 180 {
		errs = append(errs, fmt.Errorf("directory.longitude %v: want -180 to 180", c.Directory.Longitude))
	}
	if _, err := agent.NewLogger(c.Log, nil); err != nil {
		errs = append(errs, err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format %q: want text or json", c.Log.Format))
	}
	return errors.Join(errs...)
}

// atLeast refuses a duration below min (a TOML integer is read as
// nanoseconds, which this catches).
func atLeast(key string, d, min time.Duration) error {
	if d < min {
		return fmt.Errorf("%s %s: want at least %s (a duration like \"1s\")", key, d, min)
	}
	return nil
}

func urls(key string, list []string) error {
	if len(list) == 0 {
		return fmt.Errorf("%s is required: the agents' HTTP APIs, http://host:port", key)
	}
	var errs []error
	for _, u := range list {
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			errs = append(errs, fmt.Errorf("%s %q: want http://host:port", key, u))
		}
	}
	return errors.Join(errs...)
}
