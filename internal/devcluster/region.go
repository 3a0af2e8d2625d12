// Package devcluster starts whole patina topologies on one machine, on
// loopback with fresh ports: for tests, benchmarks and `patina dev`.
// Agents run in this process or each as its own `patina agent` process,
// always with a real store, real gossip and QUIC with mutual TLS under a
// CA made on the spot.
package devcluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/cluster"
	"github.com/patina-db/patina/internal/watchdog"
)

// RegionOptions describe a regional cluster to start.
type RegionOptions struct {
	// Cluster names the cluster and the region (default "ams").
	Cluster string
	// Nodes is the number of agents (default 3).
	Nodes int
	// Dir holds databases, certificates, configs and logs.
	Dir string
	// Binary, when set, runs each agent as `Binary agent --config ...`;
	// otherwise agents run in this process.
	Binary string
	// SchemaPaths for every agent (default: the regional schema files
	// must be given by the caller).
	SchemaPaths []string
	// Faults inject failures into in-process agents' data plane.
	Faults *cluster.Faults
	// Log receives in-process agents' logs (default: discarded).
	Log io.Writer
	// SyncInterval overrides the agents' sync interval.
	SyncInterval time.Duration
	// ExtraTOML is appended to every agent's configuration, right after
	// its [api] keys: more [api] keys, then other sections.
	ExtraTOML string
	// WatchdogTimeout overrides the agents' [watchdog] timeout.
	WatchdogTimeout time.Duration
	// Procs, when positive, is the GOMAXPROCS of each agent run as a
	// process (Go's default otherwise: every core).
	Procs int
	// Restart supervises agents run as processes: one that exits without
	// being stopped is started again, RestartDelay later.
	Restart      bool
	RestartDelay time.Duration
	// OnStall, when set, is told instead of exiting when an in-process
	// agent's watchdog finds a stalled loop.
	OnStall func(node string, s watchdog.Stall)
	// NodeRegions, when set, gives agent i the region NodeRegions[i %
	// len]: a global cluster spreads its agents over the regions this
	// way. Unset: every agent's region is the cluster name.
	NodeRegions []string
	// Ports hands out the agents' ports (default: a Ports of the region's own).
	Ports *Ports
}

// Region is a running regional cluster.
type Region struct {
	Nodes  []*RegionNode
	opts   RegionOptions
	cancel context.CancelFunc
	ca     *cluster.CA
	tlsDir string
	ctx    context.Context
}

// RegionNode is one agent of a region.
type RegionNode struct {
	Name string
	// Region is the agent's region.
	Region string
	// API is the agent's HTTP address, http://host:port.
	API    string
	Gossip string
	// GRPC is the agent's gRPC address, host:port.
	GRPC string
	// DBPath is the agent's database file.
	DBPath string
	// Agent is set for in-process agents, Process for the others.
	Agent   *agent.Agent
	Process *Process
	done    chan error

	cfgPath, logPath  string
	quicPort, apiPort int
	grpcPort          int
	opts              RegionOptions
	cancel            context.CancelFunc
	ctx               context.Context
}

