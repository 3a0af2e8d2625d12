// Package regional owns the regional tier's data: the machine record a
// host agent keeps as its source of truth, how that record is stored in
// a host's bbolt file, and the statements that publish it, whole, to the
// regional cluster's machines and machine_checks tables.
package regional

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"regexp"
	"time"

	"github.com/patina-db/patina/internal/api"
)

// Machine states.
const (
	StateCreated   = "created"
	StateStarted   = "started"
	StateStopped   = "stopped"
	StateDestroyed = "destroyed"
)

// Check statuses.
const (
	CheckPassing  = "passing"
	CheckWarning  = "warning"
	CheckCritical = "critical"
	CheckUnknown  = "unknown"
)

// RecordVersion is the format of the records this code writes. A record
// of another version is refused (and a host skips it), never guessed at.
const RecordVersion = 1

// Machine is one machine as its host knows it: the row of the regional
// machines table, its health checks, and what the host needs to run them.
type Machine struct {
	V         int     `json:"v"`
	ID        string  `json:"id"`
	App       string  `json:"app"`
	Region    string  `json:"region"`
	Host      string  `json:"host"`
	Address   string  `json:"address"`
	Port      int     `json:"port"`
	State     string  `json:"state"`
	Image     string  `json:"image,omitempty"`
	UpdatedAt int64   `json:"updated_at"` // unix milliseconds of the last change to the record
	Checks    []Check `json:"checks,omitempty"`
}

// Check is one health check of a machine: how to run it (kept on the
// host only) and its last result (published).
type Check struct {
	Name string `json:"name"`
	// Kind is "http" (GET Path, 2xx passes) or "tcp" (a connection passes).
	Kind string `json:"kind"`
	Path string `json:"path,omitempty"`
	// IntervalMS is how often the check runs, in milliseconds.
	IntervalMS int64  `json:"interval_ms,omitempty"`
	Status     string `json:"status"`
	Output     string `json:"output,omitempty"`
	UpdatedAt  int64  `json:"updated_at"`
}

var (
	idPattern   = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	namePattern = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// ValidID reports whether id can name a machine: lower-case letters,
// digits and '-', at most 63 characters, so that it is a DNS label.
func ValidID(id string) bool { return idPattern.MatchString(id) }

// ValidName reports whether s can name an app or a region: a DNS label.
func ValidName(s string) bool { return namePattern.MatchString(s) }

// Validate checks a record and names what is wrong with it.
func (m *Machine) Validate() error {
	var errs []error
	if m.V != RecordVersion {
		errs = append(errs, fmt.Errorf("record version %d: want %d", m.V, RecordVersion))
	}
	if !ValidID(m.ID) {
		errs = append(errs, fmt.Errorf("id %q: want lower-case letters, digits and '-', at most 63", m.ID))
	}
	if !ValidName(m.App) {
		errs = append(errs, fmt.Errorf("app %q: want a DNS label", m.App))
	}
	if !ValidName(m.Region) {
		errs = append(errs, fmt.Errorf("region %q: want a DNS label", m.Region))
	}
	if m.Host == "" {
		errs = append(errs, errors.New("host is empty"))
	}
	if m.Address != "" && net.ParseIP(m.Address) == nil {
		errs = append(errs, fmt.Errorf("address %q: not an IP address", m.Address))
	}
	if m.Port < 0 || m.Port > 65535 {
		errs = append(errs, fmt.Errorf("port %d: out of range", m.Port))
	}
	switch m.State {
	case StateCreated, StateStarted, StateStopped, StateDestroyed:
	default:
		errs = append(errs, fmt.Errorf("state %q: want created, started, stopped or destroyed", m.State))
	}
	seen := map[string]bool{}
	for _, c := range m.Checks {
		if c.Name == "" || seen[c.Name] {
			errs = append(errs, fmt.Errorf("check name %q: empty or repeated", c.Name))
		}
		seen[c.Name] = true
		switch c.Kind {
		case "http", "tcp":
		default:
			errs = append(errs, fmt.Errorf("check %q: kind %q: want http or tcp", c.Name, c.Kind))
		}
		switch c.Status {
		case CheckPassing, CheckWarning, CheckCritical, CheckUnknown:
		default:
			errs = append(errs, fmt.Errorf("check %q: status %q: want passing, warning, critical or unknown", c.Name, c.Status))
		}
		if c.IntervalMS < 0 {
			errs = append(errs, fmt.Errorf("check %q: negative interval", c.Name))
		}
	}
	return errors.Join(errs...)
}

// Interval is how often check c runs (default 10s, at most a day: a
// longer one, which hosts refuse, would overflow).
func (c Check) Interval() time.Duration {
	const most = 24 * time.Hour
	switch {
	case c.IntervalMS <= 0:
		return 10 * time.Second
	case c.IntervalMS > most.Milliseconds():
		return most
	}
	return time.Duration(c.IntervalMS) * time.Millisecond
}

// Healthy reports whether the machine counts as healthy: started, with
// every check passing (a machine without checks is healthy when started).
func (m *Machine) Healthy() bool {
	if m.State != StateStarted {
		return false
	}
	for _, c := range m.Checks {
		if c.Status != CheckPassing {
			return false
		}
	}
	return true
}

// Encode is the record as stored in a host's bbolt file.
func (m *Machine) Encode() ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("machine %q: %w", m.ID, err)
	}
	return json.Marshal(m)
}

