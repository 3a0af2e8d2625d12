package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/patina-db/patina/internal/crdt"
)

// ApplyError is a changeset this node could not apply: a malformed one, or
// one naming a table or column this node's schema lacks yet. The version
// stays unknown, so a later sync or retry brings it again.
type ApplyError struct {
	Actor   crdt.ActorID
	Version uint64
	Err     error
}

func (e *ApplyError) Error() string {
	return fmt.Sprintf("apply %s/%d: %v", e.Actor, e.Version, e.Err)
}

func (e *ApplyError) Unwrap() error { return e.Err }

// ApplyResult says what happened to each changeset of a batch.
type ApplyResult struct {
	Applied int     // newly applied versions
	Known   int     // versions already known here: no-ops
	Failed  []error // one *ApplyError per changeset that failed
}

// applyBatch is the state of one Apply call: sites and version ranges
// added by its changesets, visible to later changesets of the same batch
// and folded into the store only once the batch commits.
type applyBatch struct {
	sites map[crdt.ActorID]int64
	book  map[crdt.ActorID]*crdt.ActorVersions
	stmts map[string]*sql.Stmt
}

// Apply applies remote changesets in one SQLite transaction, each version
// atomically under its own savepoint together with its bookkeeping. A
// version already known is a no-op. A changeset that fails is rolled back
// alone and reported in the result; the error return is for the node's own
// faults, after which nothing of the batch is applied.
func (s *Store) Apply(ctx context.Context, changesets []*crdt.Changeset) (ApplyResult, error) {
	var res ApplyResult
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return res, ErrClosed
	}
	b := &applyBatch{sites: map[crdt.ActorID]int64{}, book: map[crdt.ActorID]*crdt.ActorVersions{}}
	conn := s.applier
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return res, fmt.Errorf("apply: begin: %w", err)
	}
	rollback := func() { _, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK") }
	tables := map[string]*tableSQL{}
	for _, cs := range changesets {
		if cs == nil {
			continue
		}
		err := cs.Validate()
		if err == nil && cs.Version > MaxVersion {
			err = fmt.Errorf("version %d above the maximum %d", cs.Version, uint64(MaxVersion))
		}
		if err != nil {
			res.Failed = append(res.Failed, &ApplyError{Actor: cs.Actor, Version: cs.Version, Err: err})
			continue
		}
		if s.batchKnows(b, cs.Actor, cs.Version) {
			res.Known++
			continue
		}
		if _, err := conn.ExecContext(ctx, "SAVEPOINT v"); err != nil {
			rollback()
			return ApplyResult{}, fmt.Errorf("apply: savepoint: %w", err)
		}
		newSite, err := s.applyChangeset(ctx, b, tables, cs)
		if err != nil {
			if _, rerr := conn.ExecContext(ctx, "ROLLBACK TO v; RELEASE v"); rerr != nil {
				rollback()
				return ApplyResult{}, fmt.Errorf("apply: rollback to savepoint: %w", rerr)
			}
			if newSite {
				delete(b.sites, cs.Actor)
			}
			var ae *ApplyError
			if !errors.As(err, &ae) {
				rollback()
				return ApplyResult{}, err
			}
			res.Failed = append(res.Failed, err)
			continue
		}
		if _, err := conn.ExecContext(ctx, "RELEASE v"); err != nil {
			rollback()
			return ApplyResult{}, fmt.Errorf("apply: release savepoint: %w", err)
		}
		s.batchVersions(b, cs.Actor).Known.Add(cs.Version)
		res.Applied++
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		rollback()
		return ApplyResult{}, fmt.Errorf("apply: commit: %w", err)
	}
	for a, ord := range b.sites {
		s.sites[a] = ord
		s.siteIDs[ord] = a
	}
	for a, av := range b.book {
		for _, r := range av.Known.Ranges() {
			s.book.MarkKnownRange(a, r)
		}
	}
	return res, nil
}

func (s *Store) batchVersions(b *applyBatch, a crdt.ActorID) *crdt.ActorVersions {
	av := b.book[a]
	if av == nil {
		v := s.book.Versions(a)
		av = &v
		b.book[a] = av
	}
	return av
}

