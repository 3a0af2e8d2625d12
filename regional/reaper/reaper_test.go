package reaper

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/regional"
	"github.com/patina-db/patina/schemas"
)

func openRegional(t *testing.T) *store.Store {
	t.Helper()
	st, err := store.Open(context.Background(), store.Config{Path: filepath.Join(t.TempDir(), "r.db")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	if err := st.ApplySchemaSQL(context.Background(), schemas.Regional()); err != nil {
		t.Fatal(err)
	}
	return st
}

// publish writes what host h's full re-publish at stamp would: two
// machines with a check each, and its heartbeat.
func publish(t *testing.T, st *store.Store, h string, stamp int64) {
	t.Helper()
	var stmts []store.Statement
	for i := range 2 {
		m := regional.Machine{V: regional.RecordVersion, ID: fmt.Sprintf("%s-m%d", h, i), App: "web", Region: "ams", Host: h, Address: "127.0.0.1", Port: 8000 + i, State: regional.StateStarted,
			Checks: []regional.Check{{Name: "http", Kind: "http", Path: "/", Status: "passing"}}}
		for _, s := range regional.Publish(&m) {
			stmts = append(stmts, store.Statement{SQL: s.Query, Args: s.Params})
		}
	}
	hb := regional.Heartbeat(h, "ams", time.UnixMilli(stamp), 10*time.Second)
	stmts = append(stmts, store.Statement{SQL: hb.Query, Args: hb.Params})
	if _, err := st.Transact(context.Background(), stmts); err != nil {
		t.Fatal(err)
	}
}

func dump(t *testing.T, st *store.Store, q string) string {
	t.Helper()
	rows, err := st.Query(context.Background(), store.Statement{SQL: q})
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// TestForgetsAHostThatStopped: of four hosts, one stops re-publishing.
// Once its row has stood still for ForgetAfter by this agent's clock,
// its machines, their checks and its row are deleted, and nothing of
// the others; the host's next re-publish puts everything back.
func TestForgetsAHostThatStopped(t *testing.T) {
	st := openRegional(t)
	ctx := context.Background()
	r := New(st, Config{ForgetAfter: time.Minute, Interval: 10 * time.Second})
	t0 := time.Unix(1_700_000_000, 0)
	hosts := []string{"h1", "h2", "h3", "h4"}
	for _, h := range hosts {
		publish(t, st, h, 1)
	}
	var forgot []string
	for s := 0; s <= 70; s += 10 {
		now := t0.Add(time.Duration(s) * time.Second)
		for _, h := range hosts[:3] {
			publish(t, st, h, int64(2+s)) // h4 stops
		}
		got, err := r.Round(ctx, now)
		if err != nil {
			t.Fatal(err)
		}
		if s < 60 && len(got) > 0 {
			t.Fatalf("at %ds forgot %v", s, got)
		}
		forgot = append(forgot, got...)
	}
	if fmt.Sprint(forgot) != "[h4]" {
		t.Fatalf("forgot %v, want [h4]", forgot)
	}
	if got := dump(t, st, "SELECT DISTINCT host FROM machines ORDER BY host"); got != "h1 h2 h3" {
		t.Fatalf("machines of %s", got)
	}
	if got := dump(t, st, "SELECT machine_id FROM machine_checks WHERE machine_id LIKE 'h4-%'"); got != "" {
		t.Fatalf("checks left: %s", got)
	}
	if got := dump(t, st, "SELECT name FROM hosts ORDER BY name"); got != "h1 h2 h3" {
		t.Fatalf("hosts %s", got)
	}
	publish(t, st, "h4", 99)
	if got := dump(t, st, "SELECT DISTINCT host FROM machines ORDER BY host"); got != "h1 h2 h3 h4" {
		t.Fatalf("after h4 came back: machines of %s", got)
	}
}

// TestForgetsNothingOnADoubtfulView: when most hosts seem to have
// stopped (this agent is the one cut off, say), nothing is deleted; an
// agent later in line waits its turn, then deletes.
func TestForgetsNothingOnADoubtfulView(t *testing.T) {
	st := openRegional(t)
	ctx := context.Background()
	t0 := time.Unix(1_700_000_000, 0)
	for _, h := range []string{"h1", "h2", "h3", "h4"} {
		publish(t, st, h, 1)
	}
	cut := New(st, Config{ForgetAfter: time.Minute})
	// Third in line: it waits four more intervals (40 s) than the first.
	third := New(st, Config{ForgetAfter: time.Minute, Interval: 10 * time.Second, Rank: func() int { return 2 }})
	stamp := int64(2)
	for s := 0; s <= 120; s += 10 {
		publish(t, st, "h1", stamp) // only h1 is seen publishing
		stamp++
		got, err := cut.Round(ctx, t0.Add(time.Duration(s)*time.Second))
		if err != nil || len(got) > 0 {
			t.Fatalf("at %ds, with one host of four moving: forgot %v, %v", s, got, err)
		}
	}
	for s := 0; s < 100; s += 10 {
		for _, h := range []string{"h1", "h2", "h3"} {
			publish(t, st, h, stamp)
		}
		stamp++
		if got, err := third.Round(ctx, t0.Add(time.Duration(s)*time.Second)); err != nil || len(got) > 0 {
			t.Fatalf("at %ds the third agent in line forgot %v, %v", s, got, err)
		}
	}
	if stale, current := third.watch.Stale(t0.Add(90*time.Second), time.Minute, 0); !current || fmt.Sprint(stale) != "[h4]" {
		t.Fatalf("the third agent's view: stale %v, current %v; want h4 stale, in a current view", stale, current)
	}
	if got := dump(t, st, "SELECT count(*) FROM machines"); got != "8" {
		t.Fatalf("%s machines left, want all 8", got)
	}
	// Once the ones before it have had their turn, it acts itself.
	if got, err := third.Round(ctx, t0.Add(100*time.Second)); err != nil || fmt.Sprint(got) != "[h4]" {
		t.Fatalf("at 100s the third agent in line forgot %v, %v; want [h4]", got, err)
	}
}

// TestHeartbeatMeanwhileKeepsTheHost: a heartbeat that lands between
// the read that found a host stale and the deletes keeps it whole.
func TestHeartbeatMeanwhileKeepsTheHost(t *testing.T) {
	st := openRegional(t)
	publish(t, st, "h1", 1)
	publish(t, st, "h1", 2) // the heartbeat that came meanwhile
	res, err := st.Transact(context.Background(), forgetStatements("h1", 1))
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res.Results {
		if r.RowsAffected != 0 {
			t.Fatalf("statement %d deleted %d rows", i, r.RowsAffected)
		}
	}
}
