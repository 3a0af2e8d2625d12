package store

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/patina-db/patina/internal/crdt"
)

// Applying changesets works a table at a time: read the clocks of all
// their rows with one statement (and, with a second, the current values
// of the rows where a col_version tie must be broken by value), decide
// each row with the crdt rules, then write the outcome grouped into
// multi-row statements. Statement count stays small whatever the number
// of rows, and whatever the number of changesets applied together: a
// batch of one-row versions costs a few statements, not a few per
// version.

// rowClock is a row's clock as stored.
type rowClock struct {
	exists bool
	cl     int64
	clSD   int64       // packSD of the version the causal length is credited to
	cells  []cellClock // per value column

	values []any // the row's current values, read only when a tie needs them
}

type cellClock struct{ ver, sd int64 }

// uniform reports whether the row has value columns and every one has
// the same clock (see tableSQL.clockWriteUniform).
func (c *rowClock) uniform() bool {
	if len(c.cells) == 0 {
		return false
	}
	for _, x := range c.cells[1:] {
		if x != c.cells[0] {
			return false
		}
	}
	return true
}

// dataOp is what a changeset does to one data row.
type dataOp uint8

const (
	opNone    dataOp = iota
	opDelete         // a newer, even causal length
	opReplace        // a new life: key and given columns, the rest defaults
	opUpsert         // same life: set the cells that won
)

// rowPlan is the decided outcome for one row.
type rowPlan struct {
	pk      []any
	ord     int64  // site ordinal of the changeset's actor
	version uint64 // the changeset's version
	op      dataOp
	cols    []int // value columns written, by index
	vals    []any
	clock   rowClock
	dirty   bool // clock and version index must be written
	// partial: the clock row exists and only its credit and the clocks of
	// cols change (a same-life update), so it is updated, not rewritten.
	partial bool
}

// rowChanges are one row's changes within a changeset.
type rowChanges struct {
	pk      []byte
	changes []crdt.Change
	// start is where changes begin in the changeset while they are one
	// contiguous stretch of it (as changesets come: a row's sentinel and
	// cells together), so that they are a slice of it and not a copy; -1
	// once they are not.
	start int
}

// rowItem is one row's changes within one changeset of those applied
// together.
type rowItem struct {
	cs  *crdt.Changeset
	ord int64 // the changeset's actor's site ordinal
	rc  *rowChanges
}

// applyVersions applies changesets together: their rows, which must name
// distinct keys, are read, decided and written a table at a time, as if
// they were one changeset whose rows each keep their own actor and
// version. Each row's outcome is what applying its changeset alone would
// give, because no other changeset of the call touches that row. newSites
// are the actors it registered, to forget if the caller rolls back.
//
// A changeset's own fault comes back as an *ApplyError naming the first
// changeset of the table where it was found; with several changesets the
// caller cannot tell which one it was and applies them one by one.
func (s *Store) applyVersions(ctx context.Context, b *applyBatch, tables map[string]*tableSQL, run []*crdt.Changeset) (newSites []crdt.ActorID, err error) {
	var tableOrder []string
	byTable := map[string][]rowItem{}
	for _, cs := range run {
		ord, isNew, err := s.batchSite(ctx, b, cs.Actor)
		if isNew {
			newSites = append(newSites, cs.Actor)
		}
		if err != nil {
			return newSites, err
		}
		byRow := map[rowKey]*rowChanges{}
		for i, c := range cs.Changes {
			k := rowKey{c.Table, string(c.PK)}
			rc := byRow[k]
			switch {
			case rc == nil:
				// Capped: an append below copies rather than write
				// into the changeset.
				rc = &rowChanges{pk: c.PK, changes: cs.Changes[i : i+1 : i+1], start: i}
				byRow[k] = rc
				if _, ok := byTable[c.Table]; !ok {
					tableOrder = append(tableOrder, c.Table)
				}
				byTable[c.Table] = append(byTable[c.Table], rowItem{cs: cs, ord: ord, rc: rc})
			case rc.start >= 0 && rc.start+len(rc.changes) == i:
				rc.changes = cs.Changes[rc.start : i+1 : i+1]
			default:
				rc.start = -1
				rc.changes = append(rc.changes, c)
			}
		}
	}
	for _, name := range tableOrder {
		items := byTable[name]
		first := items[0].cs
		ts := tables[name]
		if ts == nil {
			if s.schema.Tables[name] == nil {
				return newSites, &ApplyError{Actor: first.Actor, Version: first.Version, Err: fmt.Errorf("unknown table %q", name)}
			}
			// Built once per schema and kept (s.tables), not per batch.
			ts = s.tableSQL(name)
			tables[name] = ts
		}
		if err := s.applyTableRows(ctx, b, ts, items); err != nil {
			if e, ok := err.(badChangeError); ok {
				if e.refused {
					return newSites, &ApplyError{Actor: first.Actor, Version: first.Version, Err: fmt.Errorf("%w: %w", ErrRefused, e)}
				}
				return newSites, &ApplyError{Actor: first.Actor, Version: first.Version, Err: e}
			}
			if len(run) == 1 {
				return newSites, fmt.Errorf("apply %s/%d: %w", first.Actor, first.Version, err)
			}
			return newSites, fmt.Errorf("apply %d versions: %w", len(run), err)
		}
	}
	// The versions' bookkeeping is written once for the whole batch
	// (persistBatchBook), not per version.
	return newSites, nil
}