// StartRegion starts the agents, joins them, and returns once every agent
// serves its API and sees every other as alive.
func StartRegion(ctx context.Context, opts RegionOptions) (*Region, error) {
	if opts.Cluster == "" {
		opts.Cluster = "ams"
	}
	if opts.Nodes == 0 {
		opts.Nodes = 3
	}
	if opts.Dir == "" {
		return nil, errors.New("devcluster: no directory")
	}
	if opts.Log == nil {
		opts.Log = io.Discard
	}
	if opts.Ports == nil {
		opts.Ports = &Ports{}
	}
	ca, err := cluster.NewCA(opts.Cluster + " dev CA")
	if err != nil {
		return nil, err
	}
	tlsDir := filepath.Join(opts.Dir, "tls")
	if err := ca.Write(tlsDir); err != nil {
		return nil, fmt.Errorf("devcluster: %w (start a region in an empty directory)", err)
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &Region{opts: opts, cancel: cancel, ca: ca, tlsDir: tlsDir, ctx: rctx}
	for i := 0; i < opts.Nodes; i++ {
		if _, err := r.AddNode(nil); err != nil {
			r.Stop()
			return nil, err
		}
	}
	if err := r.WaitMembers(ctx, opts.Nodes, 60*time.Second); err != nil {
		r.Stop()
		return nil, err
	}
	return r, nil
}

// AddNode configures one more agent joined to the region's members,
// runs prepare (when not nil) before the agent first starts (to put a
// database in place at n.DBPath, say), and starts it. It does not wait for
// the agent to join: see WaitMembers.
func (r *Region) AddNode(prepare func(n *RegionNode) error) (*RegionNode, error) {
	opts := r.opts
	name := fmt.Sprintf("%s-%d", opts.Cluster, len(r.Nodes)+1)
	var bootstrap []string
	for _, n := range r.Nodes {
		bootstrap = append(bootstrap, n.Gossip)
	}
	ports, err := opts.Ports.Take(4)
	if err != nil {
		return nil, err
	}
	region := opts.Cluster
	if len(opts.NodeRegions) > 0 {
		region = opts.NodeRegions[len(r.Nodes)%len(opts.NodeRegions)]
	}
	gossip := fmt.Sprintf("127.0.0.1:%d", ports[0])
	dbPath := filepath.Join(opts.Dir, name+".db")
	node := &RegionNode{Name: name, Region: region, API: fmt.Sprintf("http://127.0.0.1:%d", ports[2]), Gossip: gossip, DBPath: dbPath,
		GRPC:    fmt.Sprintf("127.0.0.1:%d", ports[3]),
		cfgPath: filepath.Join(opts.Dir, name+".toml"), logPath: filepath.Join(opts.Dir, name+".log"), opts: opts, ctx: r.ctx,
		quicPort: ports[1], apiPort: ports[2], grpcPort: ports[3]}
	nc, err := r.ca.Issue(name, []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
	if err != nil {
		return nil, err
	}
	if err := nc.Write(r.tlsDir, name); err != nil {
		return nil, err
	}
	if err := r.writeConfig(node, bootstrap); err != nil {
		return nil, err
	}
	if prepare != nil {
		if err := prepare(node); err != nil {
			return nil, fmt.Errorf("devcluster: %s: %w", name, err)
		}
	}
	if err := node.Start(); err != nil {
		return nil, fmt.Errorf("devcluster: %s: %w", name, err)
	}
	r.Nodes = append(r.Nodes, node)
	// Every agent's configuration lists every other agent, so that any of
	// them restarted (the first included) finds the cluster again. The
	// new one's lists them all already.
	for _, n := range r.Nodes[:len(r.Nodes)-1] {
		var others []string
		for _, o := range r.Nodes {
			if o != n {
				others = append(others, o.Gossip)
			}
		}
		if err := r.writeConfig(n, others); err != nil {
			return nil, err
		}
	}
	return node, nil
}

// writeConfig writes a node's agent configuration.
func (r *Region) writeConfig(n *RegionNode, bootstrap []string) error {
	opts := r.opts
	text := fmt.Sprintf(`[db]
path = %q
schema_paths = %s
[gossip]
addr = %q
quic_addr = "127.0.0.1:%d"
bootstrap = %s
cluster = %q
region = %q
name = %q
%s[gossip.tls]
ca_file = %q
cert_file = %q
key_file = %q
[grpc]
addr = "127.0.0.1:%d"
[api]
addr = "127.0.0.1:%d"
%s
%s`, n.DBPath, tomlList(opts.SchemaPaths), n.Gossip, n.quicPort, tomlList(bootstrap), opts.Cluster, n.Region, n.Name,
		syncLine(opts.SyncInterval), filepath.Join(r.tlsDir, "ca.pem"), filepath.Join(r.tlsDir, n.Name+".pem"), filepath.Join(r.tlsDir, n.Name+"-key.pem"),
		n.grpcPort, n.apiPort, opts.ExtraTOML, watchdogSection(opts.WatchdogTimeout))
	// Whole or not at all: an agent may be reading it.
	tmp := n.cfgPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, n.cfgPath)
}

func syncLine(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return fmt.Sprintf("sync_interval = %q\n", d.String())
}

func watchdogSection(d time.Duration) string {
	if d == 0 {
		return ""
	}
	return fmt.Sprintf("[watchdog]\ntimeout = %q\n", d.String())
}

func tomlList(items []string) string {
	out := "["
	for i, s := range items {
		if i > 0 {
			out += ", "
		}
		out += fmt.Sprintf("%q", s)
	}
	return out + "]"
}

// Start starts the node's agent (again, after Stop).
func (n *RegionNode) Start() error {
	n.done = make(chan error, 1)
	if n.opts.Binary != "" {
		return n.startProcess()
	}
	return n.startInProcess()
}

// Stop stops the node's agent and waits for it, keeping its database.
func (n *RegionNode) Stop() error {
	if n.done == nil {
		return nil // not running
	}
	defer func() { n.done = nil }()
	if n.Process != nil {
		return n.Process.Stop()
	}
	if n.cancel != nil {
		n.cancel()
	}
	select {
	case err := <-n.done:
		return err
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s: did not stop", n.Name)
	}
}

func (n *RegionNode) startInProcess() error {
	cfg, err := agent.LoadConfig(n.cfgPath)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(n.ctx)
	opts := agent.Options{Faults: n.opts.Faults, LocalGossip: true}
	if n.opts.OnStall != nil {
		opts.OnStall = func(s watchdog.Stall) { n.opts.OnStall(n.Name, s) }
	}
	a, err := agent.NewWithOptions(ctx, cfg, n.opts.Log, opts)
	if err != nil {
		cancel()
		return err
	}
	n.Agent, n.cancel = a, cancel
	go func() { n.done <- a.Run(ctx) }()
	return nil
}

func (n *RegionNode) startProcess() error {
	n.Process = &Process{Binary: n.opts.Binary, Args: []string{"agent", "--config", n.cfgPath}, LogPath: n.logPath, Restart: n.opts.Restart, RestartDelay: n.opts.RestartDelay}
	if n.opts.Procs > 0 {
		n.Process.Env = []string{fmt.Sprintf("GOMAXPROCS=%d", n.opts.Procs)}
	}
	return n.Process.Start()
}

// ConfigPath is the node's agent configuration file.
func (n *RegionNode) ConfigPath() string { return n.cfgPath }

// Client returns a client for the node's API.
func (n *RegionNode) Client() *client.Client {
	c, _ := client.New(n.API, "")
	return c
}

// WaitMembers waits until every node answers and sees want alive members.
// On timeout the error says what the first node still short of that saw.
func (r *Region) WaitMembers(ctx context.Context, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		short := ""
		for _, n := range r.Nodes {
			members, err := n.Client().Members(ctx)
			if err != nil {
				short = fmt.Sprintf("%s: %v", n.Name, err)
				break
			}
			alive, others := 0, []string{}
			known := map[string]bool{}
			for _, m := range members {
				known[m.Name] = true
				if m.State == "alive" {
					alive++
				} else {
					others = append(others, m.Name+" "+m.State)
				}
			}
			if alive != want {
				short = fmt.Sprintf("%s sees %d alive %v", n.Name, alive, others)
				for _, o := range r.Nodes {
					if !known[o.Name] {
						short += fmt.Sprintf("; has not heard of %s (its log ends: %q)", o.Name, LogTail(o.logPath, 3))
					}
				}
				break
			}
		}
		if short == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("devcluster: %d members not alive everywhere after %s (%s)", want, timeout, short)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop stops every agent and waits for them.
func (r *Region) Stop() error {
	var errs []error
	for _, n := range r.Nodes {
		if err := n.Stop(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.Name, err))
		}
	}
	r.cancel()
	return errors.Join(errs...)
}

