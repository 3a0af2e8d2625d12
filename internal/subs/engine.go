package subs

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/internal/store"
)

// Reader is what the engine needs of the node's database: read-only
// queries (which check the client's statement), the replicated schema, and
// a connection of its own that may write TEMP tables, where each batch's
// changed keys are joined against the subscriptions' queries.
type Reader interface {
	Query(ctx context.Context, st store.Statement) (*store.Rows, error)
	Schema() *store.Schema
	OpenScratch() (*sql.DB, error)
}

// Query is a subscription's statement and its parameters.
type Query struct {
	SQL   string
	Args  []crdt.Value
	Named map[string]crdt.Value
}

// Config configures the engine.
type Config struct {
	// Path is the SQLite file subscriptions are kept in, so they survive
	// a restart.
	Path string
	// Window is how many changes each subscription retains for resuming
	// (default 10000).
	Window int
	// IdleTimeout drops a subscription that has had no listener for that
	// long (default 1h).
	IdleTimeout time.Duration
	Logger      *slog.Logger
	// Beat, when set, is told the evaluation loop is alive (a watchdog).
	Beat Heartbeat
}

// Heartbeat is what a watchdog needs of a loop: a tick per iteration, and
// a tick when idle, every Due.
type Heartbeat interface {
	Tick()
	Due() <-chan time.Time
}

// noBeat is the Heartbeat when nothing watches the engine.
type noBeat struct{}

func (noBeat) Tick()                 {}
func (noBeat) Due() <-chan time.Time { return nil }

// Engine keeps every subscription of a node up to date: it learns which
// rows each commit changed (local or remote), re-runs each affected
// subscription's query for just those rows, diffs against the
// materialized result and records the changes. It never waits for a
// listener: listeners pull from each subscription's retained window.
type Engine struct {
	cfg   Config
	db    Reader
	store *persister
	log   *slog.Logger

	// The scratch connection and its prepared statements; used only
	// under evalMu.
	scratch *sql.DB
	conn    *sql.Conn
	stmts   map[string]*sql.Stmt
	nextSet int64
	// routeTables name the TEMP table of each routed column: its
	// subscriptions' parameters, in a column declared like the routed
	// one, so that comparing the two uses its index.
	routeTables map[string]string
	// inBatch is set while a batch's read transaction is open on conn:
	// what is written then is rolled back with it, so routes to remove
	// wait in staleRoutes until it ends. Both under evalMu.
	inBatch     bool
	staleRoutes []staleRoute

	// evalMu serializes evaluations: the batch loop and first evaluations.
	evalMu sync.Mutex

	mu      sync.Mutex
	subs    map[string]*Sub
	byKey   map[string]*Sub
	tables  map[string]int                     // table → subscriptions reading it
	pending map[string]map[string][]crdt.Value // table → packed key → key
	since   time.Time                          // when the oldest pending change arrived
	// evalSince is since of the batch being evaluated: its changes are
	// not evaluated yet either.
	evalSince time.Time
	wake      chan struct{}
	closed    bool

	evaluations atomic.Uint64
	changes     atomic.Uint64
}

// Stats are the engine's counters: query evaluations run and changes
// recorded.
func (e *Engine) Stats() (evaluations, changes uint64) {
	return e.evaluations.Load(), e.changes.Load()
}

