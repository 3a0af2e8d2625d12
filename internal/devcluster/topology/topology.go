// Package topology starts the whole two-tier topology on loopback in one
// process: a global cluster, regional clusters with a host agent beside
// every agent and a bridge per region, and demo apps whose machines are
// real HTTP servers. `patina dev` and end-to-end tests use it.
package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"time"

	"github.com/patina-db/patina/bridge"
	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/devcluster"
	"github.com/patina-db/patina/regional"
	"github.com/patina-db/patina/regional/host"
)

// Options describe a two-tier topology to start.
type Options struct {
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
	// Apps are the demo apps and where their machines run (default
	// DemoApps); an empty non-nil slice starts no machines.
	Apps []App
	// CheckInterval is how often the demo machines' HTTP checks run
	// (default 2s).
	CheckInterval time.Duration
	// Binary, when set, runs every component as a child process of its
	// own (`Binary agent|host|bridge --config F`, from configs written in
	// the deploy/ format), supervised: one that exits without being
	// stopped is started again, as systemd would, RestartDelay later.
	Binary       string
	RestartDelay time.Duration
	// HostAddresses gives a region's hosts the IP their machines listen
	// on and publish (default 127.0.0.1), so that regions can be told
	// apart by address: any 127.0.0.0/8 address or ::1 on loopback.
	HostAddresses map[string]string
}

// App is a demo app: how many machines it runs in each region, spread
// over the region's hosts.
type App struct {
	Name     string
	Machines map[string]int // region → machines
}

// DemoApps are the apps `patina dev` starts with: web everywhere, api in
// ams and iad, worker only in syd.
var DemoApps = []App{
	{Name: "web", Machines: map[string]int{"ams": 3, "iad": 3, "syd": 3}},
	{Name: "api", Machines: map[string]int{"ams": 2, "iad": 2}},
	{Name: "worker", Machines: map[string]int{"syd": 2}},
}

// Topology is a running two-tier topology.
type Topology struct {
	Regions []*RegionTier
	Global  *devcluster.Region
	opts    Options
	ports   *devcluster.Ports
	apps    []App
}

// RegionTier is one region of a topology: its regional cluster and a
// host agent beside each of its agents.
type RegionTier struct {
	Name    string
	Cluster *devcluster.Region
	Hosts   []*HostNode
	Bridge  *BridgeNode
	// dns and proxy are the region's edge addresses, set by SetEdge.
	dns, proxy string
}

// BridgeNode is a region's bridge.
type BridgeNode struct {
	Name string
	// Bridge is set for an in-process bridge, Process for a child one.
	Bridge  *bridge.Bridge
	Process *devcluster.Process
	done    chan error
	stop    context.CancelFunc
}

// Stop stops the bridge and waits for it.
func (b *BridgeNode) Stop() error {
	if b != nil && b.Process != nil {
		return b.Process.Stop()
	}
	if b == nil || b.stop == nil {
		return nil
	}
	b.stop()
	b.stop = nil
	return <-b.done
}

// HostNode is one host agent of a region.
type HostNode struct {
	Name string
	// API is the host's HTTP address, http://host:port.
	API string
	// DB is the host's bbolt file.
	DB string
	// Host is set for an in-process host agent, Process for a child one.
	Host    *host.Host
	Process *devcluster.Process
	done    chan error
	stop    context.CancelFunc
}

// Client is a client for the host's API.
func (h *HostNode) Client() *host.Client {
	c, _ := host.NewClient(h.API, "")
	return c
}

// Locations of the regions a dev topology knows, for nearest-region
// ranking: latitude, longitude.
var Locations = map[string][2]float64{
	"ams": {52.37, 4.90}, "iad": {38.94, -77.46}, "syd": {-33.87, 151.21},
	"fra": {50.11, 8.68}, "sin": {1.35, 103.82}, "sjc": {37.36, -121.93},
	"lhr": {51.47, -0.45}, "nrt": {35.77, 140.39}, "gru": {-23.43, -46.47},
}

