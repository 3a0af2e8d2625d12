package agent

import (
	"encoding/base64"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/patina-db/patina/internal/cluster"
	"github.com/patina-db/patina/internal/tomlconfig"
)

// Config is an agent's TOML configuration. Every key has a default except
// the database path.
type Config struct {
	DB        DBConfig        `toml:"db"`
	Gossip    GossipConfig    `toml:"gossip"`
	API       APIConfig       `toml:"api"`
	GRPC      GRPCConfig      `toml:"grpc"`
	Subs      SubsConfig      `toml:"subscriptions"`
	Telemetry TelemetryConfig `toml:"telemetry"`
	Watchdog  WatchdogConfig  `toml:"watchdog"`
	Log       LogConfig       `toml:"log"`
	Runtime   RuntimeConfig   `toml:"runtime"`
	Hosts     HostsConfig     `toml:"hosts"`
}

// HostsConfig configures forgetting hosts that stopped publishing (see
// regional/reaper). It applies where the regional tables exist.
type HostsConfig struct {
	// ForgetAfter is how long a host's row in the hosts table may stand
	// still before its machines are removed, as a Go duration (default
	// "5m"; never less than three of the host's own re-publish
	// intervals); "off" never removes them.
	ForgetAfter string `toml:"forget_after"`
}

// forgetAfter is the parsed ForgetAfter, 0 when off.
func (c HostsConfig) forgetAfter() (time.Duration, error) {
	if c.ForgetAfter == "off" {
		return 0, nil
	}
	return parseDuration(c.ForgetAfter)
}

// SubsConfig configures query subscriptions.
type SubsConfig struct {
	// Path of the SQLite file subscriptions are kept in (default: beside
	// the database, <name>.subs.db).
	Path string `toml:"path"`
	// Window is how many changes each subscription keeps for clients
	// resuming after a disconnect (default 10000).
	Window int `toml:"window"`
	// IdleTimeout drops a subscription nobody has followed for that long,
	// as a Go duration (default "1h").
	IdleTimeout string `toml:"idle_timeout"`
}

// samePath reports whether two paths name one file, as far as their
// absolute forms tell.
func samePath(a, b string) bool {
	aa, err1 := filepath.Abs(a)
	bb, err2 := filepath.Abs(b)
	return err1 == nil && err2 == nil && aa == bb
}

// path is the subscriptions file for a database path.
func (c SubsConfig) path(dbPath string) string {
	if c.Path != "" {
		return c.Path
	}
	return strings.TrimSuffix(dbPath, filepath.Ext(dbPath)) + ".subs.db"
}

// GossipConfig makes the agent a cluster member. Without an addr the agent
// runs alone.
type GossipConfig struct {
	// Addr is memberlist's address (UDP and TCP), e.g. "10.0.0.5:7946".
	Addr string `toml:"addr"`
	// AdvertiseAddr is announced to peers instead of Addr when set.
	AdvertiseAddr string `toml:"advertise_addr"`
	// QUICAddr is the data plane's UDP address, e.g. "10.0.0.5:7947".
	QUICAddr string `toml:"quic_addr"`
	// Bootstrap lists gossip addresses of members to join through.
	Bootstrap []string `toml:"bootstrap"`
	// Cluster names the cluster; members of different clusters never mix.
	Cluster string `toml:"cluster"`
	// Region is where this agent runs (default: the cluster name).
	Region string `toml:"region"`
	// Name identifies this member (default: host name and actor id).
	Name string `toml:"name"`
	// SecretKey is a base64 memberlist key (16, 24 or 32 bytes) that
	// encrypts gossip; empty: gossip is not encrypted.
	SecretKey string `toml:"secret_key"`
	// AcceptKeys are more base64 keys accepted from peers while a key is
	// rotated (secret_key is the one sent with); see docs/operations.md.
	AcceptKeys []string `toml:"accept_keys"`
	// Fanout is how many random members each broadcast goes to, at least
	// (default 3); see cluster.EffectiveFanout.
	Fanout int `toml:"fanout"`
	// DirectLimit: in a region of at most this many other members, a
	// writer sends its versions to all of them and nothing is relayed
	// (default 16; -1: always epidemic).
	DirectLimit int `toml:"direct_limit"`
	// SyncInterval is how often the agent syncs with random peers (default "1s").
	SyncInterval string `toml:"sync_interval"`
	// TLS names the cluster CA and this agent's certificate; required.
	TLS cluster.TLSFiles `toml:"tls"`
}

