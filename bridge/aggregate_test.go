package bridge

import (
	"errors"
	"maps"
	"math/rand/v2"
	"testing"

	"github.com/patina-db/patina/regional"
)

func row(id, app, state string, check any, status any) []any {
	return []any{id, app, state, check, status}
}

// TestAggregatesCounts: the counts follow regional.Machine's rules
// through inserts, updates and deletes of the join's rows.
func TestAggregatesCounts(t *testing.T) {
	a := NewAggregates()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	want := func(w map[string]Counts) {
		t.Helper()
		if got := a.Apps(); !maps.Equal(got, w) {
			t.Fatalf("apps %v, want %v", got, w)
		}
	}
	must(a.Put(1, row("m1", "web", "started", nil, nil)))
	want(map[string]Counts{"web": {1, 1}})
	must(a.Put(2, row("m2", "web", "created", nil, nil)))
	want(map[string]Counts{"web": {2, 1}})
	// m1 gets a failing check: its null-extended row goes, a check row comes.
	a.Delete(1)
	must(a.Put(3, row("m1", "web", "started", "http", "critical")))
	want(map[string]Counts{"web": {2, 0}})
	must(a.Put(4, row("m1", "web", "started", "tcp", "passing")))
	want(map[string]Counts{"web": {2, 0}})
	must(a.Put(3, row("m1", "web", "started", "http", "passing")))
	want(map[string]Counts{"web": {2, 1}})
	must(a.Put(2, row("m2", "web", "destroyed", nil, nil)))
	want(map[string]Counts{"web": {1, 1}})
	must(a.Put(5, row("m3", "api", "stopped", nil, nil)))
	want(map[string]Counts{"web": {1, 1}, "api": {1, 0}})
	a.Delete(2)
	a.Delete(3)
	want(map[string]Counts{"web": {1, 1}, "api": {1, 0}})
	a.Delete(4)
	want(map[string]Counts{"api": {1, 0}})
	a.Delete(99) // unknown: ignored
	if err := a.Put(6, []any{"m4", "web"}); !errors.Is(err, ErrBadRow) {
		t.Fatalf("a short row: %v", err)
	}
	if err := a.Put(6, []any{"m4", int64(3), "started", nil, nil}); !errors.Is(err, ErrBadRow) {
		t.Fatalf("a row with a numeric app: %v", err)
	}
	// A counted row that turns bad leaves the counts; the others stay.
	must(a.Put(7, row("m5", "web", "started", nil, nil)))
	want(map[string]Counts{"web": {1, 1}, "api": {1, 0}})
	if err := a.Put(7, []any{"m5", []byte("web"), "started", nil, nil}); !errors.Is(err, ErrBadRow) {
		t.Fatalf("a row with a blob app: %v", err)
	}
	want(map[string]Counts{"api": {1, 0}})
}

// TestAggregatesMatchRecords: after random row operations the counts
// equal those computed from whole machine records with
// regional.Machine.Healthy.
func TestAggregatesMatchRecords(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	states := []string{"created", "started", "stopped", "destroyed"}
	statuses := []string{"passing", "warning", "critical", "unknown"}
	apps := []string{"a", "b", "c"}
	machines := map[string]*regional.Machine{}
	a := NewAggregates()
	// rowids of the current result: machine → check name ("" for none) → rowid
	rowids := map[string]map[string]int64{}
	next := int64(0)
	publish := func(m *regional.Machine) {
		old := rowids[m.ID]
		keep := map[string]int64{}
		names := []string{""}
		if len(m.Checks) > 0 {
			names = names[:0]
			for _, c := range m.Checks {
				names = append(names, c.Name)
			}
		}
		for _, n := range names {
			id, ok := old[n]
			if !ok {
				next++
				id = next
			}
			keep[n] = id
			var check, status any
			for _, c := range m.Checks {
				if c.Name == n {
					check, status = c.Name, c.Status
				}
			}
			if err := a.Put(id, row(m.ID, m.App, m.State, check, status)); err != nil {
				t.Fatal(err)
			}
		}
		for n, id := range old {
			if _, ok := keep[n]; !ok {
				a.Delete(id)
			}
		}
		rowids[m.ID] = keep
	}
	for i := 0; i < 5000; i++ {
		id := string(rune('a' + rng.IntN(20)))
		m, ok := machines[id]
		if rng.IntN(10) == 0 && ok {
			for _, rid := range rowids[id] {
				a.Delete(rid)
			}
			delete(rowids, id)
			delete(machines, id)
			continue
		}
		if !ok {
			m = &regional.Machine{ID: id, App: apps[rng.IntN(len(apps))]}
			machines[id] = m
		}
		m.State = states[rng.IntN(len(states))]
		m.Checks = nil
		for c := 0; c < rng.IntN(3); c++ {
			m.Checks = append(m.Checks, regional.Check{Name: string(rune('x' + c)), Status: statuses[rng.IntN(len(statuses))]})
		}
		publish(m)
		want := map[string]Counts{}
		for _, m := range machines {
			c := want[m.App]
			if m.State != regional.StateDestroyed {
				c.Machines++
			}
			if m.Healthy() {
				c.Healthy++
			}
			if c.Machines > 0 {
				want[m.App] = c
			}
		}
		if got := a.Apps(); !maps.Equal(got, want) {
			t.Fatalf("step %d: apps %v, want %v", i, got, want)
		}
	}
}

// TestDiff: only changed and new apps are written, gone apps deleted.
func TestDiff(t *testing.T) {
	written := map[string]Counts{"a": {1, 1}, "b": {2, 0}, "c": {1, 0}}
	current := map[string]Counts{"a": {1, 1}, "b": {2, 1}, "d": {3, 3}}
	up, gone := diff(written, current)
	if !maps.Equal(up, map[string]Counts{"b": {2, 1}, "d": {3, 3}}) || len(gone) != 1 || gone[0] != "c" {
		t.Fatalf("upserts %v, gone %v", up, gone)
	}
	if stmts := flushStatements("syd", nil, nil, 1); len(stmts) != 0 {
		t.Fatalf("an empty diff makes %d statements", len(stmts))
	}
	if stmts := flushStatements("syd", up, gone, 1); len(stmts) != 2 {
		t.Fatalf("a diff with upserts and deletes makes %d statements, want 2", len(stmts))
	}
}
