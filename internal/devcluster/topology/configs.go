package topology

import (
	"fmt"
	"os"
	"strings"

	"github.com/patina-db/patina/bridge"
	"github.com/patina-db/patina/regional/host"
)

// The configurations of components run as processes, in the format of
// deploy/config: only the keys a dev topology sets; the rest default.

func hostTOML(c host.Config) string {
	return fmt.Sprintf(`[host]
name = %q
region = %q
db = %q
address = %q
check_interval = %q

[agent]
api = %s

[api]
addr = %q
`, c.Host.Name, c.Host.Region, c.Host.DB, c.Host.Address, c.Host.CheckInterval, List(c.Agent.API), c.API.Addr)
}

func bridgeTOML(c bridge.Config) string {
	return fmt.Sprintf(`[bridge]
name = %q
region = %q

[region]
agents = %s

[global]
agents = %s

[directory]
lookup = %s
latitude = %g
longitude = %g
`, c.Bridge.Name, c.Bridge.Region, List(c.Region.Agents), List(c.Global.Agents), List(c.Directory.Lookup),
		c.Directory.Latitude, c.Directory.Longitude)
}

// List is a TOML array of strings.
func List(items []string) string {
	q := make([]string, len(items))
	for i, s := range items {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// WriteFile writes a configuration whole or not at all.
func WriteFile(path, text string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	return os.Rename(tmp, path)
}
