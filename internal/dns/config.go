package dns

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	miekg "github.com/miekg/dns"

	"github.com/patina-db/patina/internal/agent"
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

// RegionConfig is the local region.
type RegionConfig struct {
	// Name is the local region's name. Required.
	Name string `toml:"name"`
	// Lookup lists the local regional agents' gRPC addresses, host:port,
	// tried in order. Required.
	Lookup []string `toml:"lookup"`
}

// GlobalConfig is the global cluster read for other regions.
type GlobalConfig struct {
	// Agents are global agents' gRPC addresses, host:port, nearest first.
	// Without them only the local region answers.
	Agents []string `toml:"agents"`
}

// GRPCConfig says how to dial the agents.
type GRPCConfig struct {
	// Token is sent as a bearer token with every call, when set.
	Token string `toml:"token"`
	// CAFile, when set, dials TLS trusting this CA; CertFile and KeyFile
	// then present a client certificate.
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// CacheConfig bounds how stale and how slow an answer may be.
type CacheConfig struct {
	// TTL is how long a region's answer is reused (default "2s").
	TTL time.Duration `toml:"ttl"`
	// Timeout bounds the wait for one region or for the global map
	// (default "1s"); a region slower than that is left out.
	Timeout time.Duration `toml:"timeout"`
}

// MetricsConfig is the optional Prometheus endpoint.
type MetricsConfig struct {
	// Addr, when set, serves GET /metrics there (host:port).
	Addr string `toml:"addr"`
}

// DefaultConfig is a configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		DNS:   ServerConfig{Addr: "127.0.0.1:5353", Zone: "internal", TTL: 5 * time.Second},
		Cache: CacheConfig{TTL: 2 * time.Second, Timeout: time.Second},
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
	if c.Region.Name == "" {
		errs = append(errs, errors.New("region.name is required"))
	} else if !regional.ValidName(c.Region.Name) {
		errs = append(errs, fmt.Errorf("region.name %q: want a DNS label", c.Region.Name))
	}
	if len(c.Region.Lookup) == 0 {
		errs = append(errs, errors.New("region.lookup is required: the local regional agents' gRPC addresses, host:port"))
	}
	errs = append(errs, hostPorts("region.lookup", c.Region.Lookup), hostPorts("global.agents", c.Global.Agents))
	if (c.GRPC.CertFile == "") != (c.GRPC.KeyFile == "") {
		errs = append(errs, errors.New("grpc.cert_file and grpc.key_file go together"))
	}
	if c.GRPC.CertFile != "" && c.GRPC.CAFile == "" {
		errs = append(errs, errors.New("grpc.cert_file needs grpc.ca_file"))
	}
	if c.Cache.TTL < time.Millisecond {
		errs = append(errs, fmt.Errorf("cache.ttl %s: want at least 1ms (a duration like \"2s\")", c.Cache.TTL))
	}
	if c.Cache.Timeout < time.Millisecond {
		errs = append(errs, fmt.Errorf("cache.timeout %s: want at least 1ms (a duration like \"1s\")", c.Cache.Timeout))
	}
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

func hostPorts(key string, list []string) error {
	var errs []error
	for _, a := range list {
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", key, a))
		}
	}
	return errors.Join(errs...)
}
