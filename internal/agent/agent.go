// Package agent runs one patina node: it opens the store, applies the
// configured schema and serves the HTTP API and its metrics, under a
// watchdog, until its context ends, then lets in-flight requests finish
// and closes the database cleanly.
package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/patina-db/patina/internal/api"
	"github.com/patina-db/patina/internal/cluster"
	"github.com/patina-db/patina/internal/metrics"
	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/internal/subs"
	"github.com/patina-db/patina/internal/watchdog"
	"github.com/patina-db/patina/regional/reaper"
)

// Agent is a running node.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	store  *store.Store
	node   *cluster.Node // nil when the agent runs alone
	ln     net.Listener
	server *http.Server
	subs   *subs.Engine
	obs    *observability
	grpc   *grpcServer    // nil without [grpc] addr
	reaper *reaper.Reaper // nil with [hosts] forget_after = "off"
}

// rank is this agent's place among its region's alive members by name
// (see reaper.Config.Rank); nil when it runs alone.
func rank(node *cluster.Node) func() int {
	if node == nil {
		return nil
	}
	return func() int {
		self, n := node.Name(), 0
		for _, m := range node.Members() {
			if m.Alive && m.Name < self {
				n++
			}
		}
		return n
	}
}

// Options are what a process embedding agents (tests, patina dev) may
// add to the configuration.
type Options struct {
	// Credentials replace the [gossip.tls] files (an ephemeral dev CA).
	Credentials *cluster.Credentials
	// Faults inject data-plane failures (tests and benchmarks).
	Faults *cluster.Faults
	// LocalGossip uses memberlist's single-host timings.
	LocalGossip bool
	// OnStall replaces what the agent does when its watchdog finds a
	// stalled loop (default: exit with status ExitStalled).
	OnStall func(watchdog.Stall)
}

// New opens the store, applies the schema and binds the API listener. The
// API serves once Run is called.
func New(ctx context.Context, cfg Config, logOut io.Writer) (*Agent, error) {
	return NewWithOptions(ctx, cfg, logOut, Options{})
}

