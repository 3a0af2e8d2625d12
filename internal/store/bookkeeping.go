package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/patina-db/patina/internal/crdt"
)

// execer is a connection or transaction statements run on.
type execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// loadBookkeeping reads the site table and the version ranges into memory.
func (s *Store) loadBookkeeping(ctx context.Context) error {
	s.sites = map[crdt.ActorID]int64{}
	s.siteIDs = map[int64]crdt.ActorID{}
	rows, err := s.writer.QueryContext(ctx, `SELECT ordinal, actor FROM __patina_sites`)
	if err != nil {
		return fmt.Errorf("load sites: %w", err)
	}
	for rows.Next() {
		var ord int64
		var raw []byte
		if err := rows.Scan(&ord, &raw); err != nil {
			rows.Close()
			return fmt.Errorf("load sites: %w", err)
		}
		a, err := crdt.ActorIDFromBytes(raw)
		if err != nil {
			rows.Close()
			return fmt.Errorf("load sites: ordinal %d: %w", ord, err)
		}
		s.sites[a] = ord
		s.siteIDs[ord] = a
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load sites: %w", err)
	}

	s.book = crdt.NewBookkeeping()
	rows, err = s.writer.QueryContext(ctx, `SELECT actor, cleared, start, "end" FROM __patina_bookkeeping`)
	if err != nil {
		return fmt.Errorf("load bookkeeping: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var ord int64
		var cleared bool
		var r crdt.Range
		if err := rows.Scan(&ord, &cleared, &r.Start, &r.End); err != nil {
			return fmt.Errorf("load bookkeeping: %w", err)
		}
		a, ok := s.siteIDs[ord]
		if !ok {
			return fmt.Errorf("load bookkeeping: unknown site ordinal %d", ord)
		}
		if cleared {
			s.book.MarkClearedRange(a, r)
		} else {
			s.book.MarkKnownRange(a, r)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("load bookkeeping: %w", err)
	}
	s.head = s.book.Head(s.actor)
	return nil
}

// siteOrdinal returns the ordinal of actor a, registering it inside ex's
// transaction when new. The returned commit function must be called only
// once that transaction committed.
func (s *Store) siteOrdinal(ctx context.Context, ex execer, a crdt.ActorID) (int64, func(), error) {
	if ord, ok := s.sites[a]; ok {
		return ord, func() {}, nil
	}
	var ord int64
	err := queryRow(ctx, ex, `INSERT INTO __patina_sites (ordinal, actor) VALUES ((SELECT coalesce(max(ordinal), 0) + 1 FROM __patina_sites), ?) RETURNING ordinal`, []any{a[:]}, &ord)
	if err != nil {
		return 0, nil, fmt.Errorf("register actor %s: %w", a, err)
	}
	return ord, func() { s.sites[a] = ord; s.siteIDs[ord] = a }, nil
}

// persistVersion records version v of actor ord as known (and cleared when
// asked) inside ex's transaction, writing only the ranges that change. The
// in-memory bookkeeping is updated by the returned function after commit.
func (s *Store) persistVersion(ctx context.Context, ex execer, a crdt.ActorID, ord int64, v uint64, cleared bool) (func(), error) {
	av := s.book.Versions(a)
	if err := persistRange(ctx, ex, ord, 0, &av.Known, v); err != nil {
		return nil, err
	}
	if cleared {
		if err := persistRange(ctx, ex, ord, 1, &av.Cleared, v); err != nil {
			return nil, err
		}
	}
	return func() {
		if cleared {
			s.book.MarkCleared(a, v)
		} else {
			s.book.MarkKnown(a, v)
		}
	}, nil
}

// persistRange rewrites the at most two rows that adding v to set merges
// with, and inserts the merged range.
func persistRange(ctx context.Context, ex execer, ord int64, kind int, set *crdt.RangeSet, v uint64) error {
	if set.Contains(v) {
		return nil
	}
	merged := crdt.Range{Start: v, End: v}
	for _, r := range set.Neighbors(v) {
		if _, err := ex.ExecContext(ctx, `DELETE FROM __patina_bookkeeping WHERE actor = ? AND cleared = ? AND start = ?`, ord, kind, r.Start); err != nil {
			return fmt.Errorf("bookkeeping: %w", err)
		}
		merged.Start = min(merged.Start, r.Start)
		merged.End = max(merged.End, r.End)
	}
	if _, err := ex.ExecContext(ctx, `INSERT INTO __patina_bookkeeping (actor, cleared, start, "end") VALUES (?, ?, ?, ?)`, ord, kind, merged.Start, merged.End); err != nil {
		return fmt.Errorf("bookkeeping: %w", err)
	}
	return nil
}

// Bookkeeping returns a copy of what this node knows of every actor.
func (s *Store) Bookkeeping() *crdt.Bookkeeping {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.book.Clone()
}

// Knows reports whether version v of actor a was applied (or cleared) here.
func (s *Store) Knows(a crdt.ActorID, v uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.book.Knows(a, v)
}

// KnownPrefix is the highest v such that versions 1..v of actor a are all
// known here.
func (s *Store) KnownPrefix(a crdt.ActorID) uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	av := s.book.Versions(a)
	return av.Known.Prefix()
}

// Head is this node's last version, 0 before its first write.
func (s *Store) Head() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head
}

// Gaps is the number of versions this node knows exist but lacks.
func (s *Store) Gaps() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.book.TotalGaps()
}
