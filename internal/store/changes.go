package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/patina-db/patina/internal/crdt"
)

// ErrUnknownVersion is returned for versions this node has never known.
var ErrUnknownVersion = errors.New("store: version not known here")

// Changes reads the surviving changes of version v of actor a: every cell
// and row sentinel whose clock still names that version. A version that is
// known here but has nothing left is cleared: Changes returns an empty
// changeset, cleared = true, and records it so (pruning its index entries).
func (s *Store) Changes(ctx context.Context, a crdt.ActorID, v uint64) (cs *crdt.Changeset, cleared bool, err error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, false, ErrClosed
	}
	known := s.book.Knows(a, v)
	isCleared := s.book.IsCleared(a, v)
	ord, haveOrd := s.sites[a]
	schema := s.schema
	s.mu.Unlock()
	if !known {
		return nil, false, fmt.Errorf("%w: %s/%d", ErrUnknownVersion, a, v)
	}
	cs = &crdt.Changeset{Actor: a, Version: v}
	if isCleared || !haveOrd {
		return cs, true, nil
	}
	tx, err := s.snap.BeginTx(context.WithoutCancel(ctx), &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, false, fmt.Errorf("changes %s/%d: %w", a, v, err)
	}
	defer tx.Rollback()
	for _, name := range schema.TableNames() {
		ts := newTableSQL(schema.Tables[name])
		if err := readVersionRows(ctx, tx, ts, ord, v, cs); err != nil {
			return nil, false, fmt.Errorf("changes %s/%d: table %q: %w", a, v, name, err)
		}
	}
	_ = tx.Rollback()
	for i := range cs.Changes {
		cs.Changes[i].Seq = uint32(i)
	}
	if len(cs.Changes) == 0 {
		if err := s.markCleared(ctx, a, ord, v); err != nil {
			return nil, false, err
		}
		return cs, true, nil
	}
	return cs, false, nil
}

// readVersionRows appends the surviving changes of version v of site ord.
func readVersionRows(ctx context.Context, tx querier, ts *tableSQL, ord int64, v uint64, cs *crdt.Changeset) error {
	return readVersionRange(ctx, tx, ts, ord, v, v, func(uint64) *crdt.Changeset { return cs })
}

// readVersionRange appends the surviving changes of versions from..to of
// site ord to the changeset changesetOf names for each version.
//
// The query runs under a context that is never cancelled (given one that
// can be, the driver steps every row on a goroutine of its own, so that it
// can interrupt it); ctx is checked every few hundred rows instead.
func readVersionRange(ctx context.Context, tx querier, ts *tableSQL, ord int64, from, to uint64, changesetOf func(v uint64) *crdt.Changeset) error {
	var rows *sql.Rows
	var err error
	qctx := context.WithoutCancel(ctx)
	if from == to {
		rows, err = tx.QueryContext(qctx, ts.versionSel, ord, from)
	} else {
		rows, err = tx.QueryContext(qctx, ts.changesSel, ord, from, to)
	}
	if err != nil {
		return err
	}
	defer rows.Close()
	t := ts.t
	nPK, nVal := len(t.PK), len(t.Values)
	dest := make([]any, nPK+2+2*nVal+nVal+2)
	ptrs := make([]any, len(dest))
	for i := range dest {
		ptrs[i] = &dest[i]
	}
	for n := 1; rows.Next(); n++ {
		if n%256 == 0 {
			if err := ctx.Err(); err != nil {
				return err
			}
		}
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		pkVals := make([]crdt.Value, nPK)
		for i := range pkVals {
			if pkVals[i], err = crdt.FromGo(dest[i]); err != nil {
				return err
			}
		}
		v := uint64(asInt(dest[len(dest)-1]))
		cs := changesetOf(v)
		// Room for the row's sentinel and cells at once: a one-row
		// version (every local commit of one row) allocates once.
		cs.Changes = slices.Grow(cs.Changes, 1+nVal)
		pk := crdt.PackPK(pkVals)
		clk := dest[nPK:]
		want := packSD(ord, v)
		cl, clSD := asInt(clk[0]), asInt(clk[1])
		if clSD == want {
			cs.Changes = append(cs.Changes, crdt.Change{Table: t.Name, PK: pk, CL: uint64(cl)})
		}
		if cl%2 == 0 {
			continue // a deleted row has no cells
		}
		data := dest[nPK+2+2*nVal:]
		for i, c := range t.Values {
			ver, sd := asInt(clk[2+2*i]), asInt(clk[3+2*i])
			if ver == 0 || sd != want {
				continue
			}
			val, err := crdt.FromGo(data[i])
			if err != nil {
				return err
			}
			cs.Changes = append(cs.Changes, crdt.Change{Table: t.Name, PK: pk, Column: c.Name, Value: val, ColVersion: uint64(ver), CL: uint64(cl)})
		}
	}
	return rows.Err()
}

