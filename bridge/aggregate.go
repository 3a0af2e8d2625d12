package bridge

import (
	"errors"
	"fmt"

	"github.com/patina-db/patina/regional"
)

// SubscriptionQuery is what the bridge follows on a regional agent: one
// row per (machine, check), or one row with null check columns for a
// machine without checks.
const SubscriptionQuery = `SELECT m.id, m.app, m.state, c.name, c.status FROM machines m LEFT JOIN machine_checks c ON c.machine_id = m.id`

// Counts is one app's presence in the region, as app_regions holds it.
type Counts struct {
	// Machines counts the app's machines not in state destroyed.
	Machines int64
	// Healthy counts its started machines whose every check passes.
	Healthy int64
}

// resultRow is one row of the subscription, decoded.
type resultRow struct {
	machine, app, state string
	hasCheck            bool // false on a machine's null-extended row
	passing             bool
}

// machine is what the rows of one machine add up to.
type machine struct {
	app, state string
	rows       int // result rows of the machine
	notPassing int // its checks whose status is not passing
}

// counted and healthy are regional.Machine's rules, applied to the rows.
func (m *machine) counted() bool { return m.state != regional.StateDestroyed }
func (m *machine) healthy() bool { return m.state == regional.StateStarted && m.notPassing == 0 }

// Aggregates turns the rows of the subscription into per-app counts,
// incrementally: each row event costs O(1). It is a plain data structure;
// the caller serializes access.
type Aggregates struct {
	rows     map[int64]resultRow
	machines map[string]*machine
	apps     map[string]Counts
}

// NewAggregates returns empty aggregates.
func NewAggregates() *Aggregates {
	return &Aggregates{rows: map[int64]resultRow{}, machines: map[string]*machine{}, apps: map[string]Counts{}}
}

// ErrBadRow marks a row Put leaves out of the counts: one whose cells
// are not what a machine row holds (an app stored as a blob, say). It
// says nothing of the other rows, which go on being counted.
var ErrBadRow = errors.New("not a machine row")

// Put records result row rowid (an initial row, an insert or an update).
// A row that does not decode is left out, as if deleted, and reported
// with ErrBadRow.
func (a *Aggregates) Put(rowid int64, cells []any) error {
	r, err := decodeRow(cells)
	if err != nil {
		a.Delete(rowid)
		return fmt.Errorf("row %d: %w: %w", rowid, ErrBadRow, err)
	}
	a.Delete(rowid)
	m := a.machines[r.machine]
	if m == nil {
		m = &machine{}
		a.machines[r.machine] = m
	} else {
		a.contribute(m, -1)
	}
	// The latest row of a machine says its app and state: the rows of one
	// machine agree once a transaction's events have all arrived.
	m.app, m.state = r.app, r.state
	m.rows++
	if r.hasCheck && !r.passing {
		m.notPassing++
	}
	a.rows[rowid] = r
	a.contribute(m, +1)
	return nil
}

// Delete forgets result row rowid; unknown rows are ignored.
func (a *Aggregates) Delete(rowid int64) {
	r, ok := a.rows[rowid]
	if !ok {
		return
	}
	delete(a.rows, rowid)
	m := a.machines[r.machine]
	a.contribute(m, -1)
	m.rows--
	if r.hasCheck && !r.passing {
		m.notPassing--
	}
	if m.rows == 0 {
		delete(a.machines, r.machine)
		return
	}
	a.contribute(m, +1)
}

// contribute adds (sign +1) or removes (-1) a machine's share of its
// app's counts; an app whose counts reach zero is dropped.
func (a *Aggregates) contribute(m *machine, sign int64) {
	var c Counts
	if m.counted() {
		c.Machines = 1
	}
	if m.healthy() {
		c.Healthy = 1
	}
	if c == (Counts{}) {
		return
	}
	cur := a.apps[m.app]
	cur.Machines += sign * c.Machines
	cur.Healthy += sign * c.Healthy
	if cur == (Counts{}) {
		delete(a.apps, m.app)
		return
	}
	a.apps[m.app] = cur
}

// Apps returns a copy of the per-app counts: every app with at least
// one machine not destroyed.
func (a *Aggregates) Apps() map[string]Counts {
	out := make(map[string]Counts, len(a.apps))
	for app, c := range a.apps {
		if c.Machines > 0 {
			out[app] = c
		}
	}
	return out
}

// Len is the number of result rows held.
func (a *Aggregates) Len() int { return len(a.rows) }

// decodeRow reads the cells of SubscriptionQuery.
func decodeRow(cells []any) (resultRow, error) {
	if len(cells) != 5 {
		return resultRow{}, fmt.Errorf("%d cells, want 5 (id, app, state, check name, check status)", len(cells))
	}
	var r resultRow
	var ok bool
	if r.machine, ok = cells[0].(string); !ok {
		return resultRow{}, fmt.Errorf("machine id %v: not text", cells[0])
	}
	if r.app, ok = cells[1].(string); !ok {
		return resultRow{}, fmt.Errorf("machine %q: app %v: not text", r.machine, cells[1])
	}
	if r.state, ok = cells[2].(string); !ok {
		return resultRow{}, fmt.Errorf("machine %q: state %v: not text", r.machine, cells[2])
	}
	if cells[3] != nil {
		r.hasCheck = true
		status, _ := cells[4].(string)
		r.passing = status == regional.CheckPassing
	}
	return r, nil
}
