// Package edge starts the edge of a running dev topology: a DNS server
// and an HTTP proxy per region, each asking that region's agents first and the global agents
// placed in the region before the others. It lives beside the topology
// rather than in it so that the edge components' own tests can start a
// topology.
package edge

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"

	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/devcluster"
	"github.com/patina-db/patina/internal/devcluster/topology"
	"github.com/patina-db/patina/internal/dns"
	"github.com/patina-db/patina/internal/proxy"
)

// Edge is the running edge components.
type Edge struct {
	stops []func() error
}

// Start starts a proxy per region of t, records their addresses in t's
// endpoints and rewrites endpoints.json.
func Start(ctx context.Context, t *topology.Topology, log io.Writer) (*Edge, error) {
	e := &Edge{}
	for _, r := range t.Regions {
		ports, err := t.Ports().Take(2)
		if err != nil {
			e.Stop()
			return nil, err
		}
		local, global := grpcAddrs(t, r)
		pcfg := proxy.DefaultConfig()
		pcfg.Proxy.Addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
		pcfg.Region.Name, pcfg.Region.Lookup, pcfg.Global.Agents = r.Name, local, global
		dcfg := dns.DefaultConfig()
		dcfg.DNS.Addr = fmt.Sprintf("127.0.0.1:%d", ports[1])
		dcfg.Region.Name, dcfg.Region.Lookup, dcfg.Global.Agents = r.Name, local, global
		var err2 error
		if t.Binary() != "" {
			err2 = e.startProcesses(t, r.Name, pcfg, dcfg)
		} else {
			err2 = e.startInProcess(ctx, r.Name, pcfg, dcfg, log)
		}
		if err2 != nil {
			e.Stop()
			return nil, err2
		}
		t.SetEdge(r.Name, dcfg.DNS.Addr, "http://"+pcfg.Proxy.Addr)
	}
	if err := t.WriteEndpoints(); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
}

func (e *Edge) startInProcess(ctx context.Context, region string, pcfg proxy.Config, dcfg dns.Config, log io.Writer) error {
	logger, err := agent.NewLogger(pcfg.Log, log)
	if err != nil {
		return err
	}
	p, err := proxy.New(pcfg, logger.With("proxy", region))
	if err != nil {
		return fmt.Errorf("edge: proxy for %s: %w", region, err)
	}
	e.run(ctx, p.Run)
	d, err := dns.New(dcfg, logger.With("dns", region))
	if err != nil {
		return fmt.Errorf("edge: dns for %s: %w", region, err)
	}
	e.run(ctx, d.Run)
	return nil
}

// startProcesses runs the region's proxy and DNS server as supervised
// child processes, from configurations in the deploy/ format.
func (e *Edge) startProcesses(t *topology.Topology, region string, pcfg proxy.Config, dcfg dns.Config) error {
	dir := filepath.Join(t.Dir(), region)
	for _, c := range []struct{ role, text string }{
		{"proxy", fmt.Sprintf("[proxy]\naddr = %q\n\n[region]\nname = %q\nlookup = %s\n\n[global]\nagents = %s\n",
			pcfg.Proxy.Addr, region, topology.List(pcfg.Region.Lookup), topology.List(pcfg.Global.Agents))},
		{"dns", fmt.Sprintf("[dns]\naddr = %q\n\n[region]\nname = %q\nlookup = %s\n\n[global]\nagents = %s\n",
			dcfg.DNS.Addr, region, topology.List(dcfg.Region.Lookup), topology.List(dcfg.Global.Agents))},
	} {
		path := filepath.Join(dir, region+"-"+c.role+".toml")
		if err := topology.WriteFile(path, c.text); err != nil {
			return err
		}
		p := &devcluster.Process{Binary: t.Binary(), Args: []string{c.role, "--config", path},
			LogPath: filepath.Join(dir, region+"-"+c.role+".log"), Restart: true}
		if err := p.Start(); err != nil {
			return err
		}
		e.stops = append(e.stops, p.Stop)
	}
	return nil
}

// grpcAddrs are the region's agents' gRPC addresses, and the global
// agents', those placed in the region first.
func grpcAddrs(t *topology.Topology, r *topology.RegionTier) (local, global []string) {
	for _, n := range r.Cluster.Nodes {
		local = append(local, n.GRPC)
	}
	var far []string
	for _, n := range t.Global.Nodes {
		if n.Region == r.Name {
			global = append(global, n.GRPC)
		} else {
			far = append(far, n.GRPC)
		}
	}
	return local, append(global, far...)
}

// run runs fn until Stop.
func (e *Edge) run(ctx context.Context, fn func(context.Context) error) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()
	e.stops = append(e.stops, func() error { cancel(); return <-done })
}

// Stop stops every edge component and waits for them.
func (e *Edge) Stop() error {
	var errs []error
	for _, stop := range e.stops {
		errs = append(errs, stop())
	}
	e.stops = nil
	return errors.Join(errs...)
}