// Open loads the persisted subscriptions. Call Run to keep them current.
func Open(ctx context.Context, cfg Config, db Reader) (*Engine, error) {
	if cfg.Window <= 0 {
		cfg.Window = 10000
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = time.Hour
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Beat == nil {
		cfg.Beat = noBeat{}
	}
	p, err := openPersister(ctx, cfg.Path)
	if err != nil {
		return nil, err
	}
	scratch, conn, err := openScratch(ctx, db)
	if err != nil {
		p.close()
		return nil, err
	}
	e := &Engine{
		cfg: cfg, db: db, store: p, log: cfg.Logger, scratch: scratch, conn: conn, stmts: map[string]*sql.Stmt{}, routeTables: map[string]string{},
		subs: map[string]*Sub{}, byKey: map[string]*Sub{}, tables: map[string]int{},
		pending: map[string]map[string][]crdt.Value{}, wake: make(chan struct{}, 1),
	}
	loaded, damaged, err := p.load(ctx, cfg.Window)
	if err != nil {
		e.closeScratch()
		p.close()
		return nil, err
	}
	for id, err := range damaged {
		e.log.Warn("dropping a damaged stored subscription", "id", id, "err", err)
		_ = p.remove(ctx, id)
	}
	schema := db.Schema()
	now := time.Now()
	for _, s := range loaded {
		plan, err := NewPlan(s.Query.SQL, schema)
		if err != nil {
			// The schema only grows, so this is a damaged record.
			e.log.Warn("dropping a stored subscription that no longer plans", "id", s.ID, "err", err)
			_ = p.remove(ctx, s.ID)
			continue
		}
		if err := s.restore(plan); err != nil {
			e.log.Warn("dropping a damaged stored subscription", "id", s.ID, "err", err)
			_ = p.remove(ctx, s.ID)
			continue
		}
		s.idleSince = now
		s.ready.Store(true)
		e.register(s)
	}
	return e, nil
}

// Close closes the subscription database. Call it after Run returns.
func (e *Engine) Close() error {
	e.mu.Lock()
	e.closed = true
	for _, s := range e.subs {
		s.end(errors.New("the agent is shutting down"))
	}
	e.mu.Unlock()
	e.evalMu.Lock()
	defer e.evalMu.Unlock()
	return errors.Join(e.closeScratch(), e.store.close())
}

// batchGap is the least time between the starts of two batches.
const batchGap = 2 * time.Millisecond

// keysTable holds the keys a batch evaluates, in sets: one per changed
// table, one per widened scope. Keys have at most maxKeyColumns columns.
const keysTable = "temp.__patina_keys"

func openScratch(ctx context.Context, db Reader) (*sql.DB, *sql.Conn, error) {
	scratch, err := db.OpenScratch()
	if err != nil {
		return nil, nil, fmt.Errorf("subscriptions: %w", err)
	}
	conn, err := scratch.Conn(ctx)
	if err == nil {
		cols := ""
		for i := 0; i < maxKeyColumns; i++ {
			cols += fmt.Sprintf(", k%d", i)
		}
		_, err = conn.ExecContext(ctx, fmt.Sprintf(`CREATE TEMP TABLE __patina_keys (set_id INTEGER NOT NULL%s);
CREATE INDEX temp.__patina_keys_set ON __patina_keys (set_id);`, cols))
	}
	if err != nil {
		if conn != nil {
			conn.Close()
		}
		scratch.Close()
		return nil, nil, fmt.Errorf("subscriptions: scratch connection: %w", err)
	}
	return scratch, conn, nil
}

func (e *Engine) closeScratch() error {
	for _, st := range e.stmts {
		st.Close()
	}
	e.stmts = map[string]*sql.Stmt{}
	return errors.Join(e.conn.Close(), e.scratch.Close())
}

// prepared returns a cached statement of the scratch connection.
func (e *Engine) prepared(ctx context.Context, q string) (*sql.Stmt, error) {
	if st := e.stmts[q]; st != nil {
		return st, nil
	}
	if len(e.stmts) >= 512 {
		for k, st := range e.stmts {
			st.Close()
			delete(e.stmts, k)
		}
	}
	st, err := e.conn.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	e.stmts[q] = st
	return st, nil
}

func (e *Engine) execPrepared(ctx context.Context, q string) error {
	st, err := e.prepared(ctx, q)
	if err == nil {
		_, err = st.ExecContext(ctx)
	}
	return err
}

// addRoutes records the parameter values of s's routes and returns the
// routes it can use: those whose parameter was given.
func (e *Engine) addRoutes(s *Sub) []Route {
	var usable []Route
	for _, r := range s.plan.Routes {
		var v crdt.Value
		var ok bool
		if r.Param > 0 {
			if ok = r.Param <= len(s.Query.Args); ok {
				v = s.Query.Args[r.Param-1]
			}
		} else {
			for _, name := range []string{r.ParamName, ":" + r.ParamName, "@" + r.ParamName, "$" + r.ParamName} {
				if v, ok = s.Query.Named[name]; ok {
					break
				}
			}
		}
		if !ok {
			continue
		}
		o := s.plan.Occurrences[r.Occ]
		tbl, err := e.routeTable(o.Table, r.Column)
		if err == nil {
			_, err = e.conn.ExecContext(context.Background(), "INSERT INTO "+tbl+" (sub, param) VALUES (?, ?)", s.ID, v.Go())
		}
		if err != nil {
			e.log.Warn("subscriptions: recording a route", "id", s.ID, "err", err)
			continue
		}
		usable = append(usable, r)
	}
	return usable
}

// routeTable returns the TEMP table of a routed column, creating it.
func (e *Engine) routeTable(table, column string) (string, error) {
	key := routeKey(table, column)
	if tbl := e.routeTables[key]; tbl != "" {
		return tbl, nil
	}
	var typ string
	if t := e.db.Schema().Tables[table]; t != nil {
		for _, c := range t.Columns {
			if c.Name == column {
				typ = c.Type // validated by the store: a plain type name
			}
		}
	}
	name := fmt.Sprintf("__patina_route_%d", len(e.routeTables)+1)
	if _, err := e.conn.ExecContext(context.Background(), fmt.Sprintf(
		"CREATE TEMP TABLE %[1]s (sub TEXT NOT NULL, param %[2]s); CREATE INDEX temp.%[1]s_param ON %[1]s (param); CREATE INDEX temp.%[1]s_sub ON %[1]s (sub)", name, typ)); err != nil {
		return "", err
	}
	e.routeTables[key] = "temp." + name
	return "temp." + name, nil
}

// routeKey names a routed column.
func routeKey(table, column string) string { return table + "\x00" + column }

// routeHits finds, for every routed column of a changed table, the
// subscriptions whose parameter equals that column in a changed row:
// compared by SQLite, with the column's affinity and collation.
func (e *Engine) routeHits(ctx context.Context, affected []*Sub, sets map[string]int64) (map[string]map[string]bool, error) {
	hits := map[string]map[string]bool{}
	for _, s := range affected {
		for _, r := range s.routes {
			o := s.plan.Occurrences[r.Occ]
			key := routeKey(o.Table, r.Column)
			if _, done := hits[key]; done {
				continue
			}
			set, changed := sets[o.Table]
			if !changed {
				continue
			}
			hit := map[string]bool{}
			hits[key] = hit
			conds := make([]string, len(o.PK))
			for j, c := range o.PK {
				conds[j] = fmt.Sprintf("t.%s = k.k%d", quoteIdent(c.Name), j)
			}
			q := fmt.Sprintf(`SELECT DISTINCT r.sub FROM %s AS k CROSS JOIN %s AS t CROSS JOIN %s AS r
WHERE k.set_id = ?1 AND %s AND t.%s = r.param`, keysTable, quoteIdent(o.Table), e.routeTables[key], strings.Join(conds, " AND "), quoteIdent(r.Column))
			st, err := e.prepared(ctx, q)
			if err != nil {
				return nil, fmt.Errorf("subscriptions: route: %w", err)
			}
			rows, err := st.QueryContext(ctx, set)
			if err != nil {
				return nil, fmt.Errorf("subscriptions: route: %w", err)
			}
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					rows.Close()
					return nil, fmt.Errorf("subscriptions: route: %w", err)
				}
				hit[id] = true
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return nil, fmt.Errorf("subscriptions: route: %w", err)
			}
		}
	}
	return hits, nil
}

