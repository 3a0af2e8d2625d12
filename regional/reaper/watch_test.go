package reaper

import (
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestStaleRules: a host is stale once its stamp has stood still for
// forgetAfter by the local clock, whatever the stamp says; nothing is
// stale unless a strict majority, and at least two, move.
func TestStaleRules(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		forget := time.Minute
		t0 := time.Unix(1_700_000_000, 0)
		var w Watch
		n := rapid.IntRange(1, 9).Draw(t, "hosts")
		stamps := map[string]Seen{}
		for i := range n {
			// Stamps are the hosts' own clocks: anything, skewed or not.
			stamps[string(rune('a'+i))] = Seen{At: rapid.Int64().Draw(t, "stamp"), Interval: 10 * time.Second}
		}
		w.Observe(stamps, t0)
		// Some hosts keep publishing (their stamps move), others stop.
		moving := map[string]bool{}
		for h := range stamps {
			moving[h] = rapid.Bool().Draw(t, "moves "+h)
		}
		elapsed := time.Duration(rapid.IntRange(0, 180).Draw(t, "seconds")) * time.Second
		for s := time.Duration(0); s <= elapsed; s += 10 * time.Second {
			next := map[string]Seen{}
			for h, v := range stamps {
				if moving[h] {
					v.At++
				}
				next[h] = v
			}
			stamps = next
			w.Observe(stamps, t0.Add(s))
		}
		now := t0.Add(elapsed)
		stale, current := w.Stale(now, forget, 0)
		var still []string
		fresh := 0
		for h, m := range moving {
			if !m && elapsed >= forget {
				still = append(still, h)
			} else {
				fresh++
			}
		}
		slices.Sort(still)
		wantCurrent := fresh*2 > n && fresh >= 2
		if current != wantCurrent {
			t.Fatalf("current %v with %d of %d fresh", current, fresh, n)
		}
		if !current && len(stale) > 0 {
			t.Fatalf("not current, yet stale %v", stale)
		}
		if current && !slices.Equal(stale, still) {
			t.Fatalf("stale %v, want %v", stale, still)
		}
	})
}

// TestWatchForgetsRowsThatLeft: a host whose row is gone is no longer
// watched, and one that comes back starts fresh.
func TestWatchForgetsRowsThatLeft(t *testing.T) {
	var w Watch
	t0 := time.Unix(1_700_000_000, 0)
	at := func(vals ...int64) map[string]Seen {
		m := map[string]Seen{}
		for i, v := range vals {
			if v != 0 {
				m[string(rune('a'+i))] = Seen{At: v}
			}
		}
		return m
	}
	w.Observe(at(1, 1, 1), t0)
	w.Observe(at(2, 2), t0.Add(2*time.Minute))
	if stale, current := w.Stale(t0.Add(2*time.Minute), time.Minute, 0); !current || len(stale) != 0 {
		t.Fatalf("stale %v current %v after c's row left", stale, current)
	}
	w.Observe(at(3, 3, 1), t0.Add(3*time.Minute))
	if stale, _ := w.Stale(t0.Add(3*time.Minute+30*time.Second), time.Minute, 0); len(stale) != 0 {
		t.Fatalf("c came back with its old stamp and is stale at once: %v", stale)
	}
}

// TestSlowHostsGetThreeIntervals: a host that re-publishes less often
// than forgetAfter allows is given three of its own intervals.
func TestSlowHostsGetThreeIntervals(t *testing.T) {
	var w Watch
	t0 := time.Unix(1_700_000_000, 0)
	for s := 0; s <= 200; s += 10 {
		w.Observe(map[string]Seen{"a": {At: int64(s)}, "b": {At: int64(s)}, "slow": {At: 1, Interval: time.Minute}}, t0.Add(time.Duration(s)*time.Second))
		stale, _ := w.Stale(t0.Add(time.Duration(s)*time.Second), 30*time.Second, 0)
		if want := s >= 180; (len(stale) == 1) != want {
			t.Fatalf("at %ds: stale %v", s, stale)
		}
	}
}

// TestSilentCountsMissedRepublishes: a host is silent once three of its
// intervals pass without its stamp moving, well before it is stale.
func TestSilentCountsMissedRepublishes(t *testing.T) {
	var w Watch
	t0 := time.Unix(1_700_000_000, 0)
	w.Observe(map[string]Seen{"a": {At: 1, Interval: 10 * time.Second}, "b": {At: 1, Interval: 10 * time.Second}}, t0)
	w.Observe(map[string]Seen{"a": {At: 2, Interval: 10 * time.Second}, "b": {At: 1, Interval: 10 * time.Second}}, t0.Add(25*time.Second))
	if n := w.Silent(t0.Add(29 * time.Second)); n != 0 {
		t.Fatalf("%d silent after 29 s", n)
	}
	if n := w.Silent(t0.Add(30 * time.Second)); n != 1 {
		t.Fatalf("%d silent after 30 s, want b", n)
	}
}
