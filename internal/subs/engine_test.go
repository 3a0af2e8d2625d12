package subs

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"pgregory.net/rapid"

	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/schemas"
)

const joinQuery = `SELECT m.id, m.state, c.status FROM machines m LEFT JOIN machine_checks c ON c.machine_id = m.id WHERE m.app = ?`

type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

func openStore(t tb, dir string) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Path: filepath.Join(dir, "node.db")})
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	if err := st.ApplySchemaSQL(context.Background(), schemas.Regional()); err != nil {
		t.Fatalf("schema: %v", err)
	}
	return st
}

func openEngine(t tb, dir string, st *store.Store, window int) *Engine {
	t.Helper()
	e, err := Open(context.Background(), Config{Path: filepath.Join(dir, "subs.db"), Window: window}, st)
	if err != nil {
		t.Fatalf("open engine: %v", err)
	}
	st.SetHooks(store.Hooks{Rows: e.Publish})
	return e
}

// storeAndEngine opens a regional store and an engine over it in a
// fresh directory, both closed when the test ends.
func storeAndEngine(t *testing.T, window int) (*store.Store, *Engine) {
	t.Helper()
	dir := t.TempDir()
	st := openStore(t, dir)
	t.Cleanup(func() { st.Close() })
	e := openEngine(t, dir, st, window)
	t.Cleanup(func() { e.Close() })
	return st, e
}

func write(t tb, st *store.Store, q string, args ...any) {
	t.Helper()
	if _, err := st.Transact(context.Background(), []store.Statement{{SQL: q, Args: args}}); err != nil {
		t.Fatalf("%s %v: %v", q, args, err)
	}
}

// follower replays a subscription's events the way a client would.
type follower struct {
	rows map[int64]string // rowid → rendered cells
	last uint64
}

func follow(t tb, s *Sub) *follower {
	t.Helper()
	rows, last, err := s.Snapshot()
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	f := &follower{rows: map[int64]string{}, last: last}
	for _, r := range rows {
		f.rows[r.RowID] = render(r.Cells)
	}
	return f
}

// catchUp applies every change after the follower's position, checking
// that ids are contiguous and that each kind makes sense.
func (f *follower) catchUp(t tb, s *Sub) {
	t.Helper()
	for {
		changes, _, err := s.ChangesAfter(f.last, 100)
		if err != nil {
			t.Fatalf("changes after %d: %v", f.last, err)
		}
		if len(changes) == 0 {
			return
		}
		for _, c := range changes {
			if c.ID != f.last+1 {
				t.Fatalf("change id %d after %d", c.ID, f.last)
			}
			f.last = c.ID
			_, exists := f.rows[c.RowID]
			switch c.Kind {
			case Insert:
				if exists {
					t.Fatalf("insert of existing rowid %d", c.RowID)
				}
				f.rows[c.RowID] = render(c.Cells)
			case Update:
				if !exists {
					t.Fatalf("update of unknown rowid %d", c.RowID)
				}
				if f.rows[c.RowID] == render(c.Cells) {
					t.Fatalf("update of rowid %d changes nothing", c.RowID)
				}
				f.rows[c.RowID] = render(c.Cells)
			case Delete:
				if !exists {
					t.Fatalf("delete of unknown rowid %d", c.RowID)
				}
				delete(f.rows, c.RowID)
			}
		}
	}
}

func (f *follower) result() []string {
	var out []string
	for _, r := range f.rows {
		out = append(out, r)
	}
	sort.Strings(out)
	return out
}

func render(cells []crdt.Value) string {
	parts := make([]string, len(cells))
	for i, c := range cells {
		parts[i] = c.Quote()
	}
	return strings.Join(parts, "|")
}

// queryResult runs the client's query directly: what the subscription
// must hold.
func queryResult(t tb, st *store.Store, q string, args ...any) []string {
	t.Helper()
	rows, err := st.Query(context.Background(), store.Statement{SQL: q, Args: args})
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		vals, err := rows.Values()
		if err != nil {
			t.Fatalf("query: %v", err)
		}
		cells := make([]crdt.Value, len(vals))
		for i, v := range vals {
			cells[i], _ = crdt.FromGo(v)
		}
		out = append(out, render(cells))
	}
	sort.Strings(out)
	return out
}