// Ports hands out ports on loopback: from Base upwards when Base is set
// (stable addresses, as `patina dev --base-port` wants), else from blocks
// below the kernel's ephemeral range that no other Ports on the machine
// holds. Either way each is free for TCP and UDP when handed out. Safe
// for one goroutine at a time.
//
// Not ephemeral ports: between the moment a port is handed out and the
// moment its agent binds it, the kernel may give the same port to any
// outgoing connection on the machine (the other agents make plenty), and
// the agent then fails to start with "address already in use". And a
// block of its own: an agent stopped and started again binds the ports it
// had, which another region (in this process or another, such as a test
// package running beside this one) would otherwise be free to take while
// they were released.
type Ports struct {
	// Base is the first port to try; 0 means blocks claimed below the
	// ephemeral range.
	Base int
	next int
	end  int        // end of the current block, exclusive
	held []*os.File // the claims on this Ports' blocks, held for the process's life
}

// portBlock is how many ports a Ports claims at a time: a region of ten
// agents takes forty.
const portBlock = 64

// portFloor is the lowest port handed out without a Base.
const portFloor = 10000

// ephemeralLow is where the kernel's ephemeral range starts.
func ephemeralLow() int {
	low := 32768 // Linux's default start of the ephemeral range
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil {
				low = v
			}
		}
	}
	return low
}

// claim takes a block of ports between portFloor and the ephemeral range
// that no other Ports holds: each block has a lock file, and a Ports
// holds an exclusive lock on its blocks' files until the process ends.
func (p *Ports) claim() error {
	blocks := (ephemeralLow() - portFloor) / portBlock
	if blocks < 1 {
		return fmt.Errorf("devcluster: no room for ports between %d and the ephemeral range", portFloor)
	}
	dir := filepath.Join(os.TempDir(), "patina-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return fmt.Errorf("devcluster: port claims: %w", err)
	}
	first := rand.IntN(blocks)
	for i := 0; i < blocks; i++ {
		start := portFloor + (first+i)%blocks*portBlock
		f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("%d.lock", start)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return fmt.Errorf("devcluster: port claims: %w", err)
		}
		ok, err := tryClaim(f)
		if err != nil || !ok {
			f.Close()
			continue
		}
		p.held = append(p.held, f)
		p.next, p.end = start, start+portBlock
		return nil
	}
	return fmt.Errorf("devcluster: all %d blocks of ports below %d are claimed", blocks, ephemeralLow())
}

// Take hands out n ports.
func (p *Ports) Take(n int) ([]int, error) {
	var ports []int
	var hold []io.Closer
	defer func() {
		for _, c := range hold {
			c.Close()
		}
	}()
	if p.next == 0 && p.Base != 0 {
		p.next, p.end = p.Base, 65536
	}
	for len(ports) < n {
		if p.next >= p.end {
			if p.Base != 0 {
				return nil, errors.New("devcluster: no free ports left below 65536")
			}
			if err := p.claim(); err != nil {
				return nil, err
			}
		}
		addr := fmt.Sprintf("127.0.0.1:%d", p.next)
		p.next++
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken: try the next one
		}
		port := ln.Addr().(*net.TCPAddr).Port
		udp, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			ln.Close()
			continue
		}
		hold = append(hold, ln, udp)
		ports = append(ports, port)
	}
	return ports, nil
}

// LogTail is the last n lines of a log file, or what went wrong reading it.
func LogTail(path string, n int) string {
	if path == "" {
		return "(in process, no log file)"
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
