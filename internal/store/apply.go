package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/patina-db/patina/internal/crdt"
)

// ErrRefused is wrapped by the ApplyErrors of changesets this node will
// never apply, whatever it learns: malformed ones, versions above
// MaxVersion, and versions of its own actor it never wrote. Retrying
// them is pointless.
var ErrRefused = errors.New("refused for good")

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
	rows    []RowChange // rows changed by the changesets applied so far
	sites   map[crdt.ActorID]int64
	book    map[crdt.ActorID]*crdt.ActorVersions
	applied []versionKey // the versions applied, in book too
	// wrote: the transaction holds applied changes, so a failing run
	// must be undone to a savepoint rather than with the transaction.
	wrote bool
}

// known records a version the batch applied.
func (s *Store) known(b *applyBatch, cs *crdt.Changeset) {
	s.batchVersions(b, cs.Actor).Known.Add(cs.Version)
	b.applied = append(b.applied, versionKey{cs.Actor, cs.Version})
}

// Apply applies remote changesets in one SQLite transaction, with their
// bookkeeping; each version is atomic. A version already known is a
// no-op. A changeset that fails is rolled back alone and reported in the
// result; the error return is for the node's own faults (or ctx's end),
// after which nothing of the batch is applied.
func (s *Store) Apply(ctx context.Context, changesets []*crdt.Changeset) (ApplyResult, error) {
	b := &applyBatch{sites: map[crdt.ActorID]int64{}, book: map[crdt.ActorID]*crdt.ActorVersions{}}
	res, hooks, err := s.applyLocked(ctx, b, changesets)
	if err == nil && hooks.Rows != nil && len(b.rows) > 0 {
		hooks.Rows(b.rows)
	}
	return res, err
}

func (s *Store) applyLocked(ctx context.Context, b *applyBatch, changesets []*crdt.Changeset) (_ ApplyResult, hooks Hooks, _ error) {
	var res ApplyResult
	s.mu.Lock()
	defer s.mu.Unlock()
	hooks = s.hooks
	if s.closed {
		return res, hooks, ErrClosed
	}
	observed := s.observeWrite(WriteApply)
	defer func() { observed(len(changesets)) }()
	// The batch's statements run under a context that is never cancelled:
	// given one that can be, the driver runs every statement, and every
	// step of a query, on a goroutine of its own so that it can interrupt
	// it. An apply's statements are short; the batch stops between
	// changesets instead.
	stop := ctx
	ctx = context.WithoutCancel(ctx)
	conn := s.aint
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return res, hooks, fmt.Errorf("apply: begin: %w", err)
	}
	rollback := func() { _, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK") }
	tables := map[string]*tableSQL{}
	// Changesets are applied in runs: consecutive ones whose rows name
	// distinct keys go through together (see applyVersions), which costs
	// about what one of them alone would in statements. A run that fails
	// on a changeset's fault is applied again one changeset at a time, so
	// the others still apply and the culprit is named.
	var run []*crdt.Changeset
	newActors := map[crdt.ActorID]bool{} // actors this call records anew
	runKeys := map[rowKey]struct{}{}
	runVersions := map[versionKey]struct{}{}
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		err := s.applyRun(ctx, b, tables, run, &res)
		run = run[:0]
		clear(runKeys)
		clear(runVersions)
		return err
	}
	for _, cs := range changesets {
		if err := stop.Err(); err != nil {
			rollback()
			return ApplyResult{}, hooks, fmt.Errorf("apply: %w", err)
		}
		if cs == nil {
			continue
		}
		err := cs.Validate()
		if err != nil {
			err = fmt.Errorf("%w: %w", ErrRefused, err)
		}
		if err == nil && cs.Version > MaxVersion {
			err = fmt.Errorf("%w: version %d above the maximum %d", ErrRefused, cs.Version, uint64(MaxVersion))
		}
		if _, known := s.sites[cs.Actor]; err == nil && !known && !newActors[cs.Actor] {
			if len(s.sites)+len(newActors) >= s.maxActors() {
				err = fmt.Errorf("%w: actor %s: this node already records %d actors, the most it takes", ErrRefused, cs.Actor, len(s.sites)+len(newActors))
			} else {
				newActors[cs.Actor] = true
			}
		}
		if err == nil && cs.Actor == s.actor && !s.book.Knows(cs.Actor, cs.Version) {
			// Only this node writes its own versions; one it does not have
			// would collide with the next local write.
			err = fmt.Errorf("%w: version %d of this node's own actor, which it never wrote (was this database copied from another node?)", ErrRefused, cs.Version)
		}
		if err != nil {
			res.Failed = append(res.Failed, &ApplyError{Actor: cs.Actor, Version: cs.Version, Err: err})
			continue
		}
		vk := versionKey{cs.Actor, cs.Version}
		if _, dup := runVersions[vk]; dup || overlaps(runKeys, cs) {
			if err := flush(); err != nil {
				rollback()
				return ApplyResult{}, hooks, err
			}
		}
		if s.batchKnows(b, cs.Actor, cs.Version) {
			res.Known++
			continue
		}
		run = append(run, cs)
		runVersions[vk] = struct{}{}
		for _, c := range cs.Changes {
			runKeys[rowKey{c.Table, string(c.PK)}] = struct{}{}
		}
	}
	if err := flush(); err != nil {
		rollback()
		return ApplyResult{}, hooks, err
	}
	if err := s.persistBatchBook(ctx, b); err != nil {
		rollback()
		return ApplyResult{}, hooks, err
	}
	if err := s.commit(ctx, conn); err != nil {
		rollback()
		return ApplyResult{}, hooks, fmt.Errorf("apply: commit: %w", err)
	}
	for a, ord := range b.sites {
		s.sites[a] = ord
		s.siteIDs[ord] = a
	}
	// Only what the batch added: an actor's known versions may be many
	// ranges (gaps that sync has yet to fill), and the batch's copy holds
	// them all.
	for _, k := range b.applied {
		s.book.MarkKnown(k.actor, k.version)
	}
	return res, hooks, nil
}

