// Package agent runs one patina node: it opens the store, applies the
// configured schema and serves the HTTP API until its context ends, then
// lets in-flight requests finish and closes the database cleanly.
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
	"github.com/patina-db/patina/internal/store"
)

// Agent is a running node.
type Agent struct {
	cfg    Config
	log    *slog.Logger
	store  *store.Store
	ln     net.Listener
	server *http.Server
}

// New opens the store, applies the schema and binds the API listener. The
// API serves once Run is called.
func New(ctx context.Context, cfg Config, logOut io.Writer) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	logger, err := NewLogger(cfg.Log, logOut)
	if err != nil {
		return nil, err
	}
	st, err := store.Open(ctx, store.Config{Path: cfg.DB.Path, Readers: cfg.DB.Readers})
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
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
	handler := api.NewServer(st, api.Options{MaxBodyBytes: cfg.API.MaxBodyBytes, BearerToken: cfg.API.BearerToken, Logger: logger})
	a := &Agent{
		cfg:   cfg,
		log:   logger,
		store: st,
		ln:    ln,
		server: &http.Server{
			Handler:           handler,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
		},
	}
	logger.Info("agent ready", "actor", st.Actor().String(), "db", cfg.DB.Path, "api", a.APIAddr(), "tables", strings.Join(st.Schema().TableNames(), ","))
	return a, nil
}

// APIAddr is the address the API listens on (useful with port 0).
func (a *Agent) APIAddr() string { return a.ln.Addr().String() }

// Store is the node's store.
func (a *Agent) Store() *store.Store { return a.store }

// Run serves until ctx ends, then shuts down: the listener closes,
// in-flight requests get up to api.shutdown_timeout to finish, and the
// database is closed.
func (a *Agent) Run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- a.server.Serve(a.ln) }()
	var serveErr error
	select {
	case <-ctx.Done():
	case serveErr = <-errc:
	}
	timeout, _ := parseDuration(a.cfg.API.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	a.log.Info("agent stopping")
	shutErr := a.server.Shutdown(sctx)
	if serveErr == nil {
		serveErr = <-errc
	}
	if errors.Is(serveErr, http.ErrServerClosed) {
		serveErr = nil
	}
	closeErr := a.store.Close()
	a.log.Info("agent stopped")
	return errors.Join(serveErr, shutErr, closeErr)
}
