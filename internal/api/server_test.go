package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/api"
	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/internal/subs"
	"github.com/patina-db/patina/schemas"
)

type fixture struct {
	t   *testing.T
	srv *httptest.Server
	st  *store.Store
}

func newFixture(t *testing.T, opts api.Options) *fixture {
	t.Helper()
	st := regionalStore(t)
	srv := httptest.NewServer(api.NewServer(st, opts))
	t.Cleanup(func() { srv.Close(); st.Close() })
	return &fixture{t: t, srv: srv, st: st}
}

// regionalStore opens a store with the regional schema.
func regionalStore(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Path: filepath.Join(t.TempDir(), "p.db")})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.ApplySchemaSQL(context.Background(), schemas.Regional()); err != nil {
		t.Fatal(err)
	}
	return st
}

func (f *fixture) do(method, path, body string, header ...string) (int, string) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

func (f *fixture) exec(body string) (int, api.ExecResponse) {
	f.t.Helper()
	code, raw := f.do("POST", "/v1/transactions", body)
	var out api.ExecResponse
	if err := json.Unmarshal([]byte(raw), &out); err != nil {
		f.t.Fatalf("response %q: %v", raw, err)
	}
	return code, out
}

func (f *fixture) count(table string) int {
	f.t.Helper()
	code, raw := f.do("POST", "/v1/queries", `"SELECT count(*) FROM `+table+`"`)
	if code != 200 {
		f.t.Fatalf("count: %d %s", code, raw)
	}
	lines := strings.Split(strings.TrimSpace(raw), "\n")
	var ev api.QueryEvent
	if err := json.Unmarshal([]byte(lines[1]), &ev); err != nil || ev.Row == nil {
		f.t.Fatalf("count row %q: %v", lines[1], err)
	}
	return int(ev.Row.Cells[0].(int64))
}

func TestTransactionShapesAndVersions(t *testing.T) {
	f := newFixture(t, api.Options{})
	upsert := `["INSERT INTO machines (id, app, state) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET app = excluded.app, state = excluded.state", ["m1", "web", "started"]]`
	before := time.Now()
	code, out := f.exec(`[` + upsert + `]`)
	if code != 200 || out.Version == nil || *out.Version != 1 || len(out.Results) != 1 || *out.Results[0].RowsAffected != 1 || out.ActorID != f.st.Actor().String() {
		t.Fatalf("first write: %d %+v", code, out)
	}
	if out.CommittedAt == nil || out.CommittedAt.Before(before) || out.CommittedAt.After(time.Now()) {
		t.Fatalf("first write: committed_at %v, want the moment of its commit", out.CommittedAt)
	}
	// Identical re-publish: 200, version null, committed all the same.
	code, raw := f.do("POST", "/v1/transactions", `[`+upsert+`]`)
	if code != 200 || !strings.Contains(raw, `"version":null`) || !strings.Contains(raw, `"committed_at":"`) {
		t.Fatalf("identical re-publish: %d %s", code, raw)
	}
	// Every statement form.
	code, out = f.exec(`[
		"INSERT INTO machines (id) VALUES ('m2')",
		["UPDATE machines SET port = :port WHERE id = :id", {"port": 8080, "id": "m2"}],
		{"query": "UPDATE machines SET host = ? WHERE id = ?", "params": ["h1", "m2"]},
		{"query": "UPDATE machines SET image = $img WHERE id = $id", "named_params": {"img": "x", "$id": "m2"}}
	]`)
	if code != 200 || out.Version == nil || *out.Version != 2 || len(out.Results) != 4 {
		t.Fatalf("statement forms: %d %+v", code, out)
	}
	for i, r := range out.Results {
		if r.RowsAffected == nil || *r.RowsAffected != 1 {
			t.Fatalf("statement %d affected %v rows", i, r.RowsAffected)
		}
	}
}

func TestFailedTransactionLeavesNoTrace(t *testing.T) {
	f := newFixture(t, api.Options{})
	code, out := f.exec(`[
		"INSERT INTO machines (id, app) VALUES ('m1', 'web')",
		"INSERT INTO machine_checks (machine_id, name) VALUES ('m1', 'http')",
		"INSERT INTO machines (id, app) VALUES ('m1', 'again')"
	]`)
	if code != 400 {
		t.Fatalf("status %d, want 400", code)
	}
	if len(out.Results) != 3 || out.Results[2].Error == "" || !strings.Contains(out.Results[2].Error, "statement 2") ||
		!strings.Contains(out.Results[2].Error, "UNIQUE constraint failed: machines.id") {
		t.Fatalf("results %+v: want statement 2 named with SQLite's message", out.Results)
	}
	if out.Version != nil || out.CommittedAt != nil {
		t.Fatalf("failed transaction has version %v, committed_at %v", out.Version, out.CommittedAt)
	}
	if f.count("machines") != 0 || f.count("machine_checks") != 0 || f.st.Head() != 0 {
		t.Fatal("the first two statements left a trace")
	}
}

