package bridge

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/api"
)

// globalAgents sends the bridge's requests to the global cluster: to the
// agent that last answered, else to the others in the configured order
// (nearest first).
type globalAgents struct {
	urls    []string
	clients []*client.Client
	log     *slog.Logger

	// tries counts the requests started, whatever came of them.
	tries atomic.Uint64

	mu      sync.Mutex
	current int
}

func newGlobalAgents(cfg GlobalConfig, log *slog.Logger) (*globalAgents, error) {
	hc := &http.Client{Timeout: cfg.Timeout}
	g := &globalAgents{urls: cfg.Agents, log: log}
	for _, u := range cfg.Agents {
		c, err := client.NewWithHTTP(u, cfg.Token, hc)
		if err != nil {
			return nil, fmt.Errorf("global.agents: %w", err)
		}
		g.clients = append(g.clients, c)
	}
	return g, nil
}

// Current is the agent requests go to first.
func (g *globalAgents) Current() string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.urls[g.current]
}

// preferNearest makes the next request try the first agent again: a
// nearer agent that came back is used again after the next reconcile.
func (g *globalAgents) preferNearest() {
	g.mu.Lock()
	g.current = 0
	g.mu.Unlock()
}

// do runs fn against each agent in turn until one succeeds. An agent's
// refusal of the request itself (a 4xx: bad SQL, a wrong token) would be
// the same anywhere, so it is returned at once.
func (g *globalAgents) do(ctx context.Context, what string, fn func(*client.Client) error) error {
	g.mu.Lock()
	start := g.current
	g.mu.Unlock()
	var errs []error
	for i := range g.clients {
		idx := (start + i) % len(g.clients)
		g.tries.Add(1)
		err := fn(g.clients[idx])
		if err == nil {
			g.mu.Lock()
			if g.current != idx {
				g.log.Info("global agent in use", "agent", g.urls[idx], "previous", g.urls[g.current])
				g.current = idx
			}
			g.mu.Unlock()
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var apiErr *client.Error
		if errors.As(err, &apiErr) && apiErr.Status >= 400 && apiErr.Status < 500 {
			return fmt.Errorf("%s on %s: %w", what, g.urls[idx], err)
		}
		g.log.Warn("global agent failed", "agent", g.urls[idx], "op", what, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", g.urls[idx], err))
	}
	return fmt.Errorf("%s: every global agent failed: %w", what, errors.Join(errs...))
}

// Transact runs statements in one transaction on the first agent that
// answers.
func (g *globalAgents) Transact(ctx context.Context, what string, stmts []client.Statement) (*api.ExecResponse, error) {
	var res *api.ExecResponse
	err := g.do(ctx, what, func(c *client.Client) error {
		r, err := c.Transact(ctx, stmts...)
		res = r
		return err
	})
	return res, err
}

// ReadRegion reads the region's app_regions rows from the first agent
// that answers.
func (g *globalAgents) ReadRegion(ctx context.Context, region string) (map[string]Counts, error) {
	var out map[string]Counts
	err := g.do(ctx, "read app_regions", func(c *client.Client) error {
		rows, err := c.Query(ctx, client.Statement{Query: readRegion, Params: []any{region}})
		if err != nil {
			return err
		}
		defer rows.Close()
		got := map[string]Counts{}
		for rows.Next() {
			cells := rows.Row()
			app, ok1 := cells[0].(string)
			m, ok2 := cells[1].(int64)
			h, ok3 := cells[2].(int64)
			if !ok1 || !ok2 || !ok3 {
				// A row no bridge writes: forget nothing, correct it.
				if ok1 {
					got[app] = Counts{Machines: -1, Healthy: -1}
				}
				continue
			}
			got[app] = Counts{Machines: m, Healthy: h}
		}
		if err := rows.Err(); err != nil {
			return err
		}
		out = got
		return nil
	})
	return out, err
}