// checkCounters refuses a version whose counters passed crdt.MaxCounter,
// which no peer accepts. Peers send counters up to the bound and local
// writes add one, so only a write over a cell a peer set to the bound
// gets here: it is refused rather than committed where it cannot
// replicate. (Sync serves what the store holds as it is: a version
// past the bound written before this check existed is refused by
// peers, one version, not the whole exchange.)
func checkCounters(cs *crdt.Changeset) error {
	for _, c := range cs.Changes {
		what, n := "", uint64(0)
		switch {
		case c.CL > crdt.MaxCounter:
			what, n = "causal length", c.CL
		case c.ColVersion > crdt.MaxCounter:
			what, n = "col_version of "+c.Column, c.ColVersion
		default:
			continue
		}
		return fmt.Errorf("table %s: the %s would be %d, past the %d that peers accept (a peer sent a counter at the limit): the write cannot replicate", c.Table, what, n, uint64(crdt.MaxCounter))
	}
	return nil
}

// VersionChanges is one version read by ChangesRange.
type VersionChanges struct {
	Changeset *crdt.Changeset
	// Cleared: known here, with no surviving change.
	Cleared bool
}

// ChangesRange reads, in one snapshot, the surviving changes of every
// version of actor a from..to that this node knows, in ascending order.
// It is Changes for many versions at once, for sync; it records nothing.
func (s *Store) ChangesRange(ctx context.Context, a crdt.ActorID, from, to uint64) ([]VersionChanges, error) {
	if from > to {
		return nil, nil
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, ErrClosed
	}
	av := s.book.Versions(a)
	ord, haveOrd := s.sites[a]
	schema := s.schema
	s.mu.Unlock()
	var out []VersionChanges
	index := map[uint64]int{}
	for v := from; v <= to && v != 0; v++ {
		if av.Known.Contains(v) {
			index[v] = len(out)
			out = append(out, VersionChanges{Changeset: &crdt.Changeset{Actor: a, Version: v}, Cleared: av.Cleared.Contains(v)})
		}
	}
	if len(out) == 0 || !haveOrd {
		for i := range out {
			out[i].Cleared = true
		}
		return out, nil
	}
	tx, err := s.snap.BeginTx(context.WithoutCancel(ctx), &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, fmt.Errorf("changes %s/%d-%d: %w", a, from, to, err)
	}
	defer tx.Rollback()
	var spare crdt.Changeset // rows of versions not known here (none expected)
	for _, name := range schema.TableNames() {
		ts := newTableSQL(schema.Tables[name])
		err := readVersionRange(ctx, tx, ts, ord, from, to, func(v uint64) *crdt.Changeset {
			if i, ok := index[v]; ok {
				return out[i].Changeset
			}
			return &spare
		})
		if err != nil {
			return nil, fmt.Errorf("changes %s/%d-%d: table %q: %w", a, from, to, name, err)
		}
	}
	for i := range out {
		cs := out[i].Changeset
		for j := range cs.Changes {
			cs.Changes[j].Seq = uint32(j)
		}
		if len(cs.Changes) == 0 {
			out[i].Cleared = true
		}
	}
	return out, nil
}

func asInt(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case float64:
		return int64(x)
	}
	return 0
}

// markCleared records that version v of actor a has no surviving change
// and drops its version-index entries, which no longer point anywhere.
func (s *Store) markCleared(ctx context.Context, a crdt.ActorID, ord int64, v uint64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.book.IsCleared(a, v) {
		return nil
	}
	if _, err := s.aint.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("mark cleared: %w", err)
	}
	err := func() error {
		for _, name := range s.schema.TableNames() {
			if _, err := s.aint.ExecContext(ctx, fmt.Sprintf("DELETE FROM %s WHERE __patina_site = ? AND __patina_version = ?", quoteIdent(vxTable(name))), ord, v); err != nil {
				return err
			}
		}
		av := s.book.Versions(a)
		return persistRange(ctx, s.aint, ord, 1, &av.Cleared, v)
	}()
	if err != nil {
		_, _ = s.aint.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return fmt.Errorf("mark cleared: %w", err)
	}
	if err := s.commit(ctx, s.aint); err != nil {
		_, _ = s.aint.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return fmt.Errorf("mark cleared: %w", err)
	}
	s.book.MarkCleared(a, v)
	return nil
}
