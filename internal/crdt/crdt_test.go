package crdt

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"pgregory.net/rapid"
)

func genValue() *rapid.Generator[Value] {
	return rapid.OneOf(
		rapid.Just(NullValue()),
		rapid.Map(rapid.Int64(), IntValue),
		rapid.Map(rapid.Float64(), RealValue),
		rapid.Map(rapid.SampledFrom([]float64{0, 1, -1, 2.5, math.NaN(), math.Inf(1), math.Inf(-1), 9.223372036854775807e18}), RealValue),
		rapid.Map(rapid.SampledFrom([]int64{0, 1, -1, 2, math.MaxInt64, math.MinInt64}), IntValue),
		rapid.Map(rapid.String(), TextValue),
		rapid.Map(rapid.SliceOf(rapid.Byte()), BlobValue),
	)
}

func TestPKRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		vals := rapid.SliceOfN(genValue(), 1, 5).Draw(t, "pk")
		packed := PackPK(vals)
		got, err := UnpackPK(packed)
		if err != nil {
			t.Fatalf("unpack: %v", err)
		}
		if len(got) != len(vals) {
			t.Fatalf("got %d values, want %d", len(got), len(vals))
		}
		for i := range vals {
			if !got[i].Equal(vals[i]) {
				t.Fatalf("value %d: got %v want %v", i, got[i], vals[i])
			}
		}
		if !bytes.Equal(PackPK(got), packed) {
			t.Fatal("packing is not canonical")
		}
	})
}

func TestUnpackPKGarbage(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		b := rapid.SliceOf(rapid.Byte()).Draw(t, "bytes")
		vals, err := UnpackPK(b) // must not panic
		if err == nil && !bytes.Equal(PackPK(vals), b) {
			t.Fatalf("accepted non-canonical input %x", b)
		}
	})
	for _, b := range [][]byte{nil, {0}, {1}, {1, 9}, {1, 3, 5, 'a'}, {1, 0, 0},
		{0x81, 0x00, tagText, 1, 'a'}, // the count, over-long
		{1, tagText, 0x81, 0x00, 'a'}, // a length, over-long
		{1, tagText, 0x80, 0x00},      // a zero length, over-long
	} {
		if _, err := UnpackPK(b); err == nil {
			t.Errorf("UnpackPK(%x) accepted garbage", b)
		}
	}
	// Every key has one packed form: the count of a valid key, written in
	// one more byte than it takes, is refused.
	rapid.Check(t, func(t *rapid.T) {
		packed := PackPK(rapid.SliceOfN(genValue(), 1, 4).Draw(t, "values"))
		n, k := binary.Uvarint(packed)
		long := append(binary.AppendUvarint(nil, n), packed[k:]...)
		long[k-1] |= 0x80
		long = append(long[:k], append([]byte{0}, long[k:]...)...)
		if v, kk := binary.Uvarint(long); v != n || kk != k+1 {
			t.Fatalf("test's own over-long count: %d in %d bytes", v, kk)
		}
		if _, err := UnpackPK(long); err == nil {
			t.Fatalf("accepted %x, an over-long spelling of %x", long, packed)
		}
	})
}

func TestCompareValuesIsTotalOrder(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		a, b, c := genValue().Draw(t, "a"), genValue().Draw(t, "b"), genValue().Draw(t, "c")
		if CompareValues(a, b) != -CompareValues(b, a) {
			t.Fatalf("not antisymmetric: %v %v", a, b)
		}
		if CompareValues(a, b) <= 0 && CompareValues(b, c) <= 0 && CompareValues(a, c) > 0 {
			t.Fatalf("not transitive: %v %v %v", a, b, c)
		}
		if CompareValues(a, b) == 0 && a.Kind != b.Kind {
			t.Fatalf("distinct storage classes compare equal: %v %v", a, b)
		}
	})
}

func TestCompareValuesTable(t *testing.T) {
	ordered := []Value{NullValue(), RealValue(math.NaN()), IntValue(math.MinInt64), RealValue(-1.5), IntValue(1), RealValue(1), RealValue(1.5),
		IntValue(2), IntValue(math.MaxInt64), RealValue(math.Inf(1)), TextValue(""), TextValue("a"), TextValue("b"), BlobValue(nil), BlobValue([]byte("a"))}
	for i := range ordered {
		for j := range ordered {
			want := 0
			if i < j {
				want = -1
			} else if i > j {
				want = 1
			}
			if got := CompareValues(ordered[i], ordered[j]); got != want {
				t.Errorf("CompareValues(%v, %v) = %d, want %d", ordered[i], ordered[j], got, want)
			}
		}
	}
}