// addKeys puts keys into a new set of the keys table and returns its id.
func (e *Engine) addKeys(ctx context.Context, keys map[string][]crdt.Value) (int64, error) {
	e.nextSet++
	set := e.nextSet
	for _, k := range keys {
		if len(k) > maxKeyColumns {
			continue // refused by NewPlan: no subscription reads such a table
		}
		cols, marks := "set_id", "?"
		args := []any{set}
		for i, v := range k {
			cols += fmt.Sprintf(", k%d", i)
			marks += ", ?"
			args = append(args, v.Go())
		}
		st, err := e.prepared(ctx, fmt.Sprintf("INSERT INTO %s (%s) VALUES (%s)", keysTable, cols, marks))
		if err != nil {
			return 0, fmt.Errorf("subscriptions: keys: %w", err)
		}
		if _, err := st.ExecContext(ctx, args...); err != nil {
			return 0, fmt.Errorf("subscriptions: keys: %w", err)
		}
	}
	return set, nil
}

// register makes s current. The caller holds evalMu (or nothing runs yet).
func (e *Engine) register(s *Sub) {
	s.routes = e.addRoutes(s)
	e.mu.Lock()
	defer e.mu.Unlock()
	e.subs[s.ID] = s
	e.byKey[subKey(s.plan, s.Query)] = s
	for _, t := range s.plan.tables() {
		e.tables[t]++
	}
}