func subscribe(t tb, e *Engine, q string, args ...any) *Sub {
	t.Helper()
	query := Query{SQL: q}
	for _, a := range args {
		v, err := crdt.FromGo(a)
		if err != nil {
			t.Fatalf("arg: %v", err)
		}
		query.Args = append(query.Args, v)
	}
	s, _, err := e.Subscribe(context.Background(), query)
	if err != nil {
		t.Fatalf("subscribe %q: %v", q, err)
	}
	return s
}

// TestSubscriptionMatchesQuery drives random writes to both tables of the
// join and checks after every batch that replaying the subscription's
// events from its first snapshot gives exactly the query's result.
func TestSubscriptionMatchesQuery(t *testing.T) {
	queries := []struct {
		sql  string
		args []any
	}{
		{joinQuery, []any{"a"}},
		{`SELECT c.machine_id, c.name, c.status, m.app FROM machine_checks c JOIN machines m ON m.id = c.machine_id WHERE c.status != 'passing'`, nil},
		{`SELECT id, app, state FROM machines ORDER BY id`, nil},
		{`SELECT a.id, b.id FROM machines a LEFT JOIN machines b ON b.app = a.app AND b.id > a.id LEFT JOIN machine_checks c ON c.machine_id = b.id WHERE a.state = 'started'`, nil},
		{`SELECT c.machine_id, c.status FROM machine_checks c JOIN machines m ON m.id = c.machine_id WHERE (m.app = ?2 AND c.name = ?1) AND m.state = 'started'`, []any{"http", "b"}},
		// A WHERE clause true on the rows a LEFT JOIN makes of NULLs.
		{`SELECT m.id FROM machines m LEFT JOIN machine_checks c ON c.machine_id = m.id WHERE c.machine_id IS NULL`, nil},
		// Leading space, characters of several bytes, a parameter in
		// ORDER BY, a trailing semicolon and comment.
		{"\n  SELECT id, state FROM machines WHERE app != 'héé' AND state = ? ORDER BY id, ? ; -- the end", []any{"started", int64(1)}},
	}
	rapid.Check(t, func(rt *rapid.T) {
		dir := t.TempDir()
		st := openStore(rt, dir)
		defer st.Close()
		e := openEngine(rt, dir, st, 1<<20)
		defer e.Close()
		ids := []string{"m1", "m2", "m3", "m4"}
		var subs []*Sub
		var followers []*follower
		for _, q := range queries {
			s := subscribe(rt, e, q.sql, q.args...)
			subs = append(subs, s)
			followers = append(followers, follow(rt, s))
		}
		batches := rapid.IntRange(1, 12).Draw(rt, "batches")
		for b := 0; b < batches; b++ {
			ops := rapid.IntRange(1, 5).Draw(rt, "ops")
			for i := 0; i < ops; i++ {
				id := rapid.SampledFrom(ids).Draw(rt, "id")
				switch rapid.IntRange(0, 4).Draw(rt, "op") {
				case 0:
					write(rt, st, `INSERT INTO machines (id, app, state) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET app = excluded.app, state = excluded.state`,
						id, rapid.SampledFrom([]string{"a", "b"}).Draw(rt, "app"), rapid.SampledFrom([]string{"started", "stopped"}).Draw(rt, "state"))
				case 1:
					write(rt, st, `DELETE FROM machines WHERE id = ?`, id)
				case 2:
					write(rt, st, `INSERT OR REPLACE INTO machine_checks (machine_id, name, status) VALUES (?, ?, ?)`,
						id, rapid.SampledFrom([]string{"http", "tcp"}).Draw(rt, "check"), rapid.SampledFrom([]string{"passing", "critical"}).Draw(rt, "status"))
				case 3:
					write(rt, st, `DELETE FROM machine_checks WHERE machine_id = ? AND name = ?`, id, rapid.SampledFrom([]string{"http", "tcp"}).Draw(rt, "check"))
				case 4:
					write(rt, st, `UPDATE machines SET state = ? WHERE id = ?`, rapid.SampledFrom([]string{"started", "stopped"}).Draw(rt, "state"), id)
				}
			}
			e.evaluatePending(context.Background())
			for i, q := range queries {
				followers[i].catchUp(rt, subs[i])
				want := queryResult(rt, st, q.sql, q.args...)
				if got := followers[i].result(); strings.Join(got, "\n") != strings.Join(want, "\n") {
					rt.Fatalf("query %d after batch %d:\nreplayed events:\n%s\nquery result:\n%s", i, b, strings.Join(got, "\n"), strings.Join(want, "\n"))
				}
			}
		}
	})
}