func TestDecideRow(t *testing.T) {
	cases := []struct {
		local, remote uint64
		want          RowAction
	}{
		{0, 1, RowNewLife}, // never seen: insert
		{0, 2, RowDelete},  // never seen, deleted elsewhere: keep the tombstone
		{1, 1, RowSameLife},
		{1, 2, RowDelete},
		{2, 1, RowIgnore}, // a smaller life never resurrects a deleted row
		{3, 2, RowIgnore}, // a smaller delete never deletes a larger life
		{2, 2, RowIgnore}, // equal delete causal lengths are a no-op
		{2, 3, RowNewLife},
		{1, 5, RowNewLife}, // a larger causal length wins over everything
		{5, 4, RowIgnore},
	}
	for _, c := range cases {
		if got := DecideRow(c.local, c.remote); got != c.want {
			t.Errorf("DecideRow(%d, %d) = %d, want %d", c.local, c.remote, got, c.want)
		}
	}
}

func TestCellWins(t *testing.T) {
	lo, hi := ActorID{1}, ActorID{2}
	cases := []struct {
		name          string
		local, remote Cell
		want          bool
	}{
		{"higher col_version", Cell{1, IntValue(9), hi}, Cell{2, IntValue(1), lo}, true},
		{"lower col_version", Cell{3, IntValue(1), lo}, Cell{2, IntValue(9), hi}, false},
		{"unwritten cell loses", Cell{0, NullValue(), ActorID{}}, Cell{1, NullValue(), lo}, true},
		{"tie: greater value", Cell{1, IntValue(1), hi}, Cell{1, IntValue(2), lo}, true},
		{"tie: smaller value", Cell{1, TextValue("b"), lo}, Cell{1, TextValue("a"), hi}, false},
		{"tie: text beats integer", Cell{1, IntValue(100), hi}, Cell{1, TextValue("1"), lo}, true},
		{"tie: greater actor", Cell{1, IntValue(1), lo}, Cell{1, IntValue(1), hi}, true},
		{"tie: smaller actor", Cell{1, IntValue(1), hi}, Cell{1, IntValue(1), lo}, false},
		{"identical: no-op", Cell{1, IntValue(1), hi}, Cell{1, IntValue(1), hi}, false},
	}
	for _, c := range cases {
		if got := CellWins(c.local, c.remote); got != c.want {
			t.Errorf("%s: CellWins = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestRangeSetModel checks RangeSet against a plain map of versions.
func TestRangeSetModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var s RangeSet
		model := map[uint64]bool{}
		for i, n := 0, rapid.IntRange(0, 40).Draw(t, "n"); i < n; i++ {
			start := rapid.Uint64Range(1, 60).Draw(t, "start")
			end := start + rapid.Uint64Range(0, 5).Draw(t, "len")
			s.AddRange(Range{start, end})
			for v := start; v <= end; v++ {
				model[v] = true
			}
		}
		var max uint64
		for v := range model {
			max = maxU(max, v)
		}
		if s.Max() != max {
			t.Fatalf("Max = %d, want %d", s.Max(), max)
		}
		if s.Count() != uint64(len(model)) {
			t.Fatalf("Count = %d, want %d", s.Count(), len(model))
		}
		for v := uint64(0); v <= max+2; v++ {
			if s.Contains(v) != model[v] {
				t.Fatalf("Contains(%d) = %v", v, s.Contains(v))
			}
		}
		rs := s.Ranges()
		for i := 1; i < len(rs); i++ {
			if rs[i].Start <= rs[i-1].End+1 {
				t.Fatalf("ranges not compacted: %v", rs)
			}
		}
		var gapCount uint64
		for _, g := range s.Gaps() {
			for v := g.Start; v <= g.End; v++ {
				if model[v] {
					t.Fatalf("gap %v contains known version %d", g, v)
				}
				gapCount++
			}
		}
		if gapCount != s.GapCount() || gapCount != max-uint64(len(model)) {
			t.Fatalf("gap count %d, GapCount %d, want %d", gapCount, s.GapCount(), max-uint64(len(model)))
		}
	})
}

func maxU(a, b uint64) uint64 {
	if a > b {
		return a
	}
	return b
}

func TestChangesetValidate(t *testing.T) {
	pk := PackPK([]Value{TextValue("m1")})
	good := Changeset{Actor: ActorID{1}, Version: 1, Changes: []Change{{Table: "t", PK: pk, Column: "a", Value: IntValue(1), ColVersion: 1, CL: 1}}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	bad := map[string]Changeset{
		"zero actor":        {Version: 1},
		"version 0":         {Actor: ActorID{1}},
		"no table":          {Actor: ActorID{1}, Version: 1, Changes: []Change{{PK: pk, CL: 1}}},
		"cl 0":              {Actor: ActorID{1}, Version: 1, Changes: []Change{{Table: "t", PK: pk}}},
		"cell of deleted":   {Actor: ActorID{1}, Version: 1, Changes: []Change{{Table: "t", PK: pk, Column: "a", CL: 2, ColVersion: 1}}},
		"col_version 0":     {Actor: ActorID{1}, Version: 1, Changes: []Change{{Table: "t", PK: pk, Column: "a", CL: 1}}},
		"bad pk":            {Actor: ActorID{1}, Version: 1, Changes: []Change{{Table: "t", PK: []byte{7}, CL: 1}}},
		"huge cl":           {Actor: ActorID{1}, Version: 1, Changes: []Change{{Table: "t", PK: pk, CL: MaxCounter + 1}}},
		"huge col_version":  {Actor: ActorID{1}, Version: 1, Changes: []Change{{Table: "t", PK: pk, Column: "a", CL: 1, ColVersion: MaxCounter + 1}}},
		"col_version 2⁶³−1": {Actor: ActorID{1}, Version: 1, Changes: []Change{{Table: "t", PK: pk, Column: "a", CL: 1, ColVersion: 1<<63 - 1}}},
		"NaN":               {Actor: ActorID{1}, Version: 1, Changes: []Change{{Table: "t", PK: pk, Column: "a", CL: 1, ColVersion: 1, Value: RealValue(math.NaN())}}},
		"unknown kind":      {Actor: ActorID{1}, Version: 1, Changes: []Change{{Table: "t", PK: pk, Column: "a", CL: 1, ColVersion: 1, Value: Value{Kind: 9}}}},
	}
	for name, cs := range bad {
		if err := cs.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestRangeSetSubtractModel(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		draw := func(label string) (*RangeSet, map[uint64]bool) {
			s, m := &RangeSet{}, map[uint64]bool{}
			for i, n := 0, rapid.IntRange(0, 8).Draw(t, label); i < n; i++ {
				a := rapid.Uint64Range(1, 40).Draw(t, label+"a")
				b := a + rapid.Uint64Range(0, 6).Draw(t, label+"b")
				s.AddRange(Range{a, b})
				for v := a; v <= b; v++ {
					m[v] = true
				}
			}
			return s, m
		}
		s, sm := draw("s")
		o, om := draw("o")
		diff := RangeSetOf(s.Subtract(o)...)
		for v := uint64(0); v <= 50; v++ {
			if want := sm[v] && !om[v]; diff.Contains(v) != want {
				t.Fatalf("version %d: in difference %v, want %v (s=%v o=%v)", v, diff.Contains(v), want, s.Ranges(), o.Ranges())
			}
		}
		head := rapid.Uint64Range(0, 40).Draw(t, "head")
		hg := HeadAndGaps(head, o.Ranges())
		for v := uint64(0); v <= 50; v++ {
			if want := v >= 1 && v <= head && !om[v]; hg.Contains(v) != want {
				t.Fatalf("HeadAndGaps: version %d", v)
			}
		}
	})
}

func TestRangeSetOfMatchesAddRange(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var ranges []Range
		var s RangeSet
		for i, n := 0, rapid.IntRange(0, 20).Draw(t, "n"); i < n; i++ {
			a := rapid.Uint64Range(0, 50).Draw(t, "a")
			r := Range{a, a + rapid.Uint64Range(0, 5).Draw(t, "len")}
			if rapid.Bool().Draw(t, "inverted") {
				r = Range{r.End + 1, r.Start}
			}
			ranges = append(ranges, r)
			s.AddRange(r)
		}
		if got := RangeSetOf(ranges...); !got.Equal(&s) {
			t.Fatalf("RangeSetOf %v, AddRange %v", got.Ranges(), s.Ranges())
		}
	})
}