// rowKey identifies a row across tables.
type rowKey struct{ table, pk string }

// badChangeError is a changeset's own fault (as opposed to the node's).
// refused: it will never apply here, whatever the schema becomes.
type badChangeError struct {
	msg     string
	refused bool
}

func (e badChangeError) Error() string { return e.msg }

func badChange(format string, args ...any) error {
	return badChangeError{msg: fmt.Sprintf(format, args...)}
}

func refusedChange(format string, args ...any) error {
	return badChangeError{msg: fmt.Sprintf(format, args...), refused: true}
}

func (s *Store) applyTableRows(ctx context.Context, b *applyBatch, ts *tableSQL, rows []rowItem) error {
	t := ts.t
	keys := make([][]any, len(rows))
	for i, r := range rows {
		vals, err := crdt.UnpackPK(r.rc.pk)
		if err != nil {
			return badChange("table %q: %v", t.Name, err)
		}
		if len(vals) != len(t.PK) {
			return badChange("table %q has a %d-column key, change has %d", t.Name, len(t.PK), len(vals))
		}
		keys[i] = make([]any, len(vals))
		for j, v := range vals {
			if !keyValueFits(t.PK[j], v) {
				return badChange("table %q: key column %q cannot hold %s value %s", t.Name, t.PK[j].Name, v.Kind, v)
			}
			keys[i][j] = v.Go()
		}
	}
	locals, err := s.readClocks(ctx, ts, keys)
	if err != nil {
		return err
	}
	var tieKeys [][]any
	for i, r := range rows {
		if needsValues(ts, locals[string(r.rc.pk)], r.rc.changes) {
			tieKeys = append(tieKeys, keys[i])
		}
	}
	if len(tieKeys) > 0 {
		values, err := s.readValues(ctx, ts, tieKeys)
		if err != nil {
			return err
		}
		for pk, v := range values {
			rc := locals[pk]
			rc.values = v
			locals[pk] = rc
		}
	}
	plans := make([]rowPlan, 0, len(rows))
	for i, r := range rows {
		p, err := s.planRow(ctx, b, ts, r.ord, r.cs, keys[i], locals[string(r.rc.pk)], r.rc.changes)
		if err != nil {
			return err
		}
		if p.dirty {
			plans = append(plans, p)
		}
	}
	if err := s.writePlans(ctx, ts, plans); err != nil {
		return err
	}
	if s.hooks.Rows != nil {
		for _, p := range plans {
			if p.op == opNone {
				continue
			}
			pk := make([]crdt.Value, len(p.pk))
			for i, v := range p.pk {
				pk[i], _ = crdt.FromGo(v)
			}
			b.rows = append(b.rows, RowChange{Table: t.Name, PK: pk, Deleted: p.op == opDelete})
		}
	}
	return nil
}

// keyValueFits refuses key values of a storage class the column does not
// hold (see keyClasses): they would name a different stored key than the
// one they pack to. A changeset read from a store never carries one.
func keyValueFits(c Column, v crdt.Value) bool {
	for _, class := range keyClasses(c) {
		if class == v.Kind.String() {
			return true
		}
	}
	return false
}

