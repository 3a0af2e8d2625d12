package devcluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// TopologyOptions describe a two-tier topology to start.
type TopologyOptions struct {
	// Dir holds every component's files; endpoints.json is written there.
	Dir string
	// Regions names the regional clusters (default ams, iad, syd).
	Regions []string
	// AgentsPerRegion is the size of each regional cluster (default 3).
	AgentsPerRegion int
	// GlobalAgents is the size of the global cluster (default 3), spread
	// over the regions.
	GlobalAgents int
	// BasePort, when set, hands out ports from there upwards; 0 uses
	// ephemeral ports.
	BasePort int
	// SchemaDir is the directory holding regional/ and global/ schema
	// files (default: the repository's schemas/ when run from a checkout).
	SchemaDir string
	// Log receives every in-process component's log (default: discarded).
	Log io.Writer
}

// Topology is a running two-tier topology.
type Topology struct {
	Regions []*RegionTier
	Global  *Region
	opts    TopologyOptions
	ports   *Ports
}

// RegionTier is one region of a topology: its regional cluster.
type RegionTier struct {
	Name    string
	Cluster *Region
}

// Locations of the regions a dev topology knows, for nearest-region
// ranking: latitude, longitude.
var Locations = map[string][2]float64{
	"ams": {52.37, 4.90}, "iad": {38.94, -77.46}, "syd": {-33.87, 151.21},
	"fra": {50.11, 8.68}, "sin": {1.35, 103.82}, "sjc": {37.36, -121.93},
	"lhr": {51.47, -0.45}, "nrt": {35.77, 140.39}, "gru": {-23.43, -46.47},
}

// StartTopology starts the global cluster, then each region. It returns
// once every cluster's members see each other.
func StartTopology(ctx context.Context, opts TopologyOptions) (*Topology, error) {
	if opts.Dir == "" {
		return nil, errors.New("devcluster: no directory")
	}
	if len(opts.Regions) == 0 {
		opts.Regions = []string{"ams", "iad", "syd"}
	}
	if opts.AgentsPerRegion == 0 {
		opts.AgentsPerRegion = 3
	}
	if opts.GlobalAgents == 0 {
		opts.GlobalAgents = 3
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.SchemaDir == "" {
		dir, err := findSchemas()
		if err != nil {
			return nil, err
		}
		opts.SchemaDir = dir
	}
	t := &Topology{opts: opts, ports: &Ports{Base: opts.BasePort}}
	global, err := StartRegion(ctx, RegionOptions{
		Cluster: "global", Nodes: opts.GlobalAgents, Dir: filepath.Join(opts.Dir, "global"),
		SchemaPaths: []string{filepath.Join(opts.SchemaDir, "global")}, Log: opts.Log,
		NodeRegions: opts.Regions, Ports: t.ports,
	})
	if err != nil {
		return nil, fmt.Errorf("devcluster: global cluster: %w", err)
	}
	t.Global = global
	for _, name := range opts.Regions {
		r, err := StartRegion(ctx, RegionOptions{
			Cluster: name, Nodes: opts.AgentsPerRegion, Dir: filepath.Join(opts.Dir, name),
			SchemaPaths: []string{filepath.Join(opts.SchemaDir, "regional")}, Log: opts.Log, Ports: t.ports,
		})
		if err != nil {
			t.Stop()
			return nil, fmt.Errorf("devcluster: region %s: %w", name, err)
		}
		t.Regions = append(t.Regions, &RegionTier{Name: name, Cluster: r})
	}
	if err := t.WriteEndpoints(); err != nil {
		t.Stop()
		return nil, err
	}
	return t, nil
}

// findSchemas finds the schemas directory from the working directory
// upwards (a checkout of the repository).
func findSchemas() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		cand := filepath.Join(dir, "schemas")
		if st, err := os.Stat(filepath.Join(cand, "global")); err == nil && st.IsDir() {
			return cand, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("devcluster: no schemas/ directory here or above: run from the repository or set the schema directory")
		}
		dir = parent
	}
}

// Endpoints is what endpoints.json holds: every component's addresses.
type Endpoints struct {
	Regions map[string]RegionEndpoints `json:"regions"`
	Global  GlobalEndpoints            `json:"global"`
	Apps    []string                   `json:"apps"`
}

// RegionEndpoints are one region's components.
type RegionEndpoints struct {
	Agents []AgentEndpoint `json:"agents"`
	Hosts  []HostEndpoint  `json:"hosts"`
	Bridge BridgeEndpoint  `json:"bridge"`
}

// GlobalEndpoints are the global cluster's agents.
type GlobalEndpoints struct {
	Agents []AgentEndpoint `json:"agents"`
}

// AgentEndpoint is one agent.
type AgentEndpoint struct {
	Name string `json:"name"`
	API  string `json:"api"`
	GRPC string `json:"grpc"`
	DB   string `json:"db"`
}

// HostEndpoint is one host agent.
type HostEndpoint struct {
	Name string `json:"name"`
	API  string `json:"api"`
	DB   string `json:"db"`
}

// BridgeEndpoint is a region's bridge.
type BridgeEndpoint struct {
	Name string `json:"name"`
}

// Endpoints describes the running topology.
func (t *Topology) Endpoints() Endpoints {
	e := Endpoints{Regions: map[string]RegionEndpoints{}, Apps: []string{}}
	e.Global.Agents = agentEndpoints(t.Global)
	for _, r := range t.Regions {
		e.Regions[r.Name] = RegionEndpoints{Agents: agentEndpoints(r.Cluster), Hosts: []HostEndpoint{}}
	}
	return e
}

func agentEndpoints(r *Region) []AgentEndpoint {
	out := []AgentEndpoint{}
	for _, n := range r.Nodes {
		out = append(out, AgentEndpoint{Name: n.Name, API: n.API, GRPC: n.GRPC, DB: n.DBPath})
	}
	return out
}

// WriteEndpoints writes <dir>/endpoints.json, whole or not at all.
func (t *Topology) WriteEndpoints() error {
	data, err := json.MarshalIndent(t.Endpoints(), "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(t.opts.Dir, "endpoints.json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("devcluster: %w", err)
	}
	return os.Rename(tmp, path)
}

// Stop stops every component, regions first, and waits for them.
func (t *Topology) Stop() error {
	var errs []error
	for _, r := range t.Regions {
		if err := r.Cluster.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("region %s: %w", r.Name, err))
		}
	}
	if t.Global != nil {
		if err := t.Global.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("global: %w", err))
		}
	}
	return errors.Join(errs...)
}

// waitFor polls cond every 20ms until it holds or timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("devcluster: %s: not after %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
