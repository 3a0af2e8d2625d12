package proxy

import (
	"slices"
	"testing"
)

func ids(ts []*target) []string {
	var out []string
	for _, t := range ts {
		out = append(out, t.id)
	}
	return out
}

func machines(region string, names ...string) []*target {
	var out []*target
	for _, n := range names {
		out = append(out, &target{id: n, region: region, st: &machineState{}})
	}
	return out
}

// TestCandidates: nearest region first, least loaded first within a
// region, ties in turn, machines marked down last.
func TestCandidates(t *testing.T) {
	ams, iad, syd := machines("ams", "a1", "a2", "a3"), machines("iad", "i1", "i2"), machines("syd", "s1")
	v := &view{regions: [][]*target{ams, iad, syd}}
	now := int64(1000)

	if got := ids(v.candidates(3, 0, now, nil)); !slices.Equal(got, []string{"a1", "a2", "a3"}) {
		t.Fatalf("idle, turn 0: %v", got)
	}
	if got := ids(v.candidates(3, 1, now, nil)); !slices.Equal(got, []string{"a2", "a3", "a1"}) {
		t.Fatalf("idle, turn 1: %v", got)
	}
	if got := ids(v.candidates(5, 2, now, nil)); !slices.Equal(got, []string{"a3", "a1", "a2", "i1", "i2"}) {
		t.Fatalf("five: %v", got)
	}
	ams[0].st.inflight.Store(2)
	ams[1].st.inflight.Store(1)
	for turn := range uint32(3) {
		if got := ids(v.candidates(3, turn, now, nil)); !slices.Equal(got, []string{"a3", "a2", "a1"}) {
			t.Fatalf("loaded, turn %d: %v", turn, got)
		}
	}
	// Down until after now: after every other machine, in region order.
	ams[2].st.downUntil.Store(now + 1)
	iad[0].st.downUntil.Store(now + 1)
	if got := ids(v.candidates(10, 0, now, nil)); !slices.Equal(got, []string{"a2", "a1", "i2", "s1", "a3", "i1"}) {
		t.Fatalf("with down machines: %v", got)
	}
	// A mark that has ended counts for nothing.
	if got := ids(v.candidates(1, 0, now+1, nil)); !slices.Equal(got, []string{"a3"}) {
		t.Fatalf("mark ended: %v", got)
	}
	if got := (&view{}).candidates(3, 0, now, nil); len(got) != 0 {
		t.Fatalf("no machines: %v", got)
	}
}