// Start starts the global cluster, then each region. It returns
// once every cluster's members see each other.
func Start(ctx context.Context, opts Options) (*Topology, error) {
	if opts.Dir == "" {
		return nil, errors.New("topology: no directory")
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
	if opts.Apps == nil {
		opts.Apps = DemoApps
	}
	if opts.CheckInterval == 0 {
		opts.CheckInterval = 2 * time.Second
	}
	t := &Topology{opts: opts, ports: &devcluster.Ports{Base: opts.BasePort}, apps: opts.Apps}
	global, err := devcluster.StartRegion(ctx, devcluster.RegionOptions{
		Cluster: "global", Nodes: opts.GlobalAgents, Dir: filepath.Join(opts.Dir, "global"),
		SchemaPaths: []string{filepath.Join(opts.SchemaDir, "global")}, Log: opts.Log,
		NodeRegions: opts.Regions, Ports: t.ports, Binary: opts.Binary, Restart: opts.Binary != "", RestartDelay: opts.RestartDelay,
	})
	if err != nil {
		return nil, fmt.Errorf("topology: global cluster: %w", err)
	}
	t.Global = global
	for _, name := range opts.Regions {
		r, err := devcluster.StartRegion(ctx, devcluster.RegionOptions{
			Cluster: name, Nodes: opts.AgentsPerRegion, Dir: filepath.Join(opts.Dir, name),
			SchemaPaths: []string{filepath.Join(opts.SchemaDir, "regional")}, Log: opts.Log, Ports: t.ports,
			Binary: opts.Binary, Restart: opts.Binary != "", RestartDelay: opts.RestartDelay,
		})
		if err != nil {
			t.Stop()
			return nil, fmt.Errorf("topology: region %s: %w", name, err)
		}
		tier := &RegionTier{Name: name, Cluster: r}
		t.Regions = append(t.Regions, tier)
		if err := t.startBridge(ctx, tier); err != nil {
			t.Stop()
			return nil, fmt.Errorf("topology: region %s: %w", name, err)
		}
		if err := t.startHosts(ctx, tier); err != nil {
			t.Stop()
			return nil, fmt.Errorf("topology: region %s: %w", name, err)
		}
	}
	if err := t.createApps(ctx); err != nil {
		t.Stop()
		return nil, err
	}
	if err := t.WaitApps(ctx, time.Minute); err != nil {
		t.Stop()
		return nil, err
	}
	if err := t.WriteEndpoints(); err != nil {
		t.Stop()
		return nil, err
	}
	return t, nil
}

// startBridge starts the region's bridge: it follows the region's agents
// and writes to the global agents placed in its region first.
func (t *Topology) startBridge(ctx context.Context, tier *RegionTier) error {
	cfg := bridge.DefaultConfig()
	cfg.Bridge.Name, cfg.Bridge.Region = tier.Name+"-bridge", tier.Name
	cfg.Log = agent.LogConfig{Format: "text", Level: "info"}
	for _, n := range tier.Cluster.Nodes {
		cfg.Region.Agents = append(cfg.Region.Agents, n.API)
		cfg.Directory.Lookup = append(cfg.Directory.Lookup, n.GRPC)
	}
	var near, far []string
	for _, n := range t.Global.Nodes {
		if n.Region == tier.Name {
			near = append(near, n.API)
		} else {
			far = append(far, n.API)
		}
	}
	cfg.Global.Agents = append(near, far...)
	if loc, ok := Locations[tier.Name]; ok {
		cfg.Directory.Latitude, cfg.Directory.Longitude = loc[0], loc[1]
	}
	if t.opts.Binary != "" {
		path := filepath.Join(t.opts.Dir, tier.Name, cfg.Bridge.Name+".toml")
		if err := WriteFile(path, bridgeTOML(cfg)); err != nil {
			return err
		}
		p := &devcluster.Process{Binary: t.opts.Binary, Args: []string{"bridge", "--config", path},
			LogPath: filepath.Join(t.opts.Dir, tier.Name, cfg.Bridge.Name+".log"), Restart: true}
		if err := p.Start(); err != nil {
			return err
		}
		tier.Bridge = &BridgeNode{Name: cfg.Bridge.Name, Process: p}
		return nil
	}
	logger, err := agent.NewLogger(cfg.Log, t.opts.Log)
	if err != nil {
		return err
	}
	b, err := bridge.New(cfg, logger)
	if err != nil {
		return err
	}
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	tier.Bridge = &BridgeNode{Name: cfg.Bridge.Name, Bridge: b, done: make(chan error, 1), stop: cancel}
	go func() { tier.Bridge.done <- b.Run(bctx) }()
	return nil
}

// startHosts starts a host agent beside each of the region's agents,
// publishing to it first and to the others when it fails.
func (t *Topology) startHosts(ctx context.Context, tier *RegionTier) error {
	for i, n := range tier.Cluster.Nodes {
		ports, err := t.ports.Take(1)
		if err != nil {
			return err
		}
		name := fmt.Sprintf("%s-h%d", tier.Name, i+1)
		cfg := host.DefaultConfig()
		cfg.Host.Name, cfg.Host.Region = name, tier.Name
		cfg.Host.DB = filepath.Join(t.opts.Dir, tier.Name, name+".bolt")
		cfg.Host.CheckInterval = t.opts.CheckInterval.String()
		if a := t.opts.HostAddresses[tier.Name]; a != "" {
			cfg.Host.Address = a
		}
		cfg.API.Addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
		cfg.Agent.API = []string{n.API}
		for _, o := range tier.Cluster.Nodes {
			if o != n {
				cfg.Agent.API = append(cfg.Agent.API, o.API)
			}
		}
		var h *HostNode
		if t.opts.Binary != "" {
			h, err = startHostProcess(t.opts.Binary, filepath.Join(t.opts.Dir, tier.Name), name, cfg)
		} else {
			h, err = startHost(ctx, name, cfg, t.opts.Log)
		}
		if err != nil {
			return err
		}
		tier.Hosts = append(tier.Hosts, h)
	}
	return nil
}

func startHost(ctx context.Context, name string, cfg host.Config, log io.Writer) (*HostNode, error) {
	logger, err := agent.NewLogger(cfg.Log, log)
	if err != nil {
		return nil, err
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h, err := host.New(hctx, cfg, logger.With("host", name))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("host %s: %w", name, err)
	}
	hn := &HostNode{Name: name, API: "http://" + h.APIAddr(), DB: cfg.Host.DB, Host: h, done: make(chan error, 1), stop: cancel}
	go func() { hn.done <- h.Run(hctx) }()
	return hn, nil
}

func startHostProcess(binary, dir, name string, cfg host.Config) (*HostNode, error) {
	path := filepath.Join(dir, name+".toml")
	if err := WriteFile(path, hostTOML(cfg)); err != nil {
		return nil, err
	}
	p := &devcluster.Process{Binary: binary, Args: []string{"host", "--config", path}, LogPath: filepath.Join(dir, name+".log"), Restart: true}
	if err := p.Start(); err != nil {
		return nil, err
	}
	return &HostNode{Name: name, API: "http://" + cfg.API.Addr, DB: cfg.Host.DB, Process: p}, nil
}

// Stop stops the host agent and waits for it; its machines' records
// stay in its bbolt file.
func (h *HostNode) Stop() error {
	if h.Process != nil {
		return h.Process.Stop()
	}
	if h.stop == nil {
		return nil
	}
	h.stop()
	h.stop = nil
	return <-h.done
}

// create makes a machine on the host, in process or through its API
// (waiting for a child process's API to answer).
func (h *HostNode) create(ctx context.Context, spec host.MachineSpec) (regional.Machine, error) {
	if h.Host != nil {
		return h.Host.Create(ctx, spec)
	}
	c := h.Client()
	var m regional.Machine
	var err error
	werr := waitFor(ctx, time.Minute, "host "+h.Name+" answers", func() bool {
		m, err = c.Create(ctx, spec)
		var ae *host.APIError
		return err == nil || errors.As(err, &ae)
	})
	return m, errors.Join(werr, err)
}

// createApps creates and starts the demo apps' machines, spread over
// each region's hosts, each with an HTTP check.
func (t *Topology) createApps(ctx context.Context) error {
	for _, app := range t.apps {
		for _, r := range t.Regions {
			for i := range app.Machines[r.Name] {
				h := r.Hosts[i%len(r.Hosts)]
				_, err := h.create(ctx, host.MachineSpec{
					App: app.Name, Image: "registry.internal/" + app.Name + ":v1", Start: true,
					Checks: []host.CheckSpec{{Kind: "http", Path: "/"}},
				})
				if err != nil {
					return fmt.Errorf("topology: %s machine on %s: %w", app.Name, h.Name, err)
				}
			}
		}
	}
	return nil
}

// WaitApps waits until every global agent's map lists each demo app in
// each of its regions with all its machines.
func (t *Topology) WaitApps(ctx context.Context, timeout time.Duration) error {
	want := map[[2]string]int64{}
	for _, a := range t.apps {
		for region, n := range a.Machines {
			if n > 0 && t.region(region) != nil {
				want[[2]string{a.Name, region}] = int64(n)
			}
		}
	}
	return waitFor(ctx, timeout, "the global map lists every demo app", func() bool {
		for _, n := range t.Global.Nodes {
			rows, err := n.Client().Query(ctx, client.Statement{Query: "SELECT app, region, machine_count FROM app_regions"})
			if err != nil {
				return false
			}
			got := map[[2]string]int64{}
			for rows.Next() {
				r := rows.Row()
				app, _ := r[0].(string)
				region, _ := r[1].(string)
				count, _ := r[2].(int64)
				got[[2]string{app, region}] = count
			}
			err = rows.Err()
			rows.Close()
			if err != nil || !maps.Equal(got, want) {
				return false
			}
		}
		return true
	})
}

// region returns the region named name, nil when there is none.
func (t *Topology) region(name string) *RegionTier {
	for _, r := range t.Regions {
		if r.Name == name {
			return r
		}
	}
	return nil
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
			return "", errors.New("topology: no schemas/ directory here or above: run from the repository or set the schema directory")
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
	// DNS and Proxy are the region's edge, when one runs: host:port and
	// http://host:port.
	DNS   string `json:"dns,omitempty"`
	Proxy string `json:"proxy,omitempty"`
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
		re := RegionEndpoints{Agents: agentEndpoints(r.Cluster), Hosts: []HostEndpoint{}}
		if r.Bridge != nil {
			re.Bridge.Name = r.Bridge.Name
		}
		re.DNS, re.Proxy = r.dns, r.proxy
		for _, h := range r.Hosts {
			re.Hosts = append(re.Hosts, HostEndpoint{Name: h.Name, API: h.API, DB: h.DB})
		}
		e.Regions[r.Name] = re
	}
	for _, a := range t.apps {
		e.Apps = append(e.Apps, a.Name)
	}
	return e
}

