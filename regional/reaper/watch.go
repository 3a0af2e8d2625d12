package reaper

import (
	"sort"
	"time"
)

// Watch is what one agent has observed of the hosts table: for every
// host, its last seen_at and when, by the local clock, that value first
// appeared here. The zero Watch is ready to use.
type Watch struct {
	hosts map[string]observed
}

type observed struct {
	Seen
	changed time.Time // local time the stamp was first seen at this value
}

// Seen is a host's row: its stamp and its re-publish interval.
type Seen struct {
	At       int64 // seen_at, by the host's clock (only compared for change)
	Interval time.Duration
}

// Observe records the table as read at now: a host whose stamp moved
// (or that is new) is fresh as of now; hosts no longer in the table are
// dropped.
func (w *Watch) Observe(rows map[string]Seen, now time.Time) {
	if w.hosts == nil {
		w.hosts = map[string]observed{}
	}
	for name, seen := range rows {
		if o, ok := w.hosts[name]; ok && o.At == seen.At {
			o.Interval = seen.Interval
			w.hosts[name] = o
			continue
		}
		w.hosts[name] = observed{Seen: seen, changed: now}
	}
	for name := range w.hosts {
		if _, ok := rows[name]; !ok {
			delete(w.hosts, name)
		}
	}
}

// Stale returns, sorted, the hosts whose stamp has not moved for
// forgetAfter by now, or for three of the host's own re-publish
// intervals if that is longer (a host is never forgotten for missing
// one or two), plus extra. current is false, and stale empty, when fewer
// than a strict majority of the hosts have moved within that time
// (without extra): then this agent's view of the region is in doubt (it
// may be the one cut off), and nothing may be forgotten on its word. At
// least two hosts must be seen publishing too, so a region of one or
// two hosts never forgets automatically.
func (w *Watch) Stale(now time.Time, forgetAfter, extra time.Duration) (stale []string, current bool) {
	fresh := 0
	for name, o := range w.hosts {
		still, limit := now.Sub(o.changed), max(forgetAfter, 3*o.Interval)
		switch {
		case still < limit:
			fresh++
		case still >= limit+extra:
			stale = append(stale, name)
		}
	}
	if fresh*2 <= len(w.hosts) || fresh < 2 {
		return nil, false
	}
	sort.Strings(stale)
	return stale, true
}

// Silent counts the hosts whose stamp has not moved for three of their
// re-publish intervals (at least a second) by now: hosts that missed
// some, whether or not they are stale enough to forget yet.
func (w *Watch) Silent(now time.Time) int {
	n := 0
	for _, o := range w.hosts {
		if now.Sub(o.changed) >= 3*max(o.Interval, time.Second) {
			n++
		}
	}
	return n
}
