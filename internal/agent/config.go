package agent

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
)

// Config is an agent's TOML configuration. Every key has a default except
// the database path.
type Config struct {
	DB  DBConfig  `toml:"db"`
	API APIConfig `toml:"api"`
	Log LogConfig `toml:"log"`
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
	// BearerToken, when set, is required on every route but /v1/health.
	BearerToken string `toml:"bearer_token"`
	// MaxBodyBytes bounds request bodies (default 8 MiB); larger get 413.
	MaxBodyBytes int64 `toml:"max_body_bytes"`
	// ShutdownTimeout bounds how long in-flight requests may take to
	// finish on SIGINT/SIGTERM, as a Go duration (default "10s").
	ShutdownTimeout string `toml:"shutdown_timeout"`
}

// LogConfig configures logging.
type LogConfig struct {
	Format string `toml:"format"` // text or json
	Level  string `toml:"level"`  // debug, info, warn, error
}

// DefaultConfig returns a configuration with every default filled in.
func DefaultConfig() Config {
	return Config{
		DB:  DBConfig{Readers: 4},
		API: APIConfig{Addr: "127.0.0.1:8080", MaxBodyBytes: 8 << 20, ShutdownTimeout: "10s"},
		Log: LogConfig{Format: "text", Level: "info"},
	}
}

// LoadConfig reads a TOML file over the defaults. An unknown key is an
// error naming it, so a typo never silently falls back to a default.
func LoadConfig(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("config: %w", err)
	}
	return ParseConfig(string(data), path)
}

// ParseConfig parses TOML text; name is used in error messages.
func ParseConfig(text, name string) (Config, error) {
	cfg := DefaultConfig()
	md, err := toml.Decode(text, &cfg)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return Config{}, fmt.Errorf("config %s: unknown key %s", name, strings.Join(keys, ", "))
	}
	if err := cfg.Validate(); err != nil {
		return Config{}, fmt.Errorf("config %s: %w", name, err)
	}
	return cfg, nil
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
	if c.API.MaxBodyBytes < 1024 {
		errs = append(errs, errors.New("api.max_body_bytes must be at least 1024"))
	}
	if _, err := parseDuration(c.API.ShutdownTimeout); err != nil {
		errs = append(errs, fmt.Errorf("api.shutdown_timeout: %w", err))
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
