package crdt

import "sort"

// Range is an inclusive range of versions.
type Range struct{ Start, End uint64 }

// RangeSet is a set of versions kept as sorted, disjoint, non-adjacent
// ranges: inserting 1..3 then 4..5 leaves the single range 1..5.
type RangeSet struct {
	ranges []Range
}

// Ranges returns the ranges in ascending order. The slice is a copy.
func (s *RangeSet) Ranges() []Range { return append([]Range(nil), s.ranges...) }

// Len is the number of ranges, not of versions.
func (s *RangeSet) Len() int { return len(s.ranges) }

// Max is the highest version in the set, 0 when empty.
func (s *RangeSet) Max() uint64 {
	if len(s.ranges) == 0 {
		return 0
	}
	return s.ranges[len(s.ranges)-1].End
}

// Count is the number of versions in the set.
func (s *RangeSet) Count() uint64 {
	var n uint64
	for _, r := range s.ranges {
		n += r.End - r.Start + 1
	}
	return n
}

// Contains reports whether v is in the set.
func (s *RangeSet) Contains(v uint64) bool {
	i := sort.Search(len(s.ranges), func(i int) bool { return s.ranges[i].End >= v })
	return i < len(s.ranges) && s.ranges[i].Start <= v
}

// Add inserts v.
func (s *RangeSet) Add(v uint64) { s.AddRange(Range{v, v}) }

// AddRange inserts every version of r, merging overlapping and adjacent
// ranges so the set stays compact. An inverted range is ignored.
func (s *RangeSet) AddRange(r Range) {
	if r.Start > r.End {
		return
	}
	// First range that could touch r: its End+1 >= r.Start.
	i := sort.Search(len(s.ranges), func(i int) bool {
		return s.ranges[i].End == ^uint64(0) || s.ranges[i].End+1 >= r.Start
	})
	j := i
	for j < len(s.ranges) && (r.End == ^uint64(0) || s.ranges[j].Start <= r.End+1) {
		if s.ranges[j].Start < r.Start {
			r.Start = s.ranges[j].Start
		}
		if s.ranges[j].End > r.End {
			r.End = s.ranges[j].End
		}
		j++
	}
	s.ranges = append(s.ranges[:i], append([]Range{r}, s.ranges[j:]...)...)
}

// Gaps returns the versions in 1..Max() that are not in the set.
func (s *RangeSet) Gaps() []Range {
	var gaps []Range
	next := uint64(1)
	for _, r := range s.ranges {
		if r.Start > next {
			gaps = append(gaps, Range{next, r.Start - 1})
		}
		next = r.End + 1
	}
	return gaps
}

// GapCount is the number of versions missing below Max().
func (s *RangeSet) GapCount() uint64 { return s.Max() - s.Count() }

// Equal reports whether both sets hold the same versions.
func (s *RangeSet) Equal(o *RangeSet) bool {
	if len(s.ranges) != len(o.ranges) {
		return false
	}
	for i := range s.ranges {
		if s.ranges[i] != o.ranges[i] {
			return false
		}
	}
	return true
}

// Neighbors returns the ranges that adding v would merge with: the one
// ending at v-1 and the one starting at v+1, when present.
func (s *RangeSet) Neighbors(v uint64) []Range {
	var out []Range
	// End >= v-1 and Start <= v+1, written so that neither end wraps.
	i := sort.Search(len(s.ranges), func(i int) bool { return v == 0 || s.ranges[i].End >= v-1 })
	for ; i < len(s.ranges) && (v == ^uint64(0) || s.ranges[i].Start <= v+1); i++ {
		out = append(out, s.ranges[i])
	}
	return out
}

// Subtract returns the versions in s that are not in o, as ranges in
// ascending order.
func (s *RangeSet) Subtract(o *RangeSet) []Range {
	var out []Range
	j := 0
	for _, r := range s.ranges {
		start := r.Start
		for j < len(o.ranges) && o.ranges[j].End < start {
			j++
		}
		k := j
		covered := false // the rest of r is in o (r.End+1 may not exist)
		for k < len(o.ranges) && o.ranges[k].Start <= r.End {
			if o.ranges[k].Start > start {
				out = append(out, Range{start, o.ranges[k].Start - 1})
			}
			if o.ranges[k].End >= r.End {
				covered = true
				break
			}
			start = o.ranges[k].End + 1
			k++
		}
		if !covered && start <= r.End {
			out = append(out, Range{start, r.End})
		}
	}
	return out
}

// RangeSetOf builds a set from ranges in any order, in O(n log n).
func RangeSetOf(ranges ...Range) *RangeSet {
	sorted := make([]Range, 0, len(ranges))
	for _, r := range ranges {
		if r.Start <= r.End {
			sorted = append(sorted, r)
		}
	}
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Start < sorted[j].Start })
	s := &RangeSet{}
	for _, r := range sorted {
		if n := len(s.ranges); n > 0 && (s.ranges[n-1].End == ^uint64(0) || s.ranges[n-1].End+1 >= r.Start) {
			s.ranges[n-1].End = max(s.ranges[n-1].End, r.End)
			continue
		}
		s.ranges = append(s.ranges, r)
	}
	return s
}

// HeadAndGaps builds the set 1..head minus the gaps, the form in which a
// peer announces what it knows.
func HeadAndGaps(head uint64, gaps []Range) *RangeSet {
	s := &RangeSet{}
	if head == 0 {
		return s
	}
	s.AddRange(Range{1, head})
	if len(gaps) == 0 {
		return s
	}
	return RangeSetOf(s.Subtract(RangeSetOf(gaps...))...)
}

// Prefix is the highest v such that 1..v are all in the set, 0 if 1 is not.
func (s *RangeSet) Prefix() uint64 {
	if len(s.ranges) == 0 || s.ranges[0].Start > 1 {
		return 0
	}
	return s.ranges[0].End
}

// DropThrough removes every version ≤ v.
func (s *RangeSet) DropThrough(v uint64) {
	i := 0
	for i < len(s.ranges) && s.ranges[i].End <= v {
		i++
	}
	s.ranges = s.ranges[i:]
	if len(s.ranges) > 0 && s.ranges[0].Start <= v {
		s.ranges[0].Start = v + 1
	}
}

// RangeChanges compares two sorted, disjoint lists of ranges, before and
// after, and returns the ranges of before that are not in after exactly
// (gone) and those of after that are not in before exactly (added). A
// stored copy of before becomes after by removing gone and adding added.
func RangeChanges(before, after []Range) (gone, added []Range) {
	i, j := 0, 0
	for i < len(before) || j < len(after) {
		switch {
		case j == len(after) || (i < len(before) && before[i].Start < after[j].Start):
			gone = append(gone, before[i])
			i++
		case i == len(before) || after[j].Start < before[i].Start:
			added = append(added, after[j])
			j++
		case before[i] == after[j]:
			i++
			j++
		default: // same start, other end
			gone = append(gone, before[i])
			added = append(added, after[j])
			i++
			j++
		}
	}
	return gone, added
}