// versionKey names one version of one actor.
type versionKey struct {
	actor   crdt.ActorID
	version uint64
}

// overlaps reports whether cs changes a row among keys.
func overlaps(keys map[rowKey]struct{}, cs *crdt.Changeset) bool {
	if len(keys) == 0 {
		return false
	}
	for _, c := range cs.Changes {
		if _, ok := keys[rowKey{c.Table, string(c.PK)}]; ok {
			return true
		}
	}
	return false
}

// applyRun applies a run of changesets under one savepoint, or, when one
// of them is at fault, each under its own. The error is the node's own
// fault; the transaction must then be rolled back.
func (s *Store) applyRun(ctx context.Context, b *applyBatch, tables map[string]*tableSQL, run []*crdt.Changeset, res *ApplyResult) error {
	if len(run) > 1 {
		applied, err := s.applyUnder(ctx, b, tables, run)
		if err != nil {
			return err
		}
		if applied {
			for _, cs := range run {
				s.known(b, cs)
			}
			res.Applied += len(run)
			return nil
		}
	}
	for _, cs := range run {
		applied, err := s.applyUnder(ctx, b, tables, []*crdt.Changeset{cs})
		var ae *ApplyError
		if errors.As(err, &ae) {
			res.Failed = append(res.Failed, err)
			continue
		}
		if err != nil {
			return err
		}
		if applied {
			s.known(b, cs)
			res.Applied++
		}
	}
	return nil
}

