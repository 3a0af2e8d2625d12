package host

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/api"
	"github.com/patina-db/patina/regional"
)

// Backoff between failed attempts to reach the agents.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// RepublishStats describe one full re-publish.
type RepublishStats struct {
	// Machines is how many records were sent (tombstones included).
	Machines int `json:"machines"`
	// Transactions is how many transactions it took, the prune included.
	Transactions int `json:"transactions"`
	// Versions is how many of them changed anything in the regional
	// tables; 0 when they already held exactly these records.
	Versions int `json:"versions"`
	// Heartbeat tells whether the re-publish was recorded in the hosts
	// table (a transaction and a version of its own, not counted above;
	// false when the region's schema has no hosts table).
	Heartbeat bool `json:"heartbeat"`
}

// publisher sends records to the local regional agent(s). Changes queue
// by machine id (the latest record wins) and go out in the background,
// retried with backoff while no agent answers; the API never waits for
// it. Every republish interval it sends every record and prunes the rest
// of the host's rows.
type publisher struct {
	agents   []*client.Client
	urls     []string
	host     string
	region   string
	batch    int
	interval time.Duration
	timeout  time.Duration
	log      *slog.Logger
	// snapshot returns every record to send (tombstones included) and
	// the ids the prune must keep.
	snapshot func() (records []regional.Machine, keep []string)
	// published is told which records the agent has taken.
	published func([]regional.Machine)

	// sendMu makes sends one at a time, so a record never lands after a
	// newer one of the same machine.
	sendMu    sync.Mutex
	preferred int // the agent that last answered; guarded by sendMu
	// noHostsTable: the agent said so once (logged once); by sendMu.
	noHostsTable bool

	mu      sync.Mutex
	pending map[string]regional.Machine
	wake    chan struct{}
}

func newPublisher(cfg Config, log *slog.Logger) (*publisher, error) {
	p := &publisher{
		urls: cfg.Agent.API, host: cfg.Host.Name, region: cfg.Host.Region, batch: cfg.Agent.BatchSize, interval: cfg.republishInterval(),
		timeout: cfg.agentTimeout(), log: log, pending: map[string]regional.Machine{}, wake: make(chan struct{}, 1),
	}
	for _, u := range cfg.Agent.API {
		c, err := client.New(u, cfg.Agent.Token)
		if err != nil {
			return nil, fmt.Errorf("host: agent.api: %w", err)
		}
		p.agents = append(p.agents, c)
	}
	return p, nil
}

// enqueue queues a record for publishing, replacing any older one of the
// same machine that has not gone out yet.
func (p *publisher) enqueue(m regional.Machine) {
	p.mu.Lock()
	p.pending[m.ID] = m
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// queued is how many records wait to be published.
func (p *publisher) queued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

// run publishes until ctx ends: everything at once, then queued changes
// as they come and everything again every interval.
func (p *publisher) run(ctx context.Context) {
	tick := time.NewTicker(p.interval)
	defer tick.Stop()
	needFull := true
	failures := 0
	backoff := time.Duration(0)
	for {
		var err error
		if needFull {
			if _, err = p.republish(ctx); err == nil {
				needFull = false
			}
		}
		// Queued changes go out even while full re-publishes fail: one
		// that an agent refuses must not hold back every later change.
		if ferr := p.flush(ctx); err == nil {
			err = ferr
		}
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			backoff = min(max(2*backoff, minBackoff), maxBackoff)
			if failures == 1 || failures%20 == 0 {
				p.log.Warn("host: publish failed; retrying", "attempts", failures, "queued", p.queued(), "backoff", backoff, "err", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			case <-tick.C:
				needFull = true
			}
			continue
		}
		if failures > 0 {
			p.log.Info("host: publishing again", "after_attempts", failures)
		}
		failures, backoff = 0, 0
		select {
		case <-ctx.Done():
			return
		case <-p.wake:
		case <-tick.C:
			needFull = true
		}
	}
}

// flush sends the queued records. What an agent did not take goes back
// to the queue unless a newer record of the same machine is there.
func (p *publisher) flush(ctx context.Context) error {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	p.mu.Lock()
	queued := make([]regional.Machine, 0, len(p.pending))
	for _, m := range p.pending {
		queued = append(queued, m)
	}
	clear(p.pending)
	p.mu.Unlock()
	slices.SortFunc(queued, func(a, b regional.Machine) int { return strings.Compare(a.ID, b.ID) })
	start := 0
	for _, chunk := range batches(queued, p.batch) {
		if _, err := p.transact(ctx, publishStatements(chunk)); err != nil {
			p.requeue(queued[start:])
			return err
		}
		start += len(chunk)
		p.published(chunk)
	}
	return nil
}

func (p *publisher) requeue(records []regional.Machine) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range records {
		if _, newer := p.pending[m.ID]; !newer {
			p.pending[m.ID] = m
		}
	}
}