// unregister drops s. The caller holds evalMu.
func (e *Engine) unregister(s *Sub) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.subs[s.ID] != s {
		return
	}
	for _, r := range s.routes {
		o := s.plan.Occurrences[r.Occ]
		if tbl := e.routeTables[routeKey(o.Table, r.Column)]; tbl != "" {
			e.staleRoutes = append(e.staleRoutes, staleRoute{table: tbl, sub: s.ID})
		}
	}
	if !e.inBatch {
		e.removeStaleRoutes()
	}
	delete(e.subs, s.ID)
	delete(e.byKey, subKey(s.plan, s.Query))
	for _, t := range s.plan.tables() {
		if e.tables[t]--; e.tables[t] == 0 {
			delete(e.tables, t)
		}
	}
}

// staleRoute is the routes of a subscription that has ended, to remove.
type staleRoute struct{ table, sub string }

// removeStaleRoutes deletes the routes of subscriptions that have ended.
// Callers hold evalMu, outside a batch.
func (e *Engine) removeStaleRoutes() {
	for _, r := range e.staleRoutes {
		if _, err := e.conn.ExecContext(context.Background(), "DELETE FROM "+r.table+" WHERE sub = ?", r.sub); err != nil {
			e.log.Warn("subscriptions: removing routes", "id", r.sub, "err", err)
		}
	}
	e.staleRoutes = e.staleRoutes[:0]
}

// Publish records the rows a commit changed. It is the store's hook:
// called after every commit, it only notes the keys and wakes the loop.
func (e *Engine) Publish(rows []store.RowChange) {
	e.mu.Lock()
	added := false
	for _, r := range rows {
		if e.tables[r.Table] == 0 {
			continue
		}
		m := e.pending[r.Table]
		if m == nil {
			m = map[string][]crdt.Value{}
			e.pending[r.Table] = m
		}
		m[string(crdt.PackPK(r.PK))] = r.PK
		added = true
	}
	if added && e.since.IsZero() {
		e.since = time.Now()
	}
	e.mu.Unlock()
	if added {
		select {
		case e.wake <- struct{}{}:
		default:
		}
	}
}

// Count is the number of subscriptions.
func (e *Engine) Count() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.subs)
}

// Lag is how long the oldest change not yet evaluated has waited.
func (e *Engine) Lag() time.Duration {
	e.mu.Lock()
	defer e.mu.Unlock()
	oldest := e.since
	if !e.evalSince.IsZero() && (oldest.IsZero() || e.evalSince.Before(oldest)) {
		oldest = e.evalSince
	}
	if oldest.IsZero() {
		return 0
	}
	return time.Since(oldest)
}

// Get returns a subscription by id, nil when unknown (or still being
// created).
func (e *Engine) Get(id string) *Sub {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.subs[id]; s != nil && s.ready.Load() {
		return s
	}
	return nil
}