// Decode reads a record stored under key. A record that does not parse,
// is of another version, does not validate, or is not stored under its
// own id is an error naming the key.
func Decode(key, value []byte) (Machine, error) {
	var m Machine
	if err := json.Unmarshal(value, &m); err != nil {
		return Machine{}, fmt.Errorf("record %q: %w", key, err)
	}
	if err := m.Validate(); err != nil {
		return Machine{}, fmt.Errorf("record %q: %w", key, err)
	}
	if m.ID != string(key) {
		return Machine{}, fmt.Errorf("record %q: holds machine %q", key, m.ID)
	}
	return m, nil
}

// BucketMachines is the bbolt bucket a host keeps its records in, keyed
// by machine id.
var BucketMachines = []byte("machines")

// Publish returns the statements that make the regional tables hold
// exactly this record: the machine row, its check rows, and no other
// check rows for it. A destroyed machine's rows are deleted. Run them in
// one transaction; publishing an unchanged record changes no cell and so
// consumes no version.
func Publish(m *Machine) []api.Statement {
	if m.State == StateDestroyed {
		return Unpublish(m.ID, m.Host)
	}
	stmts := []api.Statement{{
		Query: `INSERT INTO machines (id, app, region, host, address, port, state, image, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET app = excluded.app, region = excluded.region, host = excluded.host,
 address = excluded.address, port = excluded.port, state = excluded.state, image = excluded.image,
 updated_at = excluded.updated_at`,
		Params: []any{m.ID, m.App, m.Region, m.Host, m.Address, m.Port, m.State, m.Image, m.UpdatedAt},
	}}
	names := make([]string, 0, len(m.Checks))
	for _, c := range m.Checks {
		names = append(names, c.Name)
		stmts = append(stmts, api.Statement{
			Query: `INSERT INTO machine_checks (machine_id, name, status, output, updated_at) VALUES (?, ?, ?, ?, ?)
ON CONFLICT (machine_id, name) DO UPDATE SET status = excluded.status, output = excluded.output, updated_at = excluded.updated_at`,
			Params: []any{m.ID, c.Name, c.Status, c.Output, c.UpdatedAt},
		})
	}
	list, _ := json.Marshal(names) // strings always marshal
	stmts = append(stmts, api.Statement{
		Query:  `DELETE FROM machine_checks WHERE machine_id = ? AND name NOT IN (SELECT value FROM json_each(?))`,
		Params: []any{m.ID, string(list)},
	})
	return stmts
}

// Unpublish returns the statements that remove a machine that host no
// longer has, with its checks, from the regional tables. The row goes
// only if host owns it (or no host does): a machine that moved to
// another host under the same id keeps that host's row and checks. With
// host "", only a row no host owns goes.
func Unpublish(id, host string) []api.Statement {
	return UnpublishAll([]Owned{{ID: id, Host: host}})
}

// Owned names a machine and the host it is removed from.
type Owned struct{ ID, Host string }

// UnpublishAll is Unpublish for many machines in two statements.
func UnpublishAll(ms []Owned) []api.Statement {
	pairs := make([][2]string, len(ms))
	for i, m := range ms {
		pairs[i] = [2]string{m.ID, m.Host}
	}
	list, _ := json.Marshal(pairs) // strings always marshal
	return []api.Statement{
		{Query: `DELETE FROM machine_checks WHERE machine_id IN (
 SELECT j.value->>0 FROM json_each(?1) AS j
 WHERE NOT EXISTS (SELECT 1 FROM machines AS m WHERE m.id = j.value->>0 AND m.host NOT IN (j.value->>1, '')))`,
			Params: []any{string(list)}},
		{Query: `DELETE FROM machines WHERE id IN (
 SELECT m.id FROM json_each(?1) AS j JOIN machines AS m ON m.id = j.value->>0 AND m.host IN (j.value->>1, ''))`,
			Params: []any{string(list)}},
	}
}

// Heartbeat returns the statement that records, in the hosts table, a
// host's full re-publish starting at the given time: the sign, to the
// region's agents, that the host still publishes (see regional/reaper).
func Heartbeat(host, region string, at time.Time, interval time.Duration) api.Statement {
	return api.Statement{
		Query: `INSERT INTO hosts (name, region, seen_at, republish_ms) VALUES (?, ?, ?, ?)
ON CONFLICT (name) DO UPDATE SET region = excluded.region, seen_at = excluded.seen_at, republish_ms = excluded.republish_ms`,
		Params: []any{host, region, at.UnixMilli(), interval.Milliseconds()},
	}
}

// Prune returns the statements that remove every machine of host that is
// not in ids, with its checks: a host's full re-publish ends with them so
// that rows of machines it no longer has (destroyed while its agent was
// unreachable, say) do not linger.
func Prune(host string, ids []string) []api.Statement {
	if ids == nil {
		ids = []string{}
	}
	list, _ := json.Marshal(ids)
	return []api.Statement{
		{Query: `DELETE FROM machine_checks WHERE machine_id IN (SELECT id FROM machines WHERE host = ? AND id NOT IN (SELECT value FROM json_each(?)))`,
			Params: []any{host, string(list)}},
		{Query: `DELETE FROM machines WHERE host = ? AND id NOT IN (SELECT value FROM json_each(?))`,
			Params: []any{host, string(list)}},
	}
}
