package reseed

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/regional"
	"github.com/patina-db/patina/schemas"
)

func TestSplitPointsAreEven(t *testing.T) {
	for _, c := range []struct{ count, n, ranges int }{{0, 64, 1}, {1, 64, 1}, {10, 64, 10}, {1000, 64, 64}, {1_000_003, 64, 64}, {100, 1, 1}} {
		points := splitPoints(c.count, c.n)
		splits := make([]Key, len(points))
		for i, p := range points {
			splits[i] = Key{int64(p)}
		}
		ranges := rangesFromSplits(splits, points, c.count)
		if len(ranges) != c.ranges {
			t.Fatalf("%d keys in %d: %d ranges, want %d", c.count, c.n, len(ranges), c.ranges)
		}
		var total int64
		for i, r := range ranges {
			total += r.Rows
			if want := int64(c.count / len(ranges)); r.Rows < want || r.Rows > want+1 {
				t.Fatalf("%d keys in %d: range %d holds %d, want %d or %d", c.count, c.n, i, r.Rows, want, want+1)
			}
			if r.Index != i || (i == 0) != (r.Lo == nil) || (i == len(ranges)-1) != (r.Hi == nil) {
				t.Fatalf("range %d: %+v: want open ends only at the first and last", i, r)
			}
			if i > 0 && !reflect.DeepEqual(r.Lo, ranges[i-1].Hi) {
				t.Fatalf("range %d starts at %v, the one before ends at %v", i, r.Lo, ranges[i-1].Hi)
			}
		}
		if total != int64(c.count) {
			t.Fatalf("%d keys in %d: ranges hold %d", c.count, c.n, total)
		}
	}
}

func TestKeyJSONKeepsTypes(t *testing.T) {
	k := Key{int64(1) << 60, 2.0, "text", []byte{0, 1, 255}, nil}
	data, err := json.Marshal(Range{Index: 3, Lo: k})
	if err != nil {
		t.Fatal(err)
	}
	var r Range
	if err := json.Unmarshal(data, &r); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(r.Lo, k) || r.Hi != nil {
		t.Fatalf("%s came back as %#v, %#v", data, r.Lo, r.Hi)
	}
}

func TestBackoffDoublesUpToTheCap(t *testing.T) {
	base, max := 100*time.Millisecond, time.Second
	for attempt, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 30: time.Second} {
		if lo := backoff(attempt, base, max, 0); lo != want/2 {
			t.Errorf("attempt %d: least delay %s, want %s", attempt, lo, want/2)
		}
		if hi := backoff(attempt, base, max, 0.999999); hi >= want || hi < want*9/10 {
			t.Errorf("attempt %d: most delay %s, want just under %s", attempt, hi, want)
		}
	}
}

func TestRetryable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{errors.New("connection refused"), true},
		{&client.Error{Status: 500}, true},
		{&client.Error{Status: 503}, true},
		{&client.Error{Status: 429}, true},
		{&client.Error{Status: 200, Message: "unreadable response"}, true},
		{&client.Error{Status: 400}, false},
		{&client.Error{Status: 413}, false},
		{fmt.Errorf("wrapped: %w", &client.Error{Status: 401}), false},
	} {
		if got := retryable(c.err); got != c.want {
			t.Errorf("retryable(%v) = %v", c.err, got)
		}
	}
}

func TestStateRoundTripAndMismatch(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	st := &state{Version: stateVersion, Sources: "bbolt:/a,/b", Ranges: []Range{{Index: 0, Hi: Key{"m"}}, {Index: 1, Lo: Key{"m"}}}, Done: []int{1}}
	if err := st.save(path); err != nil {
		t.Fatal(err)
	}
	if left, _ := filepath.Glob(path + ".tmp*"); len(left) > 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	got, err := loadState(path, "bbolt:/a,/b")
	if err != nil || !reflect.DeepEqual(got, st) {
		t.Fatalf("loaded %+v, %v; want %+v", got, err, st)
	}
	if _, err := loadState(path, "bbolt:/c"); err == nil || !strings.Contains(err.Error(), "other sources") {
		t.Fatalf("other sources: %v", err)
	}
	if got, err := loadState(filepath.Join(t.TempDir(), "none.json"), "x"); got != nil || err != nil {
		t.Fatalf("missing file: %v %v", got, err)
	}
	os.WriteFile(path, []byte(`{"version":1,"sources":"x","ranges":[{"index":0}],"done":[5]}`), 0o644)
	if _, err := loadState(path, "x"); err == nil || !strings.Contains(err.Error(), "range 5") {
		t.Fatalf("bad done list: %v", err)
	}
	os.WriteFile(path, []byte(`{garbage`), 0o644)
	if _, err := loadState(path, "x"); err == nil || !strings.Contains(err.Error(), "remove it") {
		t.Fatalf("garbage: %v", err)
	}
}