// Find returns the subscription of an identical query, nil when none.
func (e *Engine) Find(q Query) (*Sub, error) {
	plan, err := NewPlan(q.SQL, e.db.Schema())
	if err != nil {
		return nil, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if s := e.byKey[subKey(plan, q)]; s != nil && s.ready.Load() {
		return s, nil
	}
	return nil, nil
}

// Subscribe returns the subscription of q, creating it (and evaluating it
// in full) when no identical query has one yet. created tells which.
func (e *Engine) Subscribe(ctx context.Context, q Query) (s *Sub, created bool, err error) {
	plan, err := NewPlan(q.SQL, e.db.Schema())
	if err != nil {
		return nil, false, err
	}
	key := subKey(plan, q)
	e.mu.Lock()
	if s := e.byKey[key]; s != nil && s.ready.Load() {
		e.mu.Unlock()
		return s, false, nil
	}
	e.mu.Unlock()

	// Creation happens whole under evalMu: past it, a subscription in
	// byKey has its first rows.
	e.evalMu.Lock()
	defer e.evalMu.Unlock()
	e.mu.Lock()
	if s := e.byKey[key]; s != nil { // created while we waited
		e.mu.Unlock()
		return s, false, nil
	}
	e.mu.Unlock()
	s = newSub(newID(), q, plan, e.cfg.Window)
	s.idleSince = time.Now()
	// Register before the first evaluation: a commit after this point is
	// either seen by it or evaluated in the next batch.
	e.register(s)
	changes, err := e.evaluateAll(ctx, s)
	if err == nil {
		err = e.store.save(ctx, []saved{{sub: s, changes: changes, header: true}}, e.cfg.Window)
	}
	if err != nil {
		e.unregister(s)
		return nil, false, err
	}
	s.publish()
	s.ready.Store(true)
	return s, true, nil
}

// Run keeps the subscriptions current until ctx ends: first it evaluates
// every loaded subscription in full (to catch up on what happened while
// the node was down), then each batch of changed rows as it comes.
func (e *Engine) Run(ctx context.Context) error {
	beat := e.cfg.Beat
	e.evalMu.Lock()
	var saves []saved
	for _, s := range e.list() {
		beat.Tick()
		changes, err := e.evaluateAll(ctx, s)
		if err != nil {
			if ctx.Err() != nil {
				e.evalMu.Unlock()
				return nil
			}
			e.fail(ctx, s, err)
			continue
		}
		if len(changes) > 0 {
			saves = append(saves, saved{sub: s, changes: changes})
		}
	}
	e.commit(ctx, saves)
	e.evalMu.Unlock()

	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	var last time.Time
	for {
		beat.Tick()
		select {
		case <-ctx.Done():
			return nil
		case <-beat.Due():
		case <-e.wake:
			// Under load, let a batch gather for batchGap since the last
			// one began: each batch has a fixed cost (a transaction, the
			// routing queries, a write of the subscription file), and
			// fewer, larger batches leave more CPU to everything else.
			// A change arriving after a quiet spell goes at once.
			if wait := batchGap - time.Since(last); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return nil
				case <-t.C:
				}
			}
			last = time.Now()
			e.evaluatePending(ctx)
		case now := <-tick.C:
			e.dropIdle(ctx, now)
		}
	}
}