// readClocks reads the clocks of the given keys, in chunks.
func (s *Store) readClocks(ctx context.Context, ts *tableSQL, keys [][]any) (map[string]rowClock, error) {
	nVal := len(ts.t.Values)
	out := make(map[string]rowClock, len(keys))
	err := s.readByKeys(ctx, ts, keys, ts.clockRead, 2+2*nVal, func(pk string, cols []any) {
		rc := rowClock{exists: true, cl: asInt(cols[0]), clSD: asInt(cols[1]), cells: make([]cellClock, nVal)}
		for i := range rc.cells {
			rc.cells[i] = cellClock{ver: asInt(cols[2+2*i]), sd: asInt(cols[3+2*i])}
		}
		out[pk] = rc
	})
	if err != nil {
		return nil, fmt.Errorf("read clocks of %q: %w", ts.t.Name, err)
	}
	return out, nil
}

// readValues reads the current values of the given data rows.
func (s *Store) readValues(ctx context.Context, ts *tableSQL, keys [][]any) (map[string][]any, error) {
	out := make(map[string][]any, len(keys))
	err := s.readByKeys(ctx, ts, keys, ts.valuesRead, len(ts.t.Values), func(pk string, cols []any) {
		out[pk] = append([]any(nil), cols...)
	})
	if err != nil {
		return nil, fmt.Errorf("read rows of %q: %w", ts.t.Name, err)
	}
	return out, nil
}