// DBConfig says where the database and its schema live.
type DBConfig struct {
	// Path of the SQLite file; created with its directory's permissions.
	Path string `toml:"path"`
	// SchemaPaths are .sql files or directories of them, applied at start
	// with the same rules as migrations. Empty: keep the schema as it is.
	SchemaPaths []string `toml:"schema_paths"`
	// Readers is the size of the read-only connection pool.
	Readers int `toml:"readers"`
}

// APIConfig configures the HTTP API.
type APIConfig struct {
	// Addr is the listen address, default 127.0.0.1:8080.
	Addr string `toml:"addr"`
	// BearerToken, when set, is required on every route but /v1/health
	// and /metrics (and on the admin routes unless AdminToken is set).
	BearerToken string `toml:"bearer_token"`
	// AdminToken, when set, is required on the admin routes
	// (/v1/admin/...: reload, backup), where BearerToken then is not
	// enough.
	AdminToken string `toml:"admin_token"`
	// MaxBodyBytes bounds request bodies (default 8 MiB); larger get 413.
	MaxBodyBytes int64 `toml:"max_body_bytes"`
	// StreamWriteTimeout cuts off a subscription or updates client whose
	// reads stall that long, as a Go duration (default "10s").
	StreamWriteTimeout string `toml:"stream_write_timeout"`
	// ShutdownTimeout bounds how long in-flight requests may take to
	// finish on SIGINT/SIGTERM, as a Go duration (default "10s").
	ShutdownTimeout string `toml:"shutdown_timeout"`
}

// TelemetryConfig says where metrics are served.
type TelemetryConfig struct {
	// PrometheusAddr, when set, serves GET /metrics on a listener of its
	// own; empty: on the API address. Never behind the bearer token.
	PrometheusAddr string `toml:"prometheus_addr"`
}

// WatchdogConfig configures the watchdog over the agent's long-running
// loops.
type WatchdogConfig struct {
	// Timeout is how long a loop may go without progress, or a write
	// transaction may hold the store's write lock, before the agent
	// dumps its goroutines and exits with status 70, as a Go duration
	// (default "30s"; "0" disables).
	Timeout string `toml:"timeout"`
}

// RuntimeConfig tunes the Go runtime of the agent's process.
type RuntimeConfig struct {
	// GCPercent is the garbage collector's target heap growth, as GOGC
	// (default 400; a GOGC environment variable wins). See runtime.go.
	GCPercent int `toml:"gc_percent"`
	// SysmonBatch runs the runtime's monitor thread under SCHED_BATCH,
	// so that its wake-ups do not preempt the agent's work (default
	// true). See internal/sysmon.
	SysmonBatch bool `toml:"sysmon_batch"`
}

// LogConfig configures logging.
type LogConfig struct {
	Format string `toml:"format"` // text or json
	Level  string `toml:"level"`  // debug, info, warn, error
}

// DefaultConfig returns a configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		DB:       DBConfig{Readers: 4},
		API:      APIConfig{Addr: "127.0.0.1:8080", MaxBodyBytes: 8 << 20, ShutdownTimeout: "10s", StreamWriteTimeout: "10s"},
		Subs:     SubsConfig{Window: 10000, IdleTimeout: "1h"},
		Watchdog: WatchdogConfig{Timeout: "30s"},
		Log:      LogConfig{Format: "text", Level: "info"},
		Runtime:  RuntimeConfig{GCPercent: defaultGCPercent, SysmonBatch: true},
		Hosts:    HostsConfig{ForgetAfter: "5m"},
	}
}

// LoadConfig reads a TOML file over the defaults. An unknown key is an
// error naming it, so a typo never silently falls back to a default.
func LoadConfig(path string) (Config, error) {
	return tomlconfig.Load(path, DefaultConfig())
}

// ParseConfig parses TOML text; name is used in error messages.
func ParseConfig(text, name string) (Config, error) {
	return tomlconfig.Parse(text, name, DefaultConfig())
}