// TestSubscriptionEvents names the events of simple writes.
func TestSubscriptionEvents(t *testing.T) {
	st, e := storeAndEngine(t, 100)
	write(t, st, `INSERT INTO machines (id, app, state) VALUES ('m1', 'a', 'started')`)
	s := subscribe(t, e, joinQuery, "a")
	rows, last, err := s.Snapshot()
	if err != nil || len(rows) != 1 || last != 1 || render(rows[0].Cells) != "'m1'|'started'|NULL" {
		t.Fatalf("snapshot %v last %d err %v", rows, last, err)
	}
	steps := []struct {
		sql  string
		want string
	}{
		{`UPDATE machines SET state = 'stopped' WHERE id = 'm1'`, "update 1 'm1'|'stopped'|NULL"},
		{`INSERT INTO machines (id, app, state) VALUES ('m2', 'b', 'started')`, ""}, // another app
		{`INSERT INTO machines (id, app, state) VALUES ('m3', 'a', 'created')`, "insert 2 'm3'|'created'|NULL"},
		{`INSERT INTO machine_checks (machine_id, name, status) VALUES ('m1', 'http', 'passing')`, "delete 1 'm1'|'stopped'|NULL; insert 3 'm1'|'stopped'|'passing'"},
		{`UPDATE machine_checks SET status = 'critical'`, "update 3 'm1'|'stopped'|'critical'"},
		{`UPDATE machines SET image = 'x' WHERE id = 'm1'`, ""}, // a column the query does not return
		{`UPDATE machines SET app = 'b' WHERE id = 'm3'`, "delete 2 'm3'|'created'|NULL"},
		{`DELETE FROM machine_checks`, "delete 3 'm1'|'stopped'|'critical'; insert 4 'm1'|'stopped'|NULL"},
		{`DELETE FROM machines WHERE id = 'm1'`, "delete 4 'm1'|'stopped'|NULL"},
	}
	for _, step := range steps {
		before := s.Last()
		write(t, st, step.sql)
		e.evaluatePending(context.Background())
		changes, _, err := s.ChangesAfter(before, 100)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for i, c := range changes {
			if c.ID != before+uint64(i)+1 {
				t.Fatalf("%s: change id %d, want %d", step.sql, c.ID, before+uint64(i)+1)
			}
			got = append(got, fmt.Sprintf("%s %d %s", c.Kind, c.RowID, render(c.Cells)))
		}
		if strings.Join(got, "; ") != step.want {
			t.Fatalf("%s:\n got %s\nwant %s", step.sql, strings.Join(got, "; "), step.want)
		}
	}
	if _, _, err := s.ChangesAfter(s.Last()+1, 10); err == nil {
		t.Fatal("resuming past the last change is not an error")
	}
}

func TestSharedAndRetained(t *testing.T) {
	st, e := storeAndEngine(t, 3)
	a := subscribe(t, e, "SELECT id, state FROM machines WHERE app = ?", "a")
	b := subscribe(t, e, "select   id, state\n from machines where app = ?;", "a")
	c := subscribe(t, e, "SELECT id, state FROM machines WHERE app = ?", "b")
	if a != b || a == c {
		t.Fatalf("identical normalized queries must share a subscription, others not: %s %s %s", a.ID, b.ID, c.ID)
	}
	for i := 0; i < 5; i++ {
		write(t, st, `INSERT INTO machines (id, app) VALUES (?, 'a')`, fmt.Sprintf("m%d", i))
		e.evaluatePending(context.Background())
	}
	if a.Last() != 5 {
		t.Fatalf("last change %d, want 5", a.Last())
	}
	if _, _, err := a.ChangesAfter(2, 10); err != nil {
		t.Fatalf("resume inside the window: %v", err)
	}
	if _, _, err := a.ChangesAfter(1, 10); err == nil || !strings.Contains(err.Error(), "no longer retained") {
		t.Fatalf("resume before the window: %v", err)
	}
}