func TestBadInputGets4xxAndTheAgentKeepsServing(t *testing.T) {
	f := newFixture(t, api.Options{MaxBodyBytes: 4096})
	cases := []struct {
		name, path, body string
		status           int
		want             string
	}{
		{"non-JSON body", "/v1/transactions", `INSERT INTO machines`, 400, "not valid JSON"},
		{"empty array", "/v1/transactions", `[]`, 400, "no statements"},
		{"object body", "/v1/transactions", `{"query": "x"}`, 400, "not valid JSON"},
		{"unknown table", "/v1/transactions", `["INSERT INTO nope VALUES (1)"]`, 400, "no such table: nope"},
		{"bad SQL", "/v1/transactions", `["INSERT INTO machines VALUE (1)"]`, 400, "syntax error"},
		{"wrong parameter count", "/v1/transactions", `[["INSERT INTO machines (id, app) VALUES (?, ?)", ["m1"]]]`, 400, "expected 2 arguments, got 1"},
		{"too many parameters", "/v1/transactions", `[["INSERT INTO machines (id) VALUES (?)", ["m1", "m2"]]]`, 400, "expected 1 arguments, got 2"},
		{"bad parameter", "/v1/transactions", `[["INSERT INTO machines (id) VALUES (?)", [{"a": 1}]]]`, 400, "not SQL values"},
		{"internal table", "/v1/transactions", `["DELETE FROM __patina_clock_machines"]`, 400, "patina's own"},
		{"schema change in a transaction", "/v1/transactions", `["DROP TABLE machines"]`, 400, "not authorized"},
		{"pragma in a transaction", "/v1/transactions", `["PRAGMA journal_mode = DELETE"]`, 400, "not authorized"},
		{"transaction control", "/v1/transactions", `["COMMIT"]`, 400, "not authorized"},
		{"body over the limit", "/v1/transactions", `["` + strings.Repeat("x", 5000) + `"]`, 413, "larger than 4096 bytes"},
		{"write sent to queries", "/v1/queries", `"DELETE FROM machines"`, 400, "not read-only"},
		{"write hidden after a query", "/v1/queries", `"SELECT 1; DELETE FROM machines"`, 400, "2 statements"},
		{"pragma sent to queries", "/v1/queries", `"PRAGMA query_only = 0"`, 400, "not read-only"},
		{"attach sent to queries", "/v1/queries", `"ATTACH 'x.db' AS x"`, 400, "not read-only"},
		{"unknown table in a query", "/v1/queries", `"SELECT * FROM nope"`, 400, "no such table"},
		{"non-JSON query", "/v1/queries", `SELECT 1`, 400, "not valid JSON"},
		{"query over the limit", "/v1/queries", `"` + strings.Repeat("x", 5000) + `"`, 413, "larger than"},
		{"wrong query parameter count", "/v1/queries", `["SELECT ?, ?", [1]]`, 400, "expected 2 arguments"},
		{"two statements in one entry", "/v1/transactions", `["INSERT INTO machines (id) VALUES ('a'); INSERT INTO machines (id) VALUES ('b')"]`, 400, "2 statements in one entry"},
		{"migration not an array", "/v1/migrations", `"CREATE TABLE x (id TEXT NOT NULL PRIMARY KEY)"`, 400, "not valid JSON"},
		{"empty migration", "/v1/migrations", `[]`, 400, "no statements"},
		{"health threshold not a number", "/v1/health?gaps=many", ``, 400, "gaps"},
		{"health threshold with a unit", "/v1/health?p99_lag=500ms", ``, 400, "p99_lag"},
		{"health threshold with a tail", "/v1/health?gaps=1x", ``, 400, "gaps"},
		{"health threshold NaN", "/v1/health?gaps=nan", ``, 400, "gaps"},
		{"stray ] after the body", "/v1/transactions", `["INSERT INTO machines (id) VALUES ('m1')"]]`, 400, "data after the JSON value"},
		{"stray } after the body", "/v1/transactions", `["INSERT INTO machines (id) VALUES ('m2')"]}`, 400, "data after the JSON value"},
		{"stray ] after a query", "/v1/queries", `"SELECT 1"]`, 400, "data after the JSON value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			method := "POST"
			if strings.HasPrefix(c.path, "/v1/health") {
				method = "GET"
			}
			code, raw := f.do(method, c.path, c.body)
			if code != c.status || !strings.Contains(raw, c.want) {
				t.Fatalf("got %d %s, want %d containing %q", code, raw, c.status, c.want)
			}
			// Still serving, still intact.
			if code, out := f.exec(`["INSERT INTO machines (id) VALUES ('ok') ON CONFLICT DO NOTHING"]`); code != 200 {
				t.Fatalf("agent stopped serving after %s: %d %+v", c.name, code, out)
			}
			if f.count("machines") != 1 {
				t.Fatalf("after %s: machines holds %d rows, want 1", c.name, f.count("machines"))
			}
		})
	}
}

