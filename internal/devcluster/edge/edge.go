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

	"github.com/patina-db/patina/internal/agent"
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
		local, global := grpcAddrs(t, r)
		ports, err := t.Ports().Take(1)
		if err != nil {
			e.Stop()
			return nil, err
		}
		cfg := proxy.DefaultConfig()
		cfg.Proxy.Addr = fmt.Sprintf("127.0.0.1:%d", ports[0])
		cfg.Region.Name, cfg.Region.Lookup, cfg.Global.Agents = r.Name, local, global
		logger, err := agent.NewLogger(cfg.Log, log)
		if err != nil {
			e.Stop()
			return nil, err
		}
		p, err := proxy.New(cfg, logger.With("proxy", r.Name))
		if err != nil {
			e.Stop()
			return nil, fmt.Errorf("edge: proxy for %s: %w", r.Name, err)
		}
		e.run(ctx, p.Run)
		dcfg := dns.DefaultConfig()
		dports, err := t.Ports().Take(1)
		if err != nil {
			e.Stop()
			return nil, err
		}
		dcfg.DNS.Addr = fmt.Sprintf("127.0.0.1:%d", dports[0])
		dcfg.Region.Name, dcfg.Region.Lookup, dcfg.Global.Agents = r.Name, local, global
		d, err := dns.New(dcfg, logger.With("dns", r.Name))
		if err != nil {
			e.Stop()
			return nil, fmt.Errorf("edge: dns for %s: %w", r.Name, err)
		}
		e.run(ctx, d.Run)
		t.SetEdge(r.Name, d.Addr(), "http://"+p.Addr())
	}
	if err := t.WriteEndpoints(); err != nil {
		e.Stop()
		return nil, err
	}
	return e, nil
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