func (s *Store) batchKnows(b *applyBatch, a crdt.ActorID, v uint64) bool {
	if av := b.book[a]; av != nil {
		return av.Known.Contains(v)
	}
	return s.book.Knows(a, v)
}

func (s *Store) batchSite(ctx context.Context, b *applyBatch, a crdt.ActorID) (ord int64, isNew bool, err error) {
	if a == s.actor {
		return 0, false, nil
	}
	if ord, ok := s.sites[a]; ok {
		return ord, false, nil
	}
	if ord, ok := b.sites[a]; ok {
		return ord, false, nil
	}
	if len(s.sites)+len(b.sites) >= maxSites-1 {
		return 0, false, fmt.Errorf("register actor %s: this node already records %d actors", a, maxSites-1)
	}
	err = queryRow(ctx, s.applier, `INSERT INTO __patina_sites (ordinal, actor) VALUES ((SELECT coalesce(max(ordinal), 0) + 1 FROM __patina_sites), ?) RETURNING ordinal`, []any{a[:]}, &ord)
	if err != nil {
		return 0, false, fmt.Errorf("register actor %s: %w", a, err)
	}
	b.sites[a] = ord
	return ord, true, nil
}

func (s *Store) siteActor(b *applyBatch, ord int64) crdt.ActorID {
	if a, ok := s.siteIDs[ord]; ok {
		return a
	}
	for a, o := range b.sites {
		if o == ord {
			return a
		}
	}
	return crdt.ActorID{}
}

// rowKey groups a changeset's changes by row.
type rowKey struct{ table, pk string }

func (s *Store) applyChangeset(ctx context.Context, b *applyBatch, tables map[string]*tableSQL, cs *crdt.Changeset) (newSite bool, err error) {
	ord, newSite, err := s.batchSite(ctx, b, cs.Actor)
	if err != nil {
		return newSite, err
	}
	fail := func(err error) error { return &ApplyError{Actor: cs.Actor, Version: cs.Version, Err: err} }
	var order []rowKey
	groups := map[rowKey][]crdt.Change{}
	for _, c := range cs.Changes {
		k := rowKey{c.Table, string(c.PK)}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], c)
	}
	for _, k := range order {
		ts := tables[k.table]
		if ts == nil {
			t := s.schema.Tables[k.table]
			if t == nil {
				return newSite, fail(fmt.Errorf("unknown table %q", k.table))
			}
			ts = newTableSQL(t)
			tables[k.table] = ts
		}
		if err := s.applyRow(ctx, b, ts, ord, cs, []byte(k.pk), groups[k]); err != nil {
			var ae *ApplyError
			if errors.As(err, &ae) {
				return newSite, err
			}
			if errors.Is(err, errBadChange) {
				return newSite, fail(err)
			}
			return newSite, fmt.Errorf("apply %s/%d: %w", cs.Actor, cs.Version, err)
		}
	}
	if err := s.persistBatchVersion(ctx, b, cs.Actor, ord, cs.Version); err != nil {
		return newSite, err
	}
	return newSite, nil
}

func (s *Store) persistBatchVersion(ctx context.Context, b *applyBatch, a crdt.ActorID, ord int64, v uint64) error {
	av := s.batchVersions(b, a)
	return persistRange(ctx, s.applier, ord, 0, &av.Known, v)
}

var errBadChange = errors.New("bad change")

// rowClock is a row's clock as stored.
type rowClock struct {
	exists bool
	cl     int64
	clSD   int64       // packSD of the version the causal length is credited to
	cells  []cellClock // per value column
}

type cellClock struct{ ver, sd int64 }

