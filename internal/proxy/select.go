package proxy

import "slices"

// candidates returns up to n machines to try, in order. The nearest
// region's machines come first, fewest requests in flight first, ties
// taken in turn from turn; then the next region's, and so on. Machines
// marked down (now, unix nanoseconds, before their mark ends) come after
// every other, nearest first: a last resort, never skipped.
func (v *view) candidates(n int, turn uint32, now int64, out []*target) []*target {
	for pass := range 2 {
		wantDown := pass == 1
		for _, ms := range v.regions {
			for len(out) < n {
				best := pickLeastLoaded(ms, turn, now, wantDown, out)
				if best == nil {
					break
				}
				out = append(out, best)
			}
			if len(out) == n {
				return out
			}
		}
	}
	return out
}

// pickLeastLoaded returns the machine of ms with the fewest requests in
// flight among those not yet in taken and down or not as wantDown says;
// among equals the first from position turn on wins. nil when none is
// left.
func pickLeastLoaded(ms []*target, turn uint32, now int64, wantDown bool, taken []*target) *target {
	var best *target
	var bestLoad int64
	start := int(turn % uint32(len(ms)))
	for i := range ms {
		t := ms[(start+i)%len(ms)]
		if (t.st.downUntil.Load() > now) != wantDown || slices.Contains(taken, t) {
			continue
		}
		if load := t.st.inflight.Load(); best == nil || load < bestLoad {
			best, bestLoad = t, load
		}
	}
	return best
}
