package locate

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/patina-db/patina/internal/rpc"
	"github.com/patina-db/patina/regional"
)

// The configuration sections every edge component (DNS, proxy) shares:
// [region], [global], [grpc] and [cache] say where the answers come
// from, how to dial for them, and how long they are kept.

// RegionSection is the local region.
type RegionSection struct {
	// Name is the local region's name. Required.
	Name string `toml:"name"`
	// Lookup lists the local regional agents' gRPC addresses, host:port,
	// tried in order. Required.
	Lookup []string `toml:"lookup"`
}

// GlobalSection is the global cluster, read for other regions.
type GlobalSection struct {
	// Agents are global agents' gRPC addresses, host:port, nearest first.
	// Without them only the local region answers.
	Agents []string `toml:"agents"`
}

// GRPCSection says how to dial the agents.
type GRPCSection struct {
	// Token is sent as a bearer token with every call, when set.
	Token string `toml:"token"`
	// CAFile, when set, dials TLS trusting this CA; CertFile and KeyFile
	// then present a client certificate.
	CAFile   string `toml:"ca_file"`
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
}

// CacheSection bounds how stale and how slow an answer may be.
type CacheSection struct {
	// TTL is how long a region's answer is reused (default "2s").
	TTL time.Duration `toml:"ttl"`
	// Timeout bounds the wait for one region or for the global map
	// (default "1s"); a region slower than that is left out.
	Timeout time.Duration `toml:"timeout"`
}

// DefaultCache is [cache] with its defaults.
func DefaultCache() CacheSection { return CacheSection{TTL: 2 * time.Second, Timeout: time.Second} }

// ValidateSections names every problem in the shared sections.
func ValidateSections(r RegionSection, g GlobalSection, d GRPCSection, c CacheSection) error {
	var errs []error
	if r.Name == "" {
		errs = append(errs, errors.New("region.name is required"))
	} else if !regional.ValidName(r.Name) {
		errs = append(errs, fmt.Errorf("region.name %q: want a DNS label", r.Name))
	}
	if len(r.Lookup) == 0 {
		errs = append(errs, errors.New("region.lookup is required: the local regional agents' gRPC addresses, host:port"))
	}
	errs = append(errs, hostPorts("region.lookup", r.Lookup), hostPorts("global.agents", g.Agents))
	if (d.CertFile == "") != (d.KeyFile == "") {
		errs = append(errs, errors.New("grpc.cert_file and grpc.key_file go together"))
	}
	if d.CertFile != "" && d.CAFile == "" {
		errs = append(errs, errors.New("grpc.cert_file needs grpc.ca_file: a client certificate is only sent over TLS"))
	}
	for _, x := range []struct {
		key string
		d   time.Duration
	}{{"cache.ttl", c.TTL}, {"cache.timeout", c.Timeout}} {
		if x.d < time.Millisecond {
			errs = append(errs, fmt.Errorf("%s %s: want at least 1ms (a duration like \"1s\")", x.key, x.d))
		}
	}
	return errors.Join(errs...)
}

func hostPorts(key string, list []string) error {
	var errs []error
	for _, a := range list {
		if h, p, err := net.SplitHostPort(a); err != nil || h == "" || p == "" {
			errs = append(errs, fmt.Errorf("%s %q: want host:port", key, a))
		}
	}
	return errors.Join(errs...)
}

// ConfigFrom is the locator's configuration from the shared sections.
func ConfigFrom(r RegionSection, g GlobalSection, d GRPCSection, c CacheSection, logger *slog.Logger) Config {
	return Config{
		Region: r.Name, Local: r.Lookup, Global: g.Agents,
		Dial: rpc.DialOptions{Token: d.Token, CAFile: d.CAFile, CertFile: d.CertFile, KeyFile: d.KeyFile},
		TTL:  c.TTL, Timeout: c.Timeout, Logger: logger,
	}
}