func (s *Store) readClock(ctx context.Context, ts *tableSQL, pkArgs []any) (rowClock, error) {
	n := len(ts.t.Values)
	rc := rowClock{cells: make([]cellClock, n)}
	dest := make([]any, 2+2*n)
	dest[0], dest[1] = &rc.cl, &rc.clSD
	for i := range rc.cells {
		dest[2+2*i], dest[3+2*i] = &rc.cells[i].ver, &rc.cells[i].sd
	}
	st, err := s.applierStmt(ctx, ts.clockSelect)
	if err != nil {
		return rc, err
	}
	err = st.QueryRowContext(ctx, pkArgs...).Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return rc, nil
	}
	if err != nil {
		return rc, fmt.Errorf("read clock of %q: %w", ts.t.Name, err)
	}
	rc.exists = true
	return rc, nil
}

func (s *Store) writeClock(ctx context.Context, ts *tableSQL, pkArgs []any, rc rowClock) error {
	args := make([]any, 0, len(pkArgs)+2+2*len(rc.cells))
	args = append(args, pkArgs...)
	args = append(args, rc.cl, rc.clSD)
	for _, c := range rc.cells {
		args = append(args, c.ver, c.sd)
	}
	return s.execApplier(ctx, ts.clockUpsert, args...)
}

// maxApplierStmts bounds the prepared-statement cache; updates are keyed
// by the set of columns they write, which varies.
const maxApplierStmts = 512

func (s *Store) applierStmt(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := s.stmts[q]; ok {
		return st, nil
	}
	if len(s.stmts) >= maxApplierStmts {
		s.dropApplierStmts()
	}
	st, err := s.applier.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	s.stmts[q] = st
	return st, nil
}

func (s *Store) execApplier(ctx context.Context, q string, args ...any) error {
	st, err := s.applierStmt(ctx, q)
	if err != nil {
		return err
	}
	_, err = st.ExecContext(ctx, args...)
	return err
}

// sentinelWins decides which version a causal length is credited to when
// two versions carry the same one (concurrent deletes, or a cell that
// arrived before the version that started its life): the greater actor id,
// then the greater version. The credit decides nothing about the data; it
// only makes clocks, and so the surviving changes of each version, the
// same on every replica.
func sentinelWins(local rowClock, localActor crdt.ActorID, remoteActor crdt.ActorID, remoteVer uint64) bool {
	if local.clSD == unattributed {
		return true
	}
	if c := remoteActor.Compare(localActor); c != 0 {
		return c > 0
	}
	return remoteVer > sdVersion(local.clSD)
}