func (e *Engine) list() []*Sub {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]*Sub, 0, len(e.subs))
	for _, s := range e.subs {
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// evaluatePending evaluates every subscription that reads a table with
// changed rows, for just those rows.
func (e *Engine) evaluatePending(ctx context.Context) {
	e.evalMu.Lock()
	defer e.evalMu.Unlock()
	e.mu.Lock()
	changed := e.pending
	e.pending = map[string]map[string][]crdt.Value{}
	e.evalSince, e.since = e.since, time.Time{}
	defer func() {
		e.mu.Lock()
		e.evalSince = time.Time{}
		e.mu.Unlock()
	}()
	var affected []*Sub
	for _, s := range e.subs {
		for _, t := range s.plan.tables() {
			if len(changed[t]) > 0 {
				affected = append(affected, s)
				break
			}
		}
	}
	e.mu.Unlock()
	if len(affected) == 0 {
		return
	}
	sort.Slice(affected, func(i, j int) bool { return affected[i].ID < affected[j].ID })
	// One read transaction: every subscription sees the same state.
	if err := e.execPrepared(ctx, "BEGIN"); err != nil {
		e.log.Error("subscriptions: begin", "err", err)
		e.requeue(changed)
		return
	}
	e.inBatch = true
	defer func() {
		_ = e.execPrepared(context.WithoutCancel(ctx), "ROLLBACK")
		e.inBatch = false
		e.removeStaleRoutes()
	}()
	// The batch's transaction is rolled back at its end, and the keys
	// with it: the table is empty now.
	e.nextSet = 0
	sets := map[string]int64{} // table → the set of its changed keys
	for t, m := range changed {
		set, err := e.addKeys(ctx, m)
		if err != nil {
			e.log.Error("subscriptions: changed keys", "err", err)
			e.requeue(changed)
			return
		}
		sets[t] = set
	}
	hits, err := e.routeHits(ctx, affected, sets)
	if err != nil {
		e.log.Error("subscriptions: routing", "err", err)
		e.requeue(changed)
		return
	}
	var saves []saved
	for _, s := range affected {
		var changes []Change
		var err error
		if s.plan.Full {
			changes, err = e.evaluateAll(ctx, s)
		} else {
			changes, err = e.evaluateKeys(ctx, s, changed, sets, hits)
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			e.fail(ctx, s, err)
			continue
		}
		if len(changes) > 0 {
			saves = append(saves, saved{sub: s, changes: changes})
		}
	}
	e.commit(ctx, saves)
}

// requeue puts back changed keys a batch could not evaluate, for the
// next one.
func (e *Engine) requeue(changed map[string]map[string][]crdt.Value) {
	e.mu.Lock()
	for t, m := range changed {
		if e.pending[t] == nil {
			e.pending[t] = map[string][]crdt.Value{}
		}
		for k, v := range m {
			e.pending[t][k] = v
		}
	}
	if e.since.IsZero() {
		e.since = time.Now()
	}
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// commit persists the batch, then wakes the listeners: a change is never
// shown before it would survive a restart.
func (e *Engine) commit(ctx context.Context, saves []saved) {
	if len(saves) == 0 {
		return
	}
	if err := e.store.save(ctx, saves, e.cfg.Window); err != nil {
		if ctx.Err() != nil {
			return
		}
		// The in-memory state moved on; what is on disk no longer
		// matches it, so these subscriptions cannot be resumed safely.
		e.log.Error("saving subscription changes failed; ending the affected subscriptions", "err", err)
		for _, sv := range saves {
			e.fail(ctx, sv.sub, fmt.Errorf("saving changes: %w", err))
		}
		return
	}
	for _, sv := range saves {
		e.changes.Add(uint64(len(sv.changes)))
		sv.sub.publish()
	}
}

// fail ends a subscription that can no longer be kept current.
func (e *Engine) fail(ctx context.Context, s *Sub, err error) {
	e.log.Warn("subscription ended", "id", s.ID, "err", err)
	e.unregister(s)
	s.end(fmt.Errorf("subscription %s ended: %w", s.ID, err))
	if rerr := e.store.remove(ctx, s.ID); rerr != nil {
		e.log.Warn("removing an ended subscription", "id", s.ID, "err", rerr)
	}
}

// dropIdle removes subscriptions that have had no listener for the idle
// timeout.
func (e *Engine) dropIdle(ctx context.Context, now time.Time) {
	for _, s := range e.list() {
		s.mu.Lock()
		idle := s.listeners == 0 && now.Sub(s.idleSince) > e.cfg.IdleTimeout
		s.mu.Unlock()
		if idle {
			e.evalMu.Lock()
			s.mu.Lock()
			idle = s.listeners == 0 // a listener may have come meanwhile
			s.mu.Unlock()
			if !idle {
				e.evalMu.Unlock()
				continue
			}
			e.unregister(s)
			s.end(errors.New("subscription dropped after being idle"))
			if err := e.store.remove(ctx, s.ID); err != nil {
				e.log.Warn("removing an idle subscription", "id", s.ID, "err", err)
			}
			e.evalMu.Unlock()
		}
	}
}

// Attach counts a listener of s; call the returned func when it leaves.
func (e *Engine) Attach(s *Sub) (detach func()) {
	s.attach()
	return func() { s.detach(time.Now()) }
}

// evaluateAll re-runs the whole query and diffs it against everything.
func (e *Engine) evaluateAll(ctx context.Context, s *Sub) ([]Change, error) {
	e.evaluations.Add(1)
	fresh := map[string]freshRow{}
	cols, err := e.run(ctx, s, fresh)
	if err != nil {
		return nil, err
	}
	if s.columns == nil {
		s.columns = cols
	} else if !equalStrings(s.columns, cols) {
		return nil, columnsChanged(s.columns, cols)
	}
	s.mu.Lock()
	scope := make(map[string]struct{}, len(s.rows))
	for ident := range s.rows {
		scope[ident] = struct{}{}
	}
	s.mu.Unlock()
	return s.merge(scope, fresh)
}

// evaluateKeys re-runs the query for the rows whose keys changed.
//
// With inner joins only, a result row can change only if one of the table
// rows it is made of changed, so the rows holding a changed key (before
// and after) are the whole scope. A LEFT JOIN adds rows made of one side
// and NULLs, which appear when the other side's last match goes away and
// vanish when a match arrives: they hold none of the changed keys. Their
// other keys, though, are on the rows that held a changed key, before or
// after; so the scope is widened once to every key on those rows, and
// diffed over that.
//
// A route lets an occurrence be skipped without a query: when no changed
// row of its table matches the subscription's parameter and no current
// row holds a changed key, the change cannot touch the result.
func (e *Engine) evaluateKeys(ctx context.Context, s *Sub, changed map[string]map[string][]crdt.Value, sets map[string]int64, hits map[string]map[string]bool) ([]Change, error) {
	fresh := map[string]freshRow{}
	scope := map[string]struct{}{}
	for i, o := range s.plan.Occurrences {
		if len(changed[o.Table]) == 0 {
			continue
		}
		before := len(scope)
		s.mu.Lock()
		s.oldRowsWith(i, changed[o.Table], scope)
		s.mu.Unlock()
		if len(scope) == before && s.routedAway(i, hits) {
			continue
		}
		e.evaluations.Add(1)
		if err := e.runScope(ctx, s, i, sets[o.Table], fresh); err != nil {
			return nil, err
		}
	}
	if s.plan.Outer && (len(fresh) > 0 || len(scope) > 0) {
		wide := make([]map[string][]crdt.Value, len(s.plan.Occurrences))
		for i, o := range s.plan.Occurrences {
			wide[i] = map[string][]crdt.Value{}
			for k, v := range changed[o.Table] {
				wide[i][k] = v
			}
		}
		added := false
		addKeys := func(keys [][]byte) {
			for i, k := range keys {
				if k != nil {
					if _, ok := wide[i][string(k)]; !ok {
						v, _ := crdt.UnpackValues(k)
						wide[i][string(k)] = v
						added = true
					}
				}
			}
		}
		for _, f := range fresh {
			addKeys(f.keys)
		}
		s.mu.Lock()
		for ident := range scope {
			if r := s.rows[ident]; r != nil {
				addKeys(r.keys)
			}
		}
		s.mu.Unlock()
		if !added {
			// The rows hold no other keys: the widened scope is the one
			// just evaluated (an occurrence routed away contributed no
			// rows either way).
			return s.merge(scope, fresh)
		}
		fresh, scope = map[string]freshRow{}, map[string]struct{}{}
		for i := range s.plan.Occurrences {
			if len(wide[i]) == 0 {
				continue
			}
			set, err := e.addKeys(ctx, wide[i])
			if err != nil {
				return nil, err
			}
			if err := e.runScope(ctx, s, i, set, fresh); err != nil {
				return nil, err
			}
			s.mu.Lock()
			s.oldRowsWith(i, wide[i], scope)
			s.mu.Unlock()
		}
	}
	return s.merge(scope, fresh)
}

// routedAway reports whether a route shows that no changed row of
// occurrence occ's table can be in s's result.
func (s *Sub) routedAway(occ int, hits map[string]map[string]bool) bool {
	for _, r := range s.routes {
		if r.Occ != occ {
			continue
		}
		hit, checked := hits[routeKey(s.plan.Occurrences[occ].Table, r.Column)]
		if checked && !hit[s.ID] {
			return true
		}
	}
	return false
}

// run executes the subscription's whole query through the store, which
// checks the client's statement, and adds its rows to fresh.
func (e *Engine) run(ctx context.Context, s *Sub, fresh map[string]freshRow) ([]string, error) {
	st := store.Statement{SQL: s.plan.SQL}
	for _, a := range s.Query.Args {
		st.Args = append(st.Args, a.Go())
	}
	if len(s.Query.Named) > 0 {
		st.Named = make(map[string]any, len(s.Query.Named))
		for k, v := range s.Query.Named {
			st.Named[k] = v.Go()
		}
	}
	rows, err := e.db.Query(ctx, st)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols := rows.Columns()
	if err := s.plan.collect(cols, rows.Next, rows.Values, fresh); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return append([]string(nil), cols[s.plan.KeyColumns:]...), nil
}

// columnsChanged ends a subscription whose result's columns are no
// longer those it announced.
func columnsChanged(was, now []string) error {
	return fmt.Errorf("the query's columns changed from %v to %v (a schema change under SELECT *?): subscribe again", was, now)
}

// runScope runs the query for the rows whose occurrence occ has a key of
// the given set, on the scratch connection, inside the batch's
// transaction.
func (e *Engine) runScope(ctx context.Context, s *Sub, occ int, set int64, fresh map[string]freshRow) error {
	st, err := e.prepared(ctx, s.plan.scopeSQL(occ))
	if err != nil {
		return err
	}
	args := make([]any, 0, len(s.Query.Args)+len(s.Query.Named)+1)
	for _, a := range s.Query.Args {
		args = append(args, a.Go())
	}
	for k, v := range s.Query.Named {
		args = append(args, sql.Named(strings.TrimLeft(k, ":@$"), v.Go()))
	}
	args = append(args, sql.Named(setParam, set))
	rows, err := st.QueryContext(ctx, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return err
	}
	// The statement is prepared again after a schema change, and a
	// SELECT * then returns the columns added since. (Only the count is
	// compared: this scoped form of the query can name a result column
	// differently, and the schema only grows.)
	if n := len(cols) - s.plan.KeyColumns; s.columns != nil && n != len(s.columns) {
		return columnsChanged(s.columns, cols[s.plan.KeyColumns:])
	}
	raw := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range raw {
		ptrs[i] = &raw[i]
	}
	values := func() ([]any, error) { return raw, rows.Scan(ptrs...) }
	if err := s.plan.collect(cols, rows.Next, values, fresh); err != nil {
		return err
	}
	return rows.Err()
}

// collect reads result rows into fresh, keyed by identity.
func (p *Plan) collect(cols []string, next func() bool, values func() ([]any, error), fresh map[string]freshRow) error {
	nk := p.KeyColumns
	if len(cols) <= nk {
		return errors.New("the query returns no columns")
	}
	vals := make([]crdt.Value, len(cols))
	for next() {
		raw, err := values()
		if err != nil {
			return err
		}
		for i, r := range raw {
			if vals[i], err = crdt.FromGo(r); err != nil {
				return fmt.Errorf("column %s: %w", cols[i], err)
			}
		}
		keys := make([][]byte, len(p.Occurrences))
		for i, o := range p.Occurrences {
			kv := vals[o.First : o.First+len(o.PK)]
			if kv[0].Kind != crdt.Null {
				keys[i] = crdt.PackPK(kv)
			}
		}
		ident := string(crdt.PackValues(vals[:nk]))
		pos := len(fresh)
		if f, ok := fresh[ident]; ok {
			pos = f.pos
		}
		fresh[ident] = freshRow{cells: crdt.PackValues(vals[nk:]), keys: keys, pos: pos}
	}
	return nil
}

// setParam names the parameter that picks a set of the keys table. It
// appears after the client's query in the text, so the client's
// positional parameters keep their numbers.
const setParam = "patina_key_set"

// maxKeyColumns bounds the key width of a table a subscription reads.
const maxKeyColumns = 8

// scopeSQL is the query restricted to rows whose occurrence occ has a key
// of one set of the keys table. The keys drive the join (CROSS JOIN keeps
// them the outer loop), so each key is an index lookup whatever the
// query's own filters are; ORDER BY is dropped, as a scope needs no order.
func (p *Plan) scopeSQL(occ int) string {
	o := p.Occurrences[occ]
	conds := make([]string, len(o.PK))
	for j := range o.PK {
		conds[j] = fmt.Sprintf("__s.%s = __k.k%d", keyColumnName(occ, j), j)
	}
	return fmt.Sprintf("SELECT __s.* FROM %s AS __k CROSS JOIN (\n%s\n) AS __s WHERE __k.set_id = :%s AND %s",
		keysTable, p.unordered, setParam, strings.Join(conds, " AND "))
}

// tables lists the distinct tables the query reads.
func (p *Plan) tables() []string { return p.distinct }

// subKey identifies identical subscriptions: the normalized SQL and the
// parameters.
func subKey(p *Plan, q Query) string {
	var b strings.Builder
	b.WriteString(p.Key)
	b.WriteByte(0)
	if len(q.Args) > 0 {
		b.Write(crdt.PackPK(q.Args))
	}
	names := make([]string, 0, len(q.Named))
	for n := range q.Named {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		b.WriteByte(0)
		b.WriteString(strings.TrimLeft(n, ":@$"))
		b.WriteByte(0)
		b.Write(crdt.PackPK([]crdt.Value{q.Named[n]}))
	}
	return b.String()
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
