package host

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/tomlconfig"
	"github.com/patina-db/patina/regional"
)

// Config is a host agent's TOML configuration. Every key has a default
// except the host's name, its region and the bbolt path.
type Config struct {
	Host  HostConfig      `toml:"host"`
	Agent AgentConfig     `toml:"agent"`
	API   APIConfig       `toml:"api"`
	Log   agent.LogConfig `toml:"log"`
}

// HostConfig says who this host is and where it keeps its machines.
type HostConfig struct {
	// Name identifies this host in the regional tables (machines.host);
	// the full re-publish prunes rows of this name only. Required.
	Name string `toml:"name"`
	// Region is the region the host's machines are published in. Required.
	Region string `toml:"region"`
	// DB is the bbolt file holding the machine records. Required.
	DB string `toml:"db"`
	// Address is the IP the dev machines listen on and that is published
	// as their address (default "127.0.0.1").
	Address string `toml:"address"`
	// CheckInterval is how often a check runs when it names no interval
	// of its own, as a Go duration (default "10s").
	CheckInterval string `toml:"check_interval"`
}

// AgentConfig names the local regional agent(s) records are published to.
type AgentConfig struct {
	// API lists agents' HTTP addresses, http://host:port. The first is
	// preferred; the others are tried in order when it fails (default
	// ["http://127.0.0.1:8080"]).
	API []string `toml:"api"`
	// Token is the agents' bearer token (optional).
	Token string `toml:"token"`
	// RepublishInterval is how often every record is re-published in
	// full, ending with a prune of this host's other rows, as a Go
	// duration (default "30s").
	RepublishInterval string `toml:"republish_interval"`
	// BatchSize is how many records one transaction of the full
	// re-publish carries (default 200).
	BatchSize int `toml:"batch_size"`
	// Timeout bounds one request to an agent (default "10s").
	Timeout string `toml:"timeout"`
}

// APIConfig configures the host's own HTTP API.
type APIConfig struct {
	// Addr is the listen address (default "127.0.0.1:8090").
	Addr string `toml:"addr"`
	// Token, when set, is required as "Authorization: Bearer <token>".
	Token string `toml:"token"`
}

// DefaultConfig returns a configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		Host:  HostConfig{Address: "127.0.0.1", CheckInterval: "10s"},
		Agent: AgentConfig{API: []string{"http://127.0.0.1:8080"}, RepublishInterval: "30s", BatchSize: 200, Timeout: "10s"},
		API:   APIConfig{Addr: "127.0.0.1:8090"},
		Log:   agent.LogConfig{Format: "text", Level: "info"},
	}
}

// LoadConfig reads a TOML file over the defaults. An unknown key is an
// error naming it.
func LoadConfig(path string) (Config, error) {
	return tomlconfig.Load(path, DefaultConfig())
}

// ParseConfig parses TOML text over the defaults; name is used in error
// messages.
func ParseConfig(text, name string) (Config, error) {
	return tomlconfig.Parse(text, name, DefaultConfig())
}

// Validate checks the values the defaults cannot fill and the form of
// the others.
func (c Config) Validate() error {
	var errs []error
	if c.Host.Name == "" {
		errs = append(errs, errors.New("host.name is required"))
	}
	if !regional.ValidName(c.Host.Region) {
		errs = append(errs, fmt.Errorf("host.region %q: required, a DNS label", c.Host.Region))
	}
	if c.Host.DB == "" {
		errs = append(errs, errors.New("host.db is required"))
	}
	if net.ParseIP(c.Host.Address) == nil {
		errs = append(errs, fmt.Errorf("host.address %q: not an IP address", c.Host.Address))
	}
	if _, err := positiveDuration(c.Host.CheckInterval); err != nil {
		errs = append(errs, fmt.Errorf("host.check_interval: %w", err))
	}
	if len(c.Agent.API) == 0 {
		errs = append(errs, errors.New("agent.api: list at least one agent"))
	}
	for _, a := range c.Agent.API {
		if u, err := url.Parse(a); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, fmt.Errorf("agent.api %q: want http://host:port", a))
		}
	}
	if _, err := positiveDuration(c.Agent.RepublishInterval); err != nil {
		errs = append(errs, fmt.Errorf("agent.republish_interval: %w", err))
	}
	if _, err := positiveDuration(c.Agent.Timeout); err != nil {
		errs = append(errs, fmt.Errorf("agent.timeout: %w", err))
	}
	if c.Agent.BatchSize < 1 {
		errs = append(errs, errors.New("agent.batch_size must be at least 1"))
	}
	if c.API.Addr == "" {
		errs = append(errs, errors.New("api.addr is required"))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format %q: want text or json", c.Log.Format))
	}
	if _, err := agent.NewLogger(c.Log, nil); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// checkInterval is the default interval of a check.
func (c Config) checkInterval() time.Duration {
	d, _ := positiveDuration(c.Host.CheckInterval)
	return d
}

func (c Config) republishInterval() time.Duration {
	d, _ := positiveDuration(c.Agent.RepublishInterval)
	return d
}

func (c Config) agentTimeout() time.Duration {
	d, _ := positiveDuration(c.Agent.Timeout)
	return d
}

func positiveDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (like 10s)", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q must be positive", s)
	}
	return d, nil
}