func agentEndpoints(r *devcluster.Region) []AgentEndpoint {
	out := []AgentEndpoint{}
	for _, n := range r.Nodes {
		out = append(out, AgentEndpoint{Name: n.Name, API: n.API, GRPC: n.GRPC, DB: n.DBPath})
	}
	return out
}

// SetEdge records the addresses of a region's DNS server and proxy for
// Endpoints (an empty one is left as it was).
func (t *Topology) SetEdge(region, dns, proxy string) {
	if r := t.region(region); r != nil {
		if dns != "" {
			r.dns = dns
		}
		if proxy != "" {
			r.proxy = proxy
		}
	}
}

// Binary is the binary components run from as processes, "" when they
// run in this process; Dir is the topology's directory.
func (t *Topology) Binary() string { return t.opts.Binary }

// Dir is the directory holding every component's files.
func (t *Topology) Dir() string { return t.opts.Dir }

// Ports hands out the topology's ports, for components started beside it.
func (t *Topology) Ports() *devcluster.Ports { return t.ports }

// WriteEndpoints writes <dir>/endpoints.json, whole or not at all.
func (t *Topology) WriteEndpoints() error {
	data, err := json.MarshalIndent(t.Endpoints(), "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(t.opts.Dir, "endpoints.json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return fmt.Errorf("topology: %w", err)
	}
	return os.Rename(tmp, path)
}

// Stop stops every component, regions first, and waits for them.
func (t *Topology) Stop() error {
	var errs []error
	for _, r := range t.Regions {
		if err := r.Bridge.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("bridge %s: %w", r.Bridge.Name, err))
		}
		for _, h := range r.Hosts {
			if err := h.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("host %s: %w", h.Name, err))
			}
		}
	}
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
			return fmt.Errorf("topology: %s: not after %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}