func TestQueryStream(t *testing.T) {
	f := newFixture(t, api.Options{})
	f.exec(`["INSERT INTO machines (id, app, port) VALUES ('m1', 'web', 80), ('m2', 'web', 81), ('m3', 'db', 82)"]`)
	code, raw := f.do("POST", "/v1/queries", `["SELECT id, port, 1.5, 2.0, NULL, x'00ff' FROM machines WHERE app = ? ORDER BY id", ["web"]]`)
	if code != 200 {
		t.Fatalf("%d %s", code, raw)
	}
	want := `{"columns":["id","port","1.5","2.0","NULL","x'00ff'"]}
{"row":[1,["m1",80,1.5,2.0,null,[0,255]]]}
{"row":[2,["m2",81,1.5,2.0,null,[0,255]]]}
`
	if !strings.HasPrefix(raw, want) {
		t.Fatalf("stream:\n%s\nwant prefix:\n%s", raw, want)
	}
	sc := bufio.NewScanner(strings.NewReader(raw))
	var last string
	for sc.Scan() {
		last = sc.Text()
	}
	var ev api.QueryEvent
	if err := json.Unmarshal([]byte(last), &ev); err != nil || ev.EOQ == nil {
		t.Fatalf("last line %q is not eoq", last)
	}
}

func TestMigrations(t *testing.T) {
	f := newFixture(t, api.Options{})
	for _, c := range []struct{ body, want string }{
		{`["ALTER TABLE machines DROP COLUMN image"]`, `column \"image\": dropping`},
		{`["CREATE TABLE machines (id INTEGER NOT NULL PRIMARY KEY)"]`, `changing the type`},
		{`["CREATE TABLE t (a TEXT)"]`, `PRIMARY KEY`},
		{`["CREATE TABLE machine_checks (machine_id TEXT NOT NULL PRIMARY KEY, name TEXT NOT NULL DEFAULT '', status TEXT NOT NULL DEFAULT 'unknown', output TEXT NOT NULL DEFAULT '', updated_at INTEGER NOT NULL DEFAULT 0)"]`, `column \"name\": changing the primary key`},
	} {
		code, raw := f.do("POST", "/v1/migrations", c.body)
		if code != 400 || !strings.Contains(raw, c.want) {
			t.Fatalf("%s: %d %s, want 400 with %q", c.body, code, raw, c.want)
		}
	}
	code, raw := f.do("POST", "/v1/migrations", `["ALTER TABLE machines ADD COLUMN cpus INTEGER", "CREATE TABLE apps (name TEXT NOT NULL PRIMARY KEY, owner TEXT)"]`)
	if code != 200 {
		t.Fatalf("additive migration: %d %s", code, raw)
	}
	if code, out := f.exec(`["INSERT INTO apps (name) VALUES ('web')", "INSERT INTO machines (id, cpus) VALUES ('m1', 2)"]`); code != 200 || *out.Version != 1 {
		t.Fatalf("write to migrated tables: %d %+v", code, out)
	}
}

func TestHealthThresholds(t *testing.T) {
	f := newFixture(t, api.Options{})
	code, raw := f.do("GET", "/v1/health", "")
	want := `{"response":{"gaps":0,"members":1,"p99_lag":0,"queue_size":0,"head":0,"actor_id":"` + f.st.Actor().String() + `"}}` + "\n"
	if code != 200 || raw != want {
		t.Fatalf("%d %q", code, raw)
	}
	if code, _ := f.do("GET", "/v1/health?gaps=0&p99_lag=1&max_queue=0", ""); code != 200 {
		t.Fatalf("thresholds met: %d", code)
	}
}

