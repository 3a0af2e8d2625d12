package crdt

import (
	"testing"

	"pgregory.net/rapid"
)

// modelRow is a row under the merge rules alone: a causal length and, in
// the current life, one cell per column.
type modelRow struct {
	cl    uint64
	cells map[string]Cell
}

// mergeInto applies one change the way the store does.
func (r *modelRow) mergeInto(c Change, site ActorID) {
	switch DecideRow(r.cl, c.CL) {
	case RowIgnore:
	case RowDelete:
		r.cl, r.cells = c.CL, map[string]Cell{}
	case RowNewLife:
		r.cl, r.cells = c.CL, map[string]Cell{}
		fallthrough
	case RowSameLife:
		if c.IsSentinel() {
			return
		}
		remote := Cell{ColVersion: c.ColVersion, Value: c.Value, Site: site}
		if local, ok := r.cells[c.Column]; !ok || CellWins(local, remote) {
			r.cells[c.Column] = remote
		}
	}
}

func (r *modelRow) equal(o *modelRow) bool {
	if r.cl != o.cl || len(r.cells) != len(o.cells) {
		return false
	}
	for k, c := range r.cells {
		oc, ok := o.cells[k]
		if !ok || oc.ColVersion != c.ColVersion || oc.Site != c.Site || !oc.Value.Equal(c.Value) {
			return false
		}
	}
	return true
}

type siteChange struct {
	c    Change
	site ActorID
}

// TestMergeRulesOrderIndependent: any set of changes to one row, applied
// in any order and with repeats, leaves the same row. This is the
// commutativity, associativity and idempotence the store relies on.
func TestMergeRulesOrderIndependent(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		gen := rapid.Custom(func(t *rapid.T) siteChange {
			c := Change{CL: rapid.Uint64Range(1, 5).Draw(t, "cl")}
			if c.CL%2 == 1 && rapid.IntRange(0, 3).Draw(t, "kind") > 0 {
				c.Column = rapid.SampledFrom([]string{"a", "b"}).Draw(t, "col")
				c.ColVersion = rapid.Uint64Range(1, 3).Draw(t, "cv")
				c.Value = rapid.SampledFrom([]Value{NullValue(), IntValue(1), RealValue(1), TextValue("x"), BlobValue([]byte("x"))}).Draw(t, "v")
			}
			return siteChange{c, rapid.SampledFrom([]ActorID{{1}, {2}, {3}}).Draw(t, "site")}
		})
		changes := rapid.SliceOfN(gen, 1, 12).Draw(t, "changes")
		apply := func(order []siteChange) *modelRow {
			r := &modelRow{cells: map[string]Cell{}}
			for _, sc := range order {
				r.mergeInto(sc.c, sc.site)
			}
			return r
		}
		want := apply(changes)
		other := rapid.Permutation(changes).Draw(t, "order")
		other = append(other, rapid.SliceOfN(rapid.SampledFrom(changes), 0, 5).Draw(t, "repeats")...)
		if got := apply(other); !got.equal(want) {
			t.Fatalf("order changed the outcome: %+v vs %+v", got, want)
		}
	})
}