// Validate checks values the defaults cannot fill.
func (c Config) Validate() error {
	var errs []error
	if c.DB.Path == "" {
		errs = append(errs, errors.New("db.path is required"))
	}
	if c.DB.Readers < 1 {
		errs = append(errs, errors.New("db.readers must be at least 1"))
	}
	if c.API.Addr == "" {
		errs = append(errs, errors.New("api.addr is required"))
	}
	if c.Runtime.GCPercent != 0 && c.Runtime.GCPercent < 10 {
		errs = append(errs, fmt.Errorf("runtime.gc_percent is %d; want at least 10", c.Runtime.GCPercent))
	}
	if c.API.MaxBodyBytes < 1024 {
		errs = append(errs, errors.New("api.max_body_bytes must be at least 1024"))
	}
	if c.Gossip.Addr != "" {
		if c.Gossip.QUICAddr == "" {
			errs = append(errs, errors.New("gossip.quic_addr is required with gossip.addr"))
		}
		if c.Gossip.Cluster == "" {
			errs = append(errs, errors.New("gossip.cluster is required with gossip.addr"))
		}
		if c.Gossip.TLS.CAFile == "" || c.Gossip.TLS.CertFile == "" || c.Gossip.TLS.KeyFile == "" {
			errs = append(errs, errors.New("gossip.tls ca_file, cert_file and key_file are required: the data plane has no plaintext mode"))
		}
		if c.Gossip.SyncInterval != "" {
			if _, err := parseDuration(c.Gossip.SyncInterval); err != nil {
				errs = append(errs, fmt.Errorf("gossip.sync_interval: %w", err))
			}
		}
		if _, err := base64.StdEncoding.DecodeString(c.Gossip.SecretKey); err != nil {
			errs = append(errs, fmt.Errorf("gossip.secret_key: not base64: %w", err))
		}
		for i, k := range c.Gossip.AcceptKeys {
			if _, err := base64.StdEncoding.DecodeString(k); err != nil {
				errs = append(errs, fmt.Errorf("gossip.accept_keys[%d]: not base64: %w", i, err))
			}
		}
	}
	if _, err := parseDuration(c.API.ShutdownTimeout); err != nil {
		errs = append(errs, fmt.Errorf("api.shutdown_timeout: %w", err))
	}
	if d, err := parseDuration(c.API.StreamWriteTimeout); err != nil || d <= 0 {
		errs = append(errs, fmt.Errorf("api.stream_write_timeout %q: want a positive duration", c.API.StreamWriteTimeout))
	}
	if err := c.GRPC.validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Subs.Path != "" && c.DB.Path != "" && samePath(c.Subs.Path, c.DB.Path) {
		// Its tables would land in the replicated database, whose schema
		// check then refuses every later start.
		errs = append(errs, fmt.Errorf("subscriptions.path %q is the database itself: give subscriptions a file of their own", c.Subs.Path))
	}
	if c.Subs.Window < 1 {
		errs = append(errs, errors.New("subscriptions.window must be at least 1"))
	}
	if d, err := parseDuration(c.Subs.IdleTimeout); err != nil || d <= 0 {
		errs = append(errs, fmt.Errorf("subscriptions.idle_timeout %q: want a positive duration", c.Subs.IdleTimeout))
	}
	if _, err := c.Hosts.forgetAfter(); err != nil {
		errs = append(errs, fmt.Errorf("hosts.forget_after: %w (or \"off\")", err))
	}
	if _, err := c.Watchdog.timeout(); err != nil {
		errs = append(errs, fmt.Errorf("watchdog.timeout: %w", err))
	}
	switch c.Log.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format %q: want text or json", c.Log.Format))
	}
	if _, err := parseLevel(c.Log.Level); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// clusterConfig turns [gossip] into the cluster package's configuration.
func (c Config) clusterConfig(creds *cluster.Credentials, apiAddr, grpcAddr string) (cluster.Config, error) {
	g := c.Gossip
	key, err := base64.StdEncoding.DecodeString(g.SecretKey)
	if err != nil {
		return cluster.Config{}, fmt.Errorf("gossip.secret_key: %w", err)
	}
	var accept [][]byte
	for i, k := range g.AcceptKeys {
		b, err := base64.StdEncoding.DecodeString(k)
		if err != nil {
			return cluster.Config{}, fmt.Errorf("gossip.accept_keys[%d]: %w", i, err)
		}
		accept = append(accept, b)
	}
	cc := cluster.Config{AcceptKeys: accept,
		Name: g.Name, Cluster: g.Cluster, Region: g.Region, GossipAddr: g.Addr, AdvertiseAddr: g.AdvertiseAddr,
		QUICAddr: g.QUICAddr, Bootstrap: g.Bootstrap, SecretKey: key, Credentials: creds, APIAddr: apiAddr, GRPCAddr: grpcAddr,
		Fanout: g.Fanout, DirectLimit: g.DirectLimit,
	}
	if cc.Region == "" {
		cc.Region = g.Cluster
	}
	if g.SyncInterval != "" {
		cc.SyncInterval, _ = parseDuration(g.SyncInterval)
	}
	return cc, nil
}

// region is the agent's region: [gossip] region, or its cluster name.
func (c Config) region() string {
	if c.Gossip.Region != "" {
		return c.Gossip.Region
	}
	return c.Gossip.Cluster
}

// timeout is the watchdog timeout, 0 when disabled.
func (c WatchdogConfig) timeout() (time.Duration, error) {
	if c.Timeout == "0" {
		return 0, nil
	}
	return parseDuration(c.Timeout)
}