func TestBearerToken(t *testing.T) {
	f := newFixture(t, api.Options{BearerToken: "s3cret"})
	for _, path := range []string{"/v1/transactions", "/v1/queries", "/v1/migrations"} {
		for _, h := range [][]string{nil, {"Authorization", "Bearer wrong"}, {"Authorization", "s3cret"}} {
			if code, _ := f.do("POST", path, `"SELECT 1"`, h...); code != 401 {
				t.Fatalf("%s with %v: %d, want 401", path, h, code)
			}
		}
	}
	if code, _ := f.do("POST", "/v1/queries", `"SELECT 1"`, "Authorization", "Bearer s3cret"); code != 200 {
		t.Fatalf("right token: %d", code)
	}
	if code, _ := f.do("GET", "/v1/health", ""); code != 200 {
		t.Fatalf("health without token: %d", code)
	}
}

func TestUpdatesStream(t *testing.T) {
	st, err := store.Open(context.Background(), store.Config{Path: filepath.Join(t.TempDir(), "p.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.ApplySchemaSQL(context.Background(), schemas.Regional()); err != nil {
		t.Fatal(err)
	}
	updates := subs.NewUpdates()
	st.SetHooks(store.Hooks{Rows: updates.Publish})
	srv := httptest.NewServer(api.NewServer(st, api.Options{Updates: updates}))
	defer srv.Close()

	resp, err := http.Post(srv.URL+"/v1/updates/nope", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unknown table: %d", resp.StatusCode)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/updates/machines", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitFor := func(cond func() bool) {
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatal("timed out")
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor(func() bool { return updates.Count() == 1 })
	for _, q := range []string{
		`INSERT INTO machines (id, app) VALUES ('m1', 'web')`,
		`UPDATE machines SET app = 'web' WHERE id = 'm1'`, // no change: no notify
		`UPDATE machines SET state = 'started' WHERE id = 'm1'`,
		`DELETE FROM machines WHERE id = 'm1'`,
	} {
		if _, err := st.Transact(context.Background(), []store.Statement{{SQL: q}}); err != nil {
			t.Fatal(err)
		}
	}
	sc := bufio.NewScanner(resp.Body)
	var got []string
	for len(got) < 3 && sc.Scan() {
		got = append(got, sc.Text())
	}
	want := []string{`{"notify":["update",["m1"]]}`, `{"notify":["update",["m1"]]}`, `{"notify":["delete",["m1"]]}`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stream:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// A follower that goes away is noticed at once, not at the next
	// change to its table: the Go client sends a body ("null"), which
	// the handler reads to its end so that net/http watches the
	// connection.
	resp.Body.Close()
	waitFor(func() bool { return updates.Count() == 0 })
	c, err := client.New(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	u, err := c.Updates(context.Background(), "machines")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(func() bool { return updates.Count() == 1 })
	u.Close()
	waitFor(func() bool { return updates.Count() == 0 })
}

// TestQueryClientThatStopsReadingLetsGo: a query whose client stops
// reading is cut off after the stream write timeout, and its reader (the
// only one here) serves the next query.
func TestQueryClientThatStopsReadingLetsGo(t *testing.T) {
	st, err := store.Open(context.Background(), store.Config{Path: filepath.Join(t.TempDir(), "p.db"), Readers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewServer(api.NewServer(st, api.Options{StreamWriteTimeout: 200 * time.Millisecond}))
	defer srv.Close()
	// Far more than the socket buffers hold.
	big := `["WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000000) SELECT i, hex(zeroblob(100)) FROM n"]`
	resp, err := http.Post(srv.URL+"/v1/queries", "application/json", strings.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := resp.Body.Read(make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	// This client reads no further. The next query gets the reader.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", srv.URL+"/v1/queries", strings.NewReader(`["SELECT 1"]`))
	next, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("a query behind a client that stopped reading: %v", err)
	}
	body, err := io.ReadAll(next.Body)
	next.Body.Close()
	if err != nil || !strings.Contains(string(body), `"eoq"`) {
		t.Fatalf("a query behind a client that stopped reading: %q %v", body, err)
	}
}

// TestSlowQueryIsNotCutOff: the stream write timeout bounds writes to the
// client, not the time the query takes to make its rows.
func TestSlowQueryIsNotCutOff(t *testing.T) {
	st := regionalStore(t)
	defer st.Close()
	srv := httptest.NewServer(api.NewServer(st, api.Options{StreamWriteTimeout: 50 * time.Millisecond}))
	defer srv.Close()
	// 300 rows, spread over the scan of three million, about 30 KB.
	slow := `["WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000) SELECT i, hex(zeroblob(50)) FROM n WHERE i % 10000 = 0"]`
	resp, err := http.Post(srv.URL+"/v1/queries", "application/json", strings.NewReader(slow))
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !strings.Contains(string(body), `[300,[3000000,`) || !strings.Contains(string(body), `"eoq"`) {
		t.Fatalf("slow query: %q %v", body, err)
	}
}