func TestRangeSetPrefixAndDrop(t *testing.T) {
	s := RangeSetOf(Range{1, 5}, Range{8, 10}, Range{12, 12})
	if s.Prefix() != 5 {
		t.Fatalf("prefix %d", s.Prefix())
	}
	s.DropThrough(9)
	if got := s.Ranges(); len(got) != 2 || got[0] != (Range{10, 10}) || got[1] != (Range{12, 12}) {
		t.Fatalf("after DropThrough(9): %v", got)
	}
	if s.Prefix() != 0 {
		t.Fatal("prefix of a set without 1")
	}
}

// TestRangeChanges: removing gone from before and adding added gives
// after, and nothing both before and after is touched.
func TestRangeChanges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var s RangeSet
		for _, v := range rapid.SliceOf(rapid.Uint64Range(1, 60)).Draw(t, "before") {
			s.Add(v)
		}
		before := s.Ranges()
		for _, v := range rapid.SliceOf(rapid.Uint64Range(1, 80)).Draw(t, "added") {
			s.Add(v)
		}
		after := s.Ranges()
		gone, added := RangeChanges(before, after)
		rows := map[uint64]Range{}
		for _, r := range before {
			rows[r.Start] = r
		}
		for _, r := range gone {
			if rows[r.Start] != r {
				t.Fatalf("gone %v was not stored", r)
			}
			delete(rows, r.Start)
		}
		for _, r := range added {
			if _, ok := rows[r.Start]; ok {
				t.Fatalf("added %v over a stored range", r)
			}
			rows[r.Start] = r
		}
		if len(rows) != len(after) {
			t.Fatalf("stored %v, want %v", rows, after)
		}
		for _, r := range after {
			if rows[r.Start] != r {
				t.Fatalf("stored %v, want %v", rows, after)
			}
		}
		for _, r := range gone {
			for _, a := range after {
				if r == a {
					t.Fatalf("%v is in both and was removed", r)
				}
			}
		}
	})
}