// NewWithOptions is New with what an embedding process may add.
func NewWithOptions(ctx context.Context, cfg Config, logOut io.Writer, opts Options) (*Agent, error) {
	if opts.Credentials != nil && cfg.Gossip.Addr != "" {
		// Credentials given in code stand in for the files.
		cfg.Gossip.TLS = cluster.TLSFiles{CAFile: "-", CertFile: "-", KeyFile: "-"}
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	logger, err := NewLogger(cfg.Log, logOut)
	if err != nil {
		return nil, err
	}
	applyRuntime(ctx, cfg.Runtime, logger)
	obs, err := newObservability(cfg, logger, logOut, opts.OnStall)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	st, err := store.Open(ctx, store.Config{Path: cfg.DB.Path, Readers: cfg.DB.Readers, ManualCheckpoint: true, MaxValueBytes: cluster.MaxValueBytes})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	if old, ok := st.Reidentified(); ok {
		logger.Warn("the last run ended with its host (power loss or a kernel crash), so its last commits may be gone here while peers hold them; this node now writes under a new actor id, and sync brings the old one's versions back", "old_actor", old, "actor", st.Actor())
	}
	if len(cfg.DB.SchemaPaths) > 0 {
		if err := st.ApplySchemaFiles(ctx, cfg.DB.SchemaPaths); err != nil {
			st.Close()
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	ln, err := net.Listen("tcp", cfg.API.Addr)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("agent: api listen: %w", err)
	}
	var grpcLn net.Listener
	grpcAddr := ""
	grpcOpts, err := cfg.GRPC.serverOptions()
	if err != nil {
		ln.Close()
		st.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	if cfg.GRPC.Addr != "" {
		if grpcLn, err = net.Listen("tcp", cfg.GRPC.Addr); err != nil {
			ln.Close()
			st.Close()
			return nil, fmt.Errorf("agent: grpc listen: %w", err)
		}
		grpcAddr = grpcLn.Addr().String()
	}
	closeListeners := func() {
		ln.Close()
		if grpcLn != nil {
			grpcLn.Close()
		}
	}
	var node *cluster.Node
	if cfg.Gossip.Addr != "" {
		creds := opts.Credentials
		if creds == nil {
			if creds, err = cluster.LoadCredentials(cfg.Gossip.TLS); err != nil {
				closeListeners()
				st.Close()
				return nil, fmt.Errorf("agent: %w", err)
			}
		}
		cc, err := cfg.clusterConfig(creds, ln.Addr().String(), grpcAddr)
		if err != nil {
			closeListeners()
			st.Close()
			return nil, fmt.Errorf("agent: %w", err)
		}
		cc.Local = opts.LocalGossip
		obs.clusterConfig(&cc)
		if node, err = cluster.Start(ctx, cc, st, opts.Faults, logger); err != nil {
			closeListeners()
			st.Close()
			return nil, fmt.Errorf("agent: %w", err)
		}
	}
	idle, _ := parseDuration(cfg.Subs.IdleTimeout)
	engine, err := subs.Open(ctx, subs.Config{
		Path: cfg.Subs.path(cfg.DB.Path), Window: cfg.Subs.Window, IdleTimeout: idle, Logger: logger,
		Beat: obs.wd.Register("subs.engine"),
	}, st)
	if err == nil {
		if err = obs.listen(cfg.Telemetry.PrometheusAddr, logger); err != nil {
			engine.Close()
		}
	}
	if err != nil {
		if node != nil {
			node.Close()
		}
		closeListeners()
		st.Close()
		return nil, fmt.Errorf("agent: %w", err)
	}
	obs.watch(st, node)
	// Each kind of source is given once: this cannot fail.
	_ = obs.metrics.AddSources(metrics.Sources{Subscriptions: func() (int, float64) { return engine.Count(), engine.Lag().Seconds() }})
	updates := subs.NewUpdates()
	hooks := store.Hooks{Rows: func(rows []store.RowChange) {
		updates.Publish(rows)
		engine.Publish(rows)
	}}
	var members api.Cluster
	if node != nil {
		members = clusterView{node}
		// Every local version goes out by broadcast as soon as it commits.
		hooks.Committed = node.Committed
	}
	st.SetHooks(hooks)
	streamTimeout, _ := parseDuration(cfg.API.StreamWriteTimeout)
	handler := api.NewServer(st, api.Options{
		MaxBodyBytes: cfg.API.MaxBodyBytes, BearerToken: cfg.API.BearerToken, AdminToken: cfg.API.AdminToken,
		SchemaPaths: cfg.DB.SchemaPaths, Logger: logger, Cluster: members, Updates: updates,
		Subscriptions: engine, StreamWriteTimeout: streamTimeout, Metrics: obs.apiHandler(),
	})
	a := &Agent{
		cfg:   cfg,
		log:   logger,
		store: st,
		node:  node,
		ln:    ln,
		subs:  engine,
		obs:   obs,
		server: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
	}
	if grpcLn != nil {
		a.grpc = newGRPCServer(grpcLn, grpcOpts, st, engine, cfg.region(), logger)
	}
	if forget, _ := cfg.Hosts.forgetAfter(); forget > 0 {
		a.reaper = reaper.New(st, reaper.Config{
			ForgetAfter: forget, Interval: min(max(forget/6, 100*time.Millisecond), 10*time.Second),
			Rank: rank(node), Beat: obs.wd.Register("hosts.reaper"), Logger: logger,
		})
		// Each kind of source is given once: this cannot fail.
		_ = obs.metrics.AddSources(metrics.Sources{Hosts: a.reaper.Stats})
	}
	a.server.RegisterOnShutdown(handler.CloseStreams)
	logger.Info("agent ready", "actor", st.Actor().String(), "db", cfg.DB.Path, "api", a.APIAddr(), "tables", strings.Join(st.Schema().TableNames(), ","))
	return a, nil
}

// APIAddr is the address the API listens on (useful with port 0).
func (a *Agent) APIAddr() string { return a.ln.Addr().String() }

// MetricsAddr is where GET /metrics is served: [telemetry]
// prometheus_addr's listener, or the API's.
func (a *Agent) MetricsAddr() string { return a.obs.addr(a.APIAddr()) }

// GRPCAddr is the address gRPC listens on, "" without [grpc] addr.
func (a *Agent) GRPCAddr() string {
	if a.grpc == nil {
		return ""
	}
	return a.grpc.ln.Addr().String()
}

// GRPCServices names the gRPC services the agent serves (besides health
// and reflection).
func (a *Agent) GRPCServices() []string {
	if a.grpc == nil {
		return nil
	}
	return a.grpc.services
}

// Store is the node's store.
func (a *Agent) Store() *store.Store { return a.store }

// Subscriptions is the agent's subscription engine.
func (a *Agent) Subscriptions() *subs.Engine { return a.subs }

// Node is the agent's cluster membership, nil when it runs alone.
func (a *Agent) Node() *cluster.Node { return a.node }

// Run serves until ctx ends, then shuts down: the listener closes,
// in-flight requests get up to api.shutdown_timeout to finish, and the
// database is closed.
func (a *Agent) Run(ctx context.Context) error {
	errc := make(chan error, 2)
	go func() { errc <- a.server.Serve(a.ln) }()
	if a.grpc != nil {
		go func() {
			if err := a.grpc.serve(); err != nil {
				errc <- err
			}
		}()
	}
	subsCtx, stopSubs := context.WithCancel(context.WithoutCancel(ctx))
	subsDone := make(chan error, 1)
	go func() { subsDone <- a.subs.Run(subsCtx) }()
	ckptDone := make(chan struct{})
	go func() {
		defer close(ckptDone)
		checkpointLoop(subsCtx, a.store, a.obs.wd.Register("store.checkpoint"), a.log)
	}()
	reaperDone := make(chan struct{})
	go func() {
		defer close(reaperDone)
		if a.reaper != nil {
			a.reaper.Run(subsCtx)
		}
	}()
	a.obs.start(ctx, a.log)
	defer a.obs.stop()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	timeout, _ := parseDuration(a.cfg.API.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	a.log.Info("agent stopping")
	metricsErr := a.obs.stopping(sctx)
	if a.grpc != nil {
		a.grpc.stop(sctx)
	}
	shutErr := errors.Join(a.server.Shutdown(sctx), metricsErr)
	if serveErr == nil {
		serveErr = <-errc
	}
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	var leaveErr error
	if a.node != nil {
		leaveErr = a.node.Close()
	}
	stopSubs()
	<-ckptDone
	<-reaperDone
	subsErr := errors.Join(<-subsDone, a.subs.Close())
	closeErr := errors.Join(leaveErr, subsErr, a.store.Close())
	a.log.Info("agent stopped")
	return errors.Join(serveErr, shutErr, closeErr)
}