func TestRefusedQueries(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	defer st.Close()
	for q, want := range map[string]string{
		"SELECT count(*) FROM machines":                                               "aggregate",
		"SELECT app, max(port) FROM machines GROUP BY app":                            "GROUP BY",
		"SELECT DISTINCT app FROM machines":                                           "DISTINCT",
		"SELECT id FROM machines LIMIT 3":                                             "LIMIT",
		"SELECT id FROM machines WHERE id IN (SELECT machine_id FROM machine_checks)": "subqueries",
		"SELECT id FROM (SELECT id FROM machines)":                                    "subqueries in FROM",
		"SELECT id FROM machines UNION SELECT machine_id FROM machine_checks":         "compound",
		"SELECT id FROM nope":                                                         "no such replicated table",
		"UPDATE machines SET state = 'x'":                                             "only SELECT",
		"SELECT id FROM machines; SELECT 1":                                           "one statement",
		"SELECT id FROM json_each('[]')":                                              "",
		"SELECT 1":                                                                    "reads no table",
	} {
		_, err := NewPlan(q, st.Schema())
		if err == nil {
			t.Errorf("%s: accepted", q)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %q does not mention %q", q, err, want)
		}
	}
}

// TestSurvivesRestart closes the engine, writes while it is down, and
// reopens it: the subscription keeps its id, rowids and change ids, and
// the first evaluation catches up on the writes it missed.
func TestSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	defer st.Close()
	e := openEngine(t, dir, st, 100)
	s := subscribe(t, e, joinQuery, "a")
	f := follow(t, s)
	write(t, st, `INSERT INTO machines (id, app, state) VALUES ('m1', 'a', 'started')`)
	e.evaluatePending(context.Background())
	f.catchUp(t, s)
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	st.SetHooks(store.Hooks{})
	write(t, st, `UPDATE machines SET state = 'stopped' WHERE id = 'm1'`)
	write(t, st, `INSERT INTO machines (id, app, state) VALUES ('m2', 'a', 'started')`)

	e = openEngine(t, dir, st, 100)
	defer e.Close()
	s2 := e.Get(s.ID)
	if s2 == nil {
		t.Fatal("the subscription did not survive the restart")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	waitFor(t, func() bool { return s2.Last() >= 3 })
	cancel()
	<-done
	f.catchUp(t, s2)
	want := queryResult(t, st, joinQuery, "a")
	if got := f.result(); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("after restart: replayed %v, query %v", got, want)
	}
}

// waitFor polls cond until it holds, failing the test after a deadline.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestPlanRoutes(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	defer st.Close()
	for q, want := range map[string]string{
		joinQuery: "[{0 app 1 }]",
		`SELECT m.id FROM machines m LEFT JOIN machine_checks c ON c.machine_id = m.id WHERE c.status = ?`: "[]", // null-extended side
		`SELECT id FROM machines WHERE app = :app AND state = ?`:                                           "[]", // mixed parameters
		`SELECT id FROM machines WHERE (app = :app AND port > 3) AND :state = state`:                       "[{0 app 0 app} {0 state 0 state}]",
		`SELECT id FROM machines WHERE app = ?2 OR state = ?1`:                                             "[]", // not a conjunction
	} {
		p, err := NewPlan(q, st.Schema())
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		got := fmt.Sprint(p.Routes)
		if p.Routes == nil {
			got = "[]"
		}
		if got != want {
			t.Errorf("%s: routes %s, want %s", q, got, want)
		}
	}
}

// TestConcurrentSubscribe: identical queries subscribed at once share one
// subscription, and none of them sees it before its first rows are in.
func TestConcurrentSubscribe(t *testing.T) {
	st, e := storeAndEngine(t, 100)
	for i := 0; i < 200; i++ {
		write(t, st, `INSERT INTO machines (id, app) VALUES (?, 'a')`, fmt.Sprintf("m%d", i))
	}
	type got struct {
		id   string
		rows int
		err  error
	}
	results := make(chan got, 8)
	for i := 0; i < 8; i++ {
		go func() {
			s, _, err := e.Subscribe(context.Background(), Query{SQL: "SELECT id FROM machines WHERE app = 'a'"})
			if err != nil {
				results <- got{err: err}
				return
			}
			rows, _, err := s.Snapshot()
			results <- got{id: s.ID, rows: len(rows), err: err}
		}()
	}
	var first string
	for i := 0; i < 8; i++ {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if first == "" {
			first = r.id
		}
		if r.id != first || r.rows != 200 {
			t.Fatalf("subscriber %d: subscription %s with %d rows, want %s with 200", i, r.id, r.rows, first)
		}
	}
}