// TestPackValuesHasNoKeyBound: lists of values (a query's arguments, a
// row's cells) round-trip at any length, none included, where a key from
// a peer is held to 1..64 values.
func TestPackValuesHasNoKeyBound(t *testing.T) {
	for _, n := range []int{0, 1, 64, 65, 1000} {
		vals := make([]Value, n)
		for i := range vals {
			vals[i] = IntValue(int64(i))
		}
		got, err := UnpackValues(PackValues(vals))
		if err != nil || len(got) != n {
			t.Fatalf("%d values: %d back, %v", n, len(got), err)
		}
		for i := range got {
			if got[i].Int != int64(i) {
				t.Fatalf("%d values: value %d is %v", n, i, got[i])
			}
		}
		if _, err := UnpackPK(PackPK(vals)); (err == nil) != (n >= 1 && n <= 64) {
			t.Fatalf("UnpackPK of %d values: %v", n, err)
		}
	}
	// A count past the bytes that follow is refused, not allocated.
	if _, err := UnpackValues([]byte{0xff, 0xff, 0xff, 0xff, 0x0f}); !errors.Is(err, ErrBadPK) {
		t.Fatalf("a huge count: %v", err)
	}
}

// TestRangeSetSubtractAtMaxVersion: a range ending at the largest version
// (a peer may announce any head) must not wrap around to version 0.
func TestRangeSetSubtractAtMaxVersion(t *testing.T) {
	const top = ^uint64(0)
	s := RangeSetOf(Range{1, top})
	o := RangeSetOf(Range{5, top})
	if got, want := s.Subtract(o), []Range{{1, 4}}; len(got) != 1 || got[0] != want[0] {
		t.Fatalf("{1..max} - {5..max} = %v, want %v", got, want)
	}
	// A peer announcing head max with its top version missing knows 1..max-1.
	hg := HeadAndGaps(top, []Range{{top, top}})
	if hg.Contains(top) || !hg.Contains(1) || hg.Contains(0) {
		t.Fatalf("HeadAndGaps(max, [max]) = %v", hg.Ranges())
	}
}

// TestRangeSetNeighborsAtMaxVersion: the ranges that adding v merges with,
// next to the largest version.
func TestRangeSetNeighborsAtMaxVersion(t *testing.T) {
	const top = ^uint64(0)
	if got := RangeSetOf(Range{5, top}).Neighbors(4); len(got) != 1 || got[0] != (Range{5, top}) {
		t.Fatalf("Neighbors(4) of {5..max} = %v", got)
	}
	if got := RangeSetOf(Range{1, top - 1}).Neighbors(top); len(got) != 1 || got[0] != (Range{1, top - 1}) {
		t.Fatalf("Neighbors(max) of {1..max-1} = %v", got)
	}
}