// readByKeys runs query(n) for chunks of keys; each result row starts with
// the key columns, then width more columns, handed to fn by packed key.
func (s *Store) readByKeys(ctx context.Context, ts *tableSQL, keys [][]any, query func(n int) string, width int, fn func(pk string, cols []any)) error {
	nPK := len(ts.t.PK)
	dest := make([]any, nPK+width)
	ptrs := make([]any, len(dest))
	for i := range dest {
		ptrs[i] = &dest[i]
	}
	vals := make([]crdt.Value, nPK)
	for start, end := 0, 0; start < len(keys); start = end {
		end = start + chunkRows(len(keys)-start, nPK)
		args := make([]any, 0, (end-start)*nPK)
		for _, k := range keys[start:end] {
			args = append(args, k...)
		}
		rows, err := s.aint.QueryContext(ctx, query(end-start), args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			if err := rows.Scan(ptrs...); err != nil {
				rows.Close()
				return err
			}
			for i := range vals {
				if vals[i], err = crdt.FromGo(dest[i]); err != nil {
					rows.Close()
					return err
				}
			}
			fn(string(crdt.PackPK(vals)), dest[nPK:])
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	return nil
}

// needsValues reports whether deciding a row's changes compares values:
// some cell of the same life with the local col_version.
func needsValues(ts *tableSQL, local rowClock, changes []crdt.Change) bool {
	if !local.exists || local.cl%2 == 0 {
		return false
	}
	for _, c := range changes {
		if c.IsSentinel() || c.CL != uint64(local.cl) {
			continue
		}
		if i, ok := ts.valueIndex[c.Column]; ok && uint64(local.cells[i].ver) == c.ColVersion {
			return true
		}
	}
	return false
}

// planRow decides what one row's changes do against its local clock.
func (s *Store) planRow(ctx context.Context, b *applyBatch, ts *tableSQL, ord int64, cs *crdt.Changeset, pk []any, local rowClock, changes []crdt.Change) (rowPlan, error) {
	t := ts.t
	p := rowPlan{pk: pk, ord: ord, version: cs.Version}
	// One causal length per row per version; the last cell per column.
	var remoteCL uint64
	hasSentinel := false
	cells := map[int]crdt.Change{}
	var cellOrder []int
	for _, c := range changes {
		if remoteCL != 0 && c.CL != remoteCL {
			return p, badChange("table %q: causal lengths %d and %d for one row", t.Name, remoteCL, c.CL)
		}
		remoteCL = c.CL
		if c.IsSentinel() {
			hasSentinel = true
			continue
		}
		i, ok := ts.valueIndex[c.Column]
		if !ok {
			return p, badChange("table %q has no column %q", t.Name, c.Column)
		}
		if fits, err := s.valueFits(ctx, ts, i, c.Value); err != nil {
			return p, err
		} else if !fits {
			return p, refusedChange("table %q column %q (%s affinity): %s value %s would be stored as another type, which a store never sends", t.Name, c.Column, ts.affinity[i], c.Value.Kind, c.Value)
		}
		if _, seen := cells[i]; !seen {
			cellOrder = append(cellOrder, i)
		}
		cells[i] = c
	}
	if local.cells == nil {
		local.cells = make([]cellClock, len(t.Values))
	}
	if local.values == nil {
		local.values = make([]any, len(t.Values)) // a missing row reads as NULLs
	}
	localCL := uint64(0)
	if local.exists {
		localCL = uint64(local.cl)
	}
	sd := packSD(ord, cs.Version)
	credit := func() bool {
		return hasSentinel && sentinelWins(local, s.siteActor(b, sdSite(local.clSD)), cs.Actor, cs.Version)
	}
	switch crdt.DecideRow(localCL, remoteCL) {
	case crdt.RowIgnore:
		if localCL == remoteCL && credit() {
			local.clSD = sd
			p.dirty = true
		}

	case crdt.RowDelete:
		p.op = opDelete
		local = rowClock{exists: true, cl: int64(remoteCL), clSD: sd, cells: make([]cellClock, len(t.Values))}
		p.dirty = true

	case crdt.RowNewLife:
		next := rowClock{exists: true, cl: int64(remoteCL), clSD: unattributed, cells: make([]cellClock, len(t.Values))}
		if hasSentinel {
			next.clSD = sd
		}
		p.op = opReplace
		p.cols = make([]int, 0, len(cellOrder))
		p.vals = make([]any, 0, len(cellOrder))
		for _, i := range cellOrder {
			c := cells[i]
			p.cols = append(p.cols, i)
			p.vals = append(p.vals, c.Value.Go())
			next.cells[i] = cellClock{ver: int64(c.ColVersion), sd: sd}
		}
		local = next
		p.dirty = true

	case crdt.RowSameLife:
		if credit() {
			local.clSD = sd
			p.dirty = true
		}
		for _, i := range cellOrder {
			c := cells[i]
			lc := local.cells[i]
			if lc.ver > 0 {
				lv, err := crdt.FromGo(local.values[i])
				if err != nil {
					return p, err
				}
				localCell := crdt.Cell{ColVersion: uint64(lc.ver), Value: lv, Site: s.siteActor(b, sdSite(lc.sd))}
				if !crdt.CellWins(localCell, crdt.Cell{ColVersion: c.ColVersion, Value: c.Value, Site: cs.Actor}) {
					continue
				}
			}
			p.cols = append(p.cols, i)
			p.vals = append(p.vals, c.Value.Go())
			local.cells[i] = cellClock{ver: int64(c.ColVersion), sd: sd}
		}
		if len(p.cols) > 0 {
			p.op = opUpsert
			p.dirty = true
		}
		p.partial = true
	}
	p.clock = local
	return p, nil
}

// writePlans writes the decided rows, grouped into multi-row statements:
// deletes, new lives and same-life updates by the set of columns they
// write, then the clocks and the version index.
func (s *Store) writePlans(ctx context.Context, ts *tableSQL, plans []rowPlan) error {
	if len(plans) == 0 {
		return nil
	}
	t := ts.t
	nPK := len(t.PK)
	all := make([]*rowPlan, len(plans))
	for i := range plans {
		all[i] = &plans[i]
	}
	for _, g := range groupPlans(all, func(p *rowPlan) (string, bool) { return planKey(p.op, p.cols), p.op != opNone }) {
		op, cols := g[0].op, g[0].cols
		width := nPK
		if op != opDelete {
			width += len(cols)
		}
		query := map[dataOp]func(int) string{
			opDelete:  ts.dataDelete,
			opReplace: func(n int) string { return ts.dataReplace(cols, n) },
			opUpsert:  func(n int) string { return ts.dataUpsert(cols, n) },
		}[op]
		err := s.execChunks(ctx, g, width, nil, query, func(p *rowPlan, args []any) []any {
			args = append(args, p.pk...)
			if op != opDelete {
				args = append(args, p.vals...)
			}
			return args
		})
		if err != nil {
			if isClientError(err) {
				// A value the schema refuses (a type the column cannot
				// take): the changeset's fault.
				return badChange("table %q: %v", t.Name, err)
			}
			return fmt.Errorf("write %q: %w", t.Name, err)
		}
	}
	// Clocks: whole rows for new lives and deletes, only the changed
	// columns for same-life updates, grouped by those columns.
	whole := groupPlans(all, func(p *rowPlan) (string, bool) {
		if p.clock.uniform() {
			return "u", !p.partial
		}
		return "", !p.partial
	})
	for _, g := range whole {
		width, query := nPK+2+2*len(t.Values), ts.clockWrite
		rowArgs := func(p *rowPlan, args []any) []any {
			args = append(args, p.pk...)
			args = append(args, p.clock.cl, p.clock.clSD)
			for _, c := range p.clock.cells {
				args = append(args, c.ver, c.sd)
			}
			return args
		}
		if g[0].clock.uniform() {
			width, query = nPK+4, ts.clockWriteUniform
			rowArgs = func(p *rowPlan, args []any) []any {
				args = append(args, p.pk...)
				return append(args, p.clock.cl, p.clock.clSD, p.clock.cells[0].ver, p.clock.cells[0].sd)
			}
		}
		err := s.execChunks(ctx, g, width, nil, query, rowArgs)
		if err != nil {
			return fmt.Errorf("write clocks of %q: %w", t.Name, err)
		}
	}
	for _, g := range groupPlans(all, func(p *rowPlan) (string, bool) { return planKey(opNone, p.cols), p.partial }) {
		cols := g[0].cols
		err := s.execChunks(ctx, g, nPK+1+2*len(cols), nil, func(n int) string { return ts.clockUpdate(cols, n) }, func(p *rowPlan, args []any) []any {
			args = append(args, p.pk...)
			args = append(args, p.clock.clSD)
			for _, i := range cols {
				args = append(args, p.clock.cells[i].ver, p.clock.cells[i].sd)
			}
			return args
		})
		if err != nil {
			return fmt.Errorf("update clocks of %q: %w", t.Name, err)
		}
	}
	oneVersion := true
	for _, p := range all[1:] {
		if p.ord != all[0].ord || p.version != all[0].version {
			oneVersion = false
			break
		}
	}
	var err error
	if oneVersion {
		err = s.execChunks(ctx, all, nPK, []any{all[0].ord, int64(all[0].version)}, ts.vxWrite, func(p *rowPlan, args []any) []any {
			return append(args, p.pk...)
		})
	} else {
		err = s.execChunks(ctx, all, nPK+2, nil, ts.vxWriteRows, func(p *rowPlan, args []any) []any {
			args = append(args, p.ord, int64(p.version))
			return append(args, p.pk...)
		})
	}
	if err != nil {
		return fmt.Errorf("index version of %q: %w", t.Name, err)
	}
	return nil
}

// planKey names an operation on a set of columns, for groupPlans.
func planKey(op dataOp, cols []int) string {
	b := make([]byte, 0, 1+len(cols))
	b = append(b, byte(op))
	for _, c := range cols {
		b = binary.AppendUvarint(b, uint64(c))
	}
	return string(b)
}

// groupPlans groups the plans that key selects by their key, in order of
// first appearance.
func groupPlans(plans []*rowPlan, key func(p *rowPlan) (string, bool)) [][]*rowPlan {
	var order []string
	groups := map[string][]*rowPlan{}
	for _, p := range plans {
		k, ok := key(p)
		if !ok {
			continue
		}
		if _, seen := groups[k]; !seen {
			order = append(order, k)
		}
		groups[k] = append(groups[k], p)
	}
	out := make([][]*rowPlan, len(order))
	for i, k := range order {
		out[i] = groups[k]
	}
	return out
}

// execChunks runs query(n) over the rows in chunks that keep each
// statement's parameters bounded: prefix, then width parameters per row
// appended by rowArgs.
func (s *Store) execChunks(ctx context.Context, rows []*rowPlan, width int, prefix []any, query func(n int) string, rowArgs func(p *rowPlan, args []any) []any) error {
	for start := 0; start < len(rows); {
		part := rows[start : start+chunkRows(len(rows)-start, width)]
		start += len(part)
		args := make([]any, 0, len(prefix)+len(part)*width)
		args = append(args, prefix...)
		for _, p := range part {
			args = rowArgs(p, args)
		}
		if err := s.execApplier(ctx, query(len(part)), args...); err != nil {
			return err
		}
	}
	return nil
}