// republish sends every record in transactions of at most batch records,
// then prunes the host's rows of machines it does not have.
func (p *publisher) republish(ctx context.Context) (RepublishStats, error) {
	p.sendMu.Lock()
	defer p.sendMu.Unlock()
	// The first configured agent is preferred: return to it once it is back.
	p.preferred = 0
	records, keep := p.snapshot()
	slices.SortFunc(records, func(a, b regional.Machine) int { return strings.Compare(a.ID, b.ID) })
	var stats RepublishStats
	// The heartbeat goes first: an agent about to forget this host (its
	// row stood still too long) checks the row in the transaction that
	// deletes, so the heartbeat must reach it before the records do, or
	// it could delete records it had just received.
	if _, err := p.transact(ctx, []api.Statement{regional.Heartbeat(p.host, p.region, time.Now(), p.interval)}); err != nil {
		if !strings.Contains(err.Error(), "no such table: hosts") {
			return stats, fmt.Errorf("republish: heartbeat: %w", err)
		}
		if !p.noHostsTable {
			p.noHostsTable = true
			p.log.Warn("host: the region's schema has no hosts table: re-publishes are not recorded, and agents cannot tell when this host is gone")
		}
	} else {
		stats.Heartbeat = true
	}
	for _, chunk := range batches(records, p.batch) {
		res, err := p.transact(ctx, publishStatements(chunk))
		if err != nil {
			return stats, fmt.Errorf("republish: %w", err)
		}
		stats.Machines += len(chunk)
		stats.Transactions++
		if res.Version != nil {
			stats.Versions++
		}
		p.published(chunk)
	}
	res, err := p.transact(ctx, regional.Prune(p.host, keep))
	if err != nil {
		return stats, fmt.Errorf("republish: prune: %w", err)
	}
	stats.Transactions++
	if res.Version != nil {
		stats.Versions++
	}
	p.log.Debug("host: republished", "machines", stats.Machines, "transactions", stats.Transactions, "versions", stats.Versions)
	return stats, nil
}

// maxBatchBytes bounds the parameters of one publish transaction, well
// under an agent's request limit (8 MiB by default), whatever records
// hold: a record alone is far smaller (see the bounds in checks.go).
const maxBatchBytes = 1 << 20

// batches cuts records into transactions of at most n records and about
// maxBatchBytes of parameters (at least one record each).
func batches(records []regional.Machine, n int) [][]regional.Machine {
	var out [][]regional.Machine
	start, size := 0, 0
	for i := range records {
		w := recordBytes(&records[i])
		if i > start && (i-start >= n || size+w > maxBatchBytes) {
			out = append(out, records[start:i])
			start, size = i, 0
		}
		size += w
	}
	if start < len(records) {
		out = append(out, records[start:])
	}
	return out
}

// recordBytes estimates what a record's publish statements weigh in a
// request: their texts and parameters.
func recordBytes(m *regional.Machine) int {
	n := 800 + len(m.ID) + len(m.App) + len(m.Region) + len(m.Host) + len(m.Address) + len(m.State) + len(m.Image)
	for _, c := range m.Checks {
		n += 300 + len(m.ID) + 2*len(c.Name) + len(c.Status) + len(c.Output)
	}
	return n
}

func publishStatements(records []regional.Machine) []api.Statement {
	var stmts []api.Statement
	for i := range records {
		stmts = append(stmts, regional.Publish(&records[i])...)
	}
	return stmts
}

// transact runs stmts in one transaction on the agent that last
// answered, failing over to the others in their configured order.
// Called with sendMu held.
func (p *publisher) transact(ctx context.Context, stmts []api.Statement) (*api.ExecResponse, error) {
	order := []int{p.preferred}
	for i := range p.agents {
		if i != p.preferred {
			order = append(order, i)
		}
	}
	var errs []error
	for _, i := range order {
		tctx, cancel := context.WithTimeout(ctx, p.timeout)
		res, err := p.agents[i].Transact(tctx, stmts...)
		cancel()
		if err == nil {
			if i != p.preferred {
				p.log.Info("host: publishing through another agent", "agent", p.urls[i])
			}
			p.preferred = i
			return res, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", p.urls[i], err))
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}