func (s *Store) applyRow(ctx context.Context, b *applyBatch, ts *tableSQL, ord int64, cs *crdt.Changeset, pk []byte, changes []crdt.Change) error {
	t := ts.t
	pkVals, err := crdt.UnpackPK(pk)
	if err != nil {
		return fmt.Errorf("%w: %v", errBadChange, err)
	}
	if len(pkVals) != len(t.PK) {
		return fmt.Errorf("%w: table %q has a %d-column key, change has %d", errBadChange, t.Name, len(t.PK), len(pkVals))
	}
	pkArgs := make([]any, len(pkVals))
	for i, v := range pkVals {
		pkArgs[i] = v.Go()
	}
	// One causal length per row per version; the last cell per column.
	var remoteCL uint64
	hasSentinel := false
	cells := map[int]crdt.Change{}
	var cellOrder []int
	for _, c := range changes {
		if remoteCL != 0 && c.CL != remoteCL {
			return fmt.Errorf("%w: table %q: causal lengths %d and %d for one row", errBadChange, t.Name, remoteCL, c.CL)
		}
		remoteCL = c.CL
		if c.IsSentinel() {
			hasSentinel = true
			continue
		}
		i, ok := ts.valueIndex[c.Column]
		if !ok {
			return fmt.Errorf("%w: table %q has no column %q", errBadChange, t.Name, c.Column)
		}
		if _, seen := cells[i]; !seen {
			cellOrder = append(cellOrder, i)
		}
		cells[i] = c
	}

	local, err := s.readClock(ctx, ts, pkArgs)
	if err != nil {
		return err
	}
	localCL := uint64(0)
	if local.exists {
		localCL = uint64(local.cl)
	}
	ver := int64(cs.Version)
	sd := packSD(ord, cs.Version)
	touched := false
	switch crdt.DecideRow(localCL, remoteCL) {
	case crdt.RowIgnore:
		if !hasSentinel || localCL != remoteCL || !sentinelWins(local, s.siteActor(b, sdSite(local.clSD)), cs.Actor, cs.Version) {
			return nil
		}
		local.clSD = sd
		touched = true

	case crdt.RowDelete:
		if err := s.execApplier(ctx, ts.dataDelete, pkArgs...); err != nil {
			return fmt.Errorf("delete from %q: %w", t.Name, err)
		}
		local = rowClock{exists: true, cl: int64(remoteCL), clSD: sd, cells: make([]cellClock, len(t.Values))}
		touched = true

	case crdt.RowNewLife:
		next := rowClock{exists: true, cl: int64(remoteCL), clSD: unattributed, cells: make([]cellClock, len(t.Values))}
		if hasSentinel {
			next.clSD = sd
		}
		cols := make([]string, 0, len(cellOrder))
		args := append([]any{}, pkArgs...)
		for _, i := range cellOrder {
			c := cells[i]
			cols = append(cols, t.Values[i].Name)
			args = append(args, c.Value.Go())
			next.cells[i] = cellClock{ver: int64(c.ColVersion), sd: sd}
		}
		if err := s.execApplier(ctx, ts.dataReplace(cols), args...); err != nil {
			return fmt.Errorf("%w: insert into %q: %v", errBadChange, t.Name, err)
		}
		local = next
		touched = true

	case crdt.RowSameLife:
		if hasSentinel && sentinelWins(local, s.siteActor(b, sdSite(local.clSD)), cs.Actor, cs.Version) {
			local.clSD = sd
			touched = true
		}
		current := make([]any, len(t.Values))
		rowMissing := false
		if ts.dataSelect != "" && len(cellOrder) > 0 {
			ptrs := make([]any, len(current))
			for i := range current {
				ptrs[i] = &current[i]
			}
			st, err := s.applierStmt(ctx, ts.dataSelect)
			if err != nil {
				return err
			}
			err = st.QueryRowContext(ctx, pkArgs...).Scan(ptrs...)
			if errors.Is(err, sql.ErrNoRows) {
				rowMissing = true
			} else if err != nil {
				return fmt.Errorf("read row of %q: %w", t.Name, err)
			}
		}
		var cols []string
		args := append([]any{}, pkArgs...)
		for _, i := range cellOrder {
			c := cells[i]
			lc := local.cells[i]
			lv, err := crdt.FromGo(current[i])
			if err != nil {
				return err
			}
			localCell := crdt.Cell{ColVersion: uint64(lc.ver), Value: lv, Site: s.siteActor(b, sdSite(lc.sd))}
			remoteCell := crdt.Cell{ColVersion: c.ColVersion, Value: c.Value, Site: cs.Actor}
			if lc.ver > 0 && !crdt.CellWins(localCell, remoteCell) {
				continue
			}
			cols = append(cols, t.Values[i].Name)
			args = append(args, c.Value.Go())
			local.cells[i] = cellClock{ver: int64(c.ColVersion), sd: sd}
		}
		if len(cols) > 0 {
			q := ts.dataUpdate(cols)
			if rowMissing {
				// The clock says alive but the row is gone (written around
				// the agent): rebuild it from what this version carries.
				q = ts.dataReplace(cols)
			}
			if err := s.execApplier(ctx, q, args...); err != nil {
				return fmt.Errorf("%w: update %q: %v", errBadChange, t.Name, err)
			}
			touched = true
		}
	}
	if !touched {
		return nil
	}
	if err := s.writeClock(ctx, ts, pkArgs, local); err != nil {
		return fmt.Errorf("write clock of %q: %w", t.Name, err)
	}
	vxArgs := append([]any{ord, ver}, pkArgs...)
	if err := s.execApplier(ctx, ts.vxInsert, vxArgs...); err != nil {
		return fmt.Errorf("index version of %q: %w", t.Name, err)
	}
	return nil
}

func (s *Store) dropApplierStmts() {
	for q, st := range s.stmts {
		_ = st.Close()
		delete(s.stmts, q)
	}
}