func TestUpsertSplitsAtTheVariableBound(t *testing.T) {
	u := newUpsert("t", []string{"a", "b", "c"}, []string{"a"})
	rows := 2*(maxVariables/3) + 5
	values := make([]any, 3*rows)
	stmts := u.statements(values)
	if len(stmts) != 3 {
		t.Fatalf("%d statements for %d rows, want 3", len(stmts), rows)
	}
	total := 0
	for _, st := range stmts {
		n := strings.Count(st.Query, "?")
		if n != len(st.Params) || n > maxVariables {
			t.Fatalf("statement with %d placeholders and %d parameters", n, len(st.Params))
		}
		total += len(st.Params)
	}
	if total != len(values) {
		t.Fatalf("%d parameters in all, want %d", total, len(values))
	}
	if q := u.query(2); q != `INSERT INTO "t" ("a", "b", "c") VALUES (?,?,?),(?,?,?) ON CONFLICT ("a") DO UPDATE SET "b" = excluded."b", "c" = excluded."c"` {
		t.Fatalf("query: %s", q)
	}
	if q := newUpsert("k", []string{"a"}, []string{"a"}).probe().Query; q != `INSERT INTO "k" ("a") SELECT NULL WHERE 0 ON CONFLICT ("a") DO NOTHING` {
		t.Fatalf("probe: %s", q)
	}
}

func TestHostStatementsNameEachLiveHostOnce(t *testing.T) {
	at := time.UnixMilli(1_700_000_000_000)
	ms := []regional.Machine{
		{ID: "a", Host: "h1", Region: "ams", State: regional.StateStarted},
		{ID: "b", Host: "h1", Region: "ams", State: regional.StateStopped},
		{ID: "c", Host: "h2", Region: "ams", State: regional.StateDestroyed}, // a destroyed machine says nothing of its host
		{ID: "d", Host: "", Region: "ams", State: regional.StateStarted},
		{ID: "e", Host: "h3", Region: "iad", State: regional.StateCreated},
	}
	stmts := hostStatements(ms, at)
	if len(stmts) != 1 {
		t.Fatalf("%d statements, want 1", len(stmts))
	}
	want := []any{"h1", "ams", at.UnixMilli(), "h3", "iad", at.UnixMilli()}
	if !reflect.DeepEqual(stmts[0].Params, want) {
		t.Fatalf("params %v, want %v", stmts[0].Params, want)
	}
	if got := hostStatements(ms[2:4], at); len(got) != 0 {
		t.Fatalf("statements for no live named host: %v", got)
	}
	// More hosts than one statement takes.
	many := make([]regional.Machine, maxVariables/3+7)
	for i := range many {
		many[i] = regional.Machine{ID: fmt.Sprint(i), Host: fmt.Sprintf("h%d", i), State: regional.StateStarted}
	}
	stmts = hostStatements(many, at)
	if len(stmts) != 2 {
		t.Fatalf("%d statements for %d hosts, want 2", len(stmts), len(many))
	}
	total := 0
	for _, st := range stmts {
		if n := strings.Count(st.Query, "?"); n != len(st.Params) || n > maxVariables {
			t.Fatalf("statement with %d placeholders and %d parameters", n, len(st.Params))
		}
		total += len(st.Params)
	}
	if total != 3*len(many) {
		t.Fatalf("%d parameters, want %d", total, 3*len(many))
	}
}

