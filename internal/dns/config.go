package dns

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	miekg "github.com/miekg/dns"

	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/locate"
	"github.com/patina-db/patina/internal/tomlconfig"
	"github.com/patina-db/patina/regional"
)

// Config is a DNS server's TOML configuration. Every key has a default
// except the local region's name and its agents' addresses.
type Config struct {
	DNS     ServerConfig    `toml:"dns"`
	Region  RegionConfig    `toml:"region"`
	Global  GlobalConfig    `toml:"global"`
	GRPC    GRPCConfig      `toml:"grpc"`
	Cache   CacheConfig     `toml:"cache"`
	Metrics MetricsConfig   `toml:"metrics"`
	Log     agent.LogConfig `toml:"log"`
}

// ServerConfig is the DNS listener and the zone it serves.
type ServerConfig struct {
	// Addr is where the server listens, UDP and TCP on the same port
	// (default "127.0.0.1:5353"); port 0 picks a free one.
	Addr string `toml:"addr"`
	// Zone is the zone served (default "internal").
	Zone string `toml:"zone"`
	// TTL is the TTL of every record and of negative answers (default
	// "5s"), in whole seconds.
	TTL time.Duration `toml:"ttl"`
	// Recursors, when set, answer names outside the zone: host:port (or
	// a bare IP, port 53), tried in order. Without them such names are
	// REFUSED.
	Recursors []string `toml:"recursors"`
}

// The [region], [global], [grpc] and [cache] sections are the ones every
// edge component shares.
type (
	RegionConfig = locate.RegionSection
	GlobalConfig = locate.GlobalSection
	GRPCConfig   = locate.GRPCSection
	CacheConfig  = locate.CacheSection
)

// MetricsConfig is the optional Prometheus endpoint.
type MetricsConfig struct {
	// Addr, when set, serves GET /metrics there (host:port).
	Addr string `toml:"addr"`
}

// DefaultConfig is a configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		DNS:   ServerConfig{Addr: "127.0.0.1:5353", Zone: "internal", TTL: 5 * time.Second},
		Cache: locate.DefaultCache(),
		Log:   agent.LogConfig{Format: "text", Level: "info"},
	}
}

// LoadConfig reads and validates a configuration file.
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
	if _, _, err := net.SplitHostPort(c.DNS.Addr); err != nil {
		errs = append(errs, fmt.Errorf("dns.addr %q: want host:port", c.DNS.Addr))
	}
	if _, err := zoneName(c.DNS.Zone); err != nil {
		errs = append(errs, err)
	}
	if c.DNS.TTL < 0 || c.DNS.TTL > 24*time.Hour || c.DNS.TTL%time.Second != 0 {
		errs = append(errs, fmt.Errorf("dns.ttl %s: want whole seconds from 0s to 24h (a duration like \"5s\")", c.DNS.TTL))
	}
	for _, r := range c.DNS.Recursors {
		if _, err := recursorAddr(r); err != nil {
			errs = append(errs, err)
		}
	}
	errs = append(errs, locate.ValidateSections(c.Region, c.Global, c.GRPC, c.Cache))
	if c.Metrics.Addr != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Addr); err != nil {
			errs = append(errs, fmt.Errorf("metrics.addr %q: want host:port", c.Metrics.Addr))
		}
	}
	if _, err := agent.NewLogger(c.Log, nil); err != nil {
		errs = append(errs, err)
	}
	if c.Log.Format != "text" && c.Log.Format != "json" {
		errs = append(errs, fmt.Errorf("log.format %q: want text or json", c.Log.Format))
	}
	return errors.Join(errs...)
}

// zoneName returns the zone as a fully qualified, lower-case name.
func zoneName(zone string) (string, error) {
	z := strings.ToLower(strings.TrimSuffix(zone, "."))
	if z == "" {
		return "", errors.New("dns.zone is empty")
	}
	for _, label := range strings.Split(z, ".") {
		if !regional.ValidName(label) {
			return "", fmt.Errorf("dns.zone %q: label %q is not a DNS label", zone, label)
		}
	}
	if _, ok := miekg.IsDomainName(z + "."); !ok {
		return "", fmt.Errorf("dns.zone %q: not a domain name", zone)
	}
	return z + ".", nil
}

// recursorAddr returns a recursor as host:port, port 53 by default.
func recursorAddr(r string) (string, error) {
	if ip := net.ParseIP(r); ip != nil {
		return net.JoinHostPort(r, "53"), nil
	}
	host, port, err := net.SplitHostPort(r)
	if err != nil || host == "" || port == "" {
		return "", fmt.Errorf("dns.recursors %q: want host:port or an IP address", r)
	}
	return r, nil
}