// TestColumnsChangeUnderSelectStar: a column added to a table a
// SELECT * subscription reads changes its result's columns. Whether the
// next batch evaluates the subscription in full or only the changed
// rows, the subscription ends and says why, instead of sending rows
// with more cells than the columns it announced.
func TestColumnsChangeUnderSelectStar(t *testing.T) {
	st, e := storeAndEngine(t, 100)
	write(t, st, `INSERT INTO machines (id, app, state) VALUES ('m1', 'a', 'started')`)
	s := subscribe(t, e, `SELECT * FROM machines WHERE app = ?`, "a")
	if s.plan.Full {
		t.Fatal("the query is evaluated in full; this test wants the changed rows only")
	}
	grown := strings.Replace(schemas.Regional(), "updated_at INTEGER NOT NULL DEFAULT 0  -- unix milliseconds, set by the host agent",
		"updated_at INTEGER NOT NULL DEFAULT 0,\n    zone TEXT NOT NULL DEFAULT ''", 1)
	if grown == schemas.Regional() {
		t.Fatal("the schema text changed; update the test")
	}
	if err := st.ApplySchemaSQL(context.Background(), grown); err != nil {
		t.Fatal(err)
	}
	write(t, st, `UPDATE machines SET state = 'stopped' WHERE id = 'm1'`)
	e.evaluatePending(context.Background())
	changes, _, err := s.ChangesAfter(s.Last()-min(s.Last(), 1), 100)
	for _, c := range changes {
		if len(c.Cells) != len(s.Columns()) {
			t.Fatalf("change %d has %d cells under %d columns %v", c.ID, len(c.Cells), len(s.Columns()), s.Columns())
		}
	}
	if err == nil || !strings.Contains(err.Error(), "columns changed") {
		t.Fatalf("after a column was added under SELECT *: changes %d, err %v; want the subscription ended", len(changes), err)
	}
	// It ended inside the batch's transaction, which is rolled back:
	// its routes must not come back with it.
	tbl := e.routeTables[routeKey("machines", "app")]
	if tbl == "" {
		t.Fatal("the subscription had no route on machines.app")
	}
	var routes int
	if err := e.conn.QueryRowContext(context.Background(), "SELECT count(*) FROM "+tbl+" WHERE sub = ?", s.ID).Scan(&routes); err != nil {
		t.Fatal(err)
	}
	if routes != 0 {
		t.Fatalf("%d routes of the ended subscription left", routes)
	}
}

// TestLagCoversTheBatchBeingEvaluated: the changes of the batch under
// evaluation are not evaluated yet: Lag counts them until they reach the
// subscription, rather than falling to 0 as the batch begins.
func TestLagCoversTheBatchBeingEvaluated(t *testing.T) {
	st, e := storeAndEngine(t, 100)
	write(t, st, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 50000) INSERT INTO machines (id, app) SELECT 'm' || i, 'web' FROM n")
	// Filtered on the nullable side of a LEFT JOIN: run whole at every change.
	s := subscribe(t, e, "SELECT m.id, c.status FROM machines m LEFT JOIN machine_checks c ON c.machine_id = m.id WHERE c.status IS NULL")
	before := s.Last()
	write(t, st, "INSERT INTO machines (id) VALUES ('new')")
	done := make(chan struct{})
	go func() { e.evaluatePending(context.Background()); close(done) }()
	for polls := 0; ; polls++ {
		// Lag first: if the change has not reached the subscription
		// after it was read, it was waiting or being evaluated then.
		lag := e.Lag()
		if s.Last() != before {
			break
		}
		if lag == 0 {
			t.Fatalf("poll %d: the change has not reached the subscription, yet the lag is 0", polls)
		}
		time.Sleep(time.Millisecond)
	}
	<-done
	if e.Lag() != 0 {
		t.Fatalf("lag %v once every change is evaluated", e.Lag())
	}
}