// applyUnder applies changesets under a savepoint. On a changeset's own
// fault it rolls back to the savepoint and reports applied false, and for
// a single changeset returns its *ApplyError. The first changes of a
// transaction need no savepoint (most batches are one run): undoing them
// is undoing the transaction, which then begins again.
func (s *Store) applyUnder(ctx context.Context, b *applyBatch, tables map[string]*tableSQL, run []*crdt.Changeset) (applied bool, err error) {
	conn := s.aint
	first := !b.wrote
	if !first {
		if _, err := conn.ExecContext(ctx, "SAVEPOINT v"); err != nil {
			return false, fmt.Errorf("apply: savepoint: %w", err)
		}
	}
	rowsBefore := len(b.rows)
	newSites, err := s.applyVersions(ctx, b, tables, run)
	if err != nil {
		b.rows = b.rows[:rowsBefore]
		// One statement each: a prepared statement runs only the first
		// of several.
		var rerr error
		if first {
			_, rerr = conn.ExecContext(ctx, "ROLLBACK")
			if rerr == nil {
				_, rerr = conn.ExecContext(ctx, "BEGIN IMMEDIATE")
			}
		} else {
			_, rerr = conn.ExecContext(ctx, "ROLLBACK TO v")
			if rerr == nil {
				_, rerr = conn.ExecContext(ctx, "RELEASE v")
			}
		}
		if rerr != nil {
			return false, fmt.Errorf("apply: roll back a failed run: %w", rerr)
		}
		for _, a := range newSites {
			delete(b.sites, a)
		}
		var ae *ApplyError
		if !errors.As(err, &ae) {
			return false, err
		}
		if len(run) > 1 {
			return false, nil
		}
		return false, err
	}
	if !first {
		if _, err := conn.ExecContext(ctx, "RELEASE v"); err != nil {
			return false, fmt.Errorf("apply: release savepoint: %w", err)
		}
	}
	b.wrote = true
	return true, nil
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

// maxActors is how many actors the store records at most, its own
// included.
func (s *Store) maxActors() int {
	if s.cfg.maxActors > 0 {
		return s.cfg.maxActors
	}
	return MaxActors
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
	if n := len(s.sites) + len(b.sites); n >= min(s.maxActors(), maxSites-1) {
		return 0, false, fmt.Errorf("%w: register actor %s: this node already records %d actors", ErrRefused, a, n)
	}
	err = queryRow(ctx, s.aint, `INSERT INTO __patina_sites (ordinal, actor) VALUES ((SELECT coalesce(max(ordinal), 0) + 1 FROM __patina_sites), ?) RETURNING ordinal`, []any{a[:]}, &ord)
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

// persistBatchBook writes what the batch added to each actor's known
// versions, in the batch's transaction: the ranges that changed are
// replaced by the ranges they merged into. Versions of one actor arrive
// mostly in order, so a batch of many versions rewrites a row or two per
// actor instead of two or three per version.
func (s *Store) persistBatchBook(ctx context.Context, b *applyBatch) error {
	for a, av := range b.book {
		ord, ok := s.sites[a]
		if !ok {
			if ord, ok = b.sites[a]; !ok {
				return fmt.Errorf("apply: bookkeeping: actor %s has no site", a)
			}
		}
		before := s.book.Versions(a)
		gone, added := crdt.RangeChanges(before.Known.Ranges(), av.Known.Ranges())
		// A range that grew keeps its start: its row is replaced, not
		// deleted and inserted again.
		replaced := map[uint64]bool{}
		for _, r := range added {
			replaced[r.Start] = true
		}
		for _, r := range gone {
			if replaced[r.Start] {
				continue
			}
			if _, err := s.aint.ExecContext(ctx, `DELETE FROM __patina_bookkeeping WHERE actor = ? AND cleared = 0 AND start = ?`, ord, r.Start); err != nil {
				return fmt.Errorf("apply: bookkeeping: %w", err)
			}
		}
		for _, r := range added {
			if _, err := s.aint.ExecContext(ctx, `INSERT OR REPLACE INTO __patina_bookkeeping (actor, cleared, start, "end") VALUES (?, 0, ?, ?)`, ord, r.Start, r.End); err != nil {
				return fmt.Errorf("apply: bookkeeping: %w", err)
			}
		}
	}
	return nil
}

func (s *Store) execApplier(ctx context.Context, q string, args ...any) error {
	_, err := s.aint.ExecContext(ctx, q, args...)
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

func (s *Store) dropApplierStmts() {
	s.aint.reset()
	s.wint.reset()
	if s.clientStmts != nil {
		s.clientStmts.reset()
	}
	s.tables = nil
}