// TestHostStatementsLeaveHostsRowsBe runs the statements on a store with
// the regional schema: a host's own row (it publishes) stays as it is; a
// row the reseed made is stamped again once its stamp is older than
// restampAfter, not at every batch; a host without a row gets one.
func TestHostStatementsLeaveHostsRowsBe(t *testing.T) {
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Path: filepath.Join(t.TempDir(), "a.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.ApplySchemaSQL(ctx, schemas.Regional()); err != nil {
		t.Fatal(err)
	}
	at := time.UnixMilli(1_700_000_000_000)
	old, recent := at.Add(-2*restampAfter).UnixMilli(), at.Add(-restampAfter/2).UnixMilli()
	_, err = st.Transact(ctx, []store.Statement{{SQL: `INSERT INTO hosts (name, region, seen_at, republish_ms) VALUES
		('publishes', 'ams', ?1, 30000), ('reseeded', 'ams', ?1, 0), ('reseeded-lately', 'ams', ?2, 0)`, Args: []any{old, recent}}})
	if err != nil {
		t.Fatal(err)
	}
	var ms []regional.Machine
	for _, h := range []string{"publishes", "reseeded", "reseeded-lately", "new"} {
		ms = append(ms, regional.Machine{ID: "m-" + h, Host: h, Region: "ams", State: regional.StateStarted})
	}
	var stmts []store.Statement
	for _, c := range hostStatements(ms, at) {
		stmts = append(stmts, store.Statement{SQL: c.Query, Args: c.Params})
	}
	if _, err := st.Transact(ctx, stmts); err != nil {
		t.Fatal(err)
	}
	rows, err := st.Query(ctx, store.Statement{SQL: `SELECT name, seen_at, republish_ms FROM hosts ORDER BY name`})
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var got []string
	for rows.Next() {
		var name string
		var seen, ms int64
		if err := rows.Scan(&name, &seen, &ms); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s %d %d", name, seen, ms))
	}
	now := at.UnixMilli()
	want := []string{fmt.Sprintf("new %d 0", now), fmt.Sprintf("publishes %d 30000", old),
		fmt.Sprintf("reseeded %d 0", now), fmt.Sprintf("reseeded-lately %d 0", recent)}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("hosts:\n got %q\nwant %q", got, want)
	}
}

// tablesOnly is a cluster whose tables have the columns given, and which
// takes every probe.
type tablesOnly map[string][]string

func (c tablesOnly) Columns(_ context.Context, table string) ([]string, error) { return c[table], nil }
func (c tablesOnly) Try(context.Context, client.Statement) error               { return nil }

func TestBBoltWritesHostsOnlyWhereTheTableIs(t *testing.T) {
	machines := tablesOnly{
		"machines":       {"id", "app", "region", "host", "address", "port", "state", "image", "updated_at"},
		"machine_checks": {"machine_id", "name", "status", "output", "updated_at"},
	}
	withHosts := tablesOnly{"hosts": {"name", "region", "seen_at", "republish_ms"}}
	for k, v := range machines {
		withHosts[k] = v
	}
	for _, tc := range []struct {
		cl   tablesOnly
		want bool
	}{{machines, false}, {withHosts, true}} {
		s := &bboltSource{log: slog.New(slog.DiscardHandler)}
		if err := s.CheckTarget(context.Background(), tc.cl); err != nil {
			t.Fatal(err)
		}
		if s.hosts != tc.want {
			t.Fatalf("tables %v: hosts %v, want %v", len(tc.cl), s.hosts, tc.want)
		}
	}
}

// TestBBoltRangesFromAStateFileAreChecked: a state file edited by hand
// may hold any key; a bad one is an error naming the range, not a panic.
func TestBBoltRangesFromAStateFileAreChecked(t *testing.T) {
	s := &bboltSource{log: slog.New(slog.DiscardHandler)}
	for _, r := range []Range{{Lo: Key{}}, {Hi: Key{}}, {Lo: Key{int64(3)}}, {Hi: Key{"a", "b"}}} {
		if _, err := s.OpenRange(context.Background(), r); err == nil || !strings.Contains(err.Error(), "not a machine id range") {
			t.Errorf("range %+v: %v", r, err)
		}
	}
}
