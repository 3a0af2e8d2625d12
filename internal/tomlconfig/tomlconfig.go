// Package tomlconfig reads every patina role's TOML configuration the
// same way: over the role's defaults, refusing an unknown key by name (a
// typo must never fall back to a default silently), then validating.
package tomlconfig

import (
	"fmt"
	"os"
	"strings"

	"github.com/BurntSushi/toml"
)

// Validated is a configuration that can check itself.
type Validated interface {
	Validate() error
}

// Parse decodes TOML text over cfg, which holds the defaults, and
// validates the result; name (a file name) prefixes every error.
func Parse[C Validated](text, name string, cfg C) (C, error) {
	var zero C
	md, err := toml.Decode(text, &cfg)
	if err != nil {
		return zero, fmt.Errorf("config %s: %w", name, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, len(und))
		for i, k := range und {
			keys[i] = k.String()
		}
		return zero, fmt.Errorf("config %s: unknown key %s", name, strings.Join(keys, ", "))
	}
	if err := cfg.Validate(); err != nil {
		return zero, fmt.Errorf("config %s: %w", name, err)
	}
	return cfg, nil
}

// Load reads the file at path and parses it over cfg.
func Load[C Validated](path string, cfg C) (C, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var zero C
		return zero, fmt.Errorf("config: %w", err)
	}
	return Parse(string(data), path, cfg)
}
