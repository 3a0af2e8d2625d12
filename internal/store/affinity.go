package store

import (
	"context"
	"fmt"
	"math"

	"github.com/patina-db/patina/internal/crdt"
)

// Values a peer sends must be what a store would hold. SQLite applies a
// column's affinity as it writes a value (a text '5' in an INTEGER
// column is stored as the integer 5), while the merge compares values
// as they arrive. A value the affinity changes could win a col_version
// tie on one node, as sent, and lose it on another, as stored: the
// replicas would differ for good. A store reads its values back as
// stored, so it never sends one; a changeset that carries one is
// refused.
//
// Most cases are decided here without asking: numbers never survive a
// TEXT column, integers never a REAL one, and a fractional or infinite
// real always survives an INTEGER or NUMERIC one. The rest (text in a
// numeric column, an integral real in an INTEGER one) follow SQLite's
// rules for what reads as a number, which only SQLite applies exactly,
// so SQLite is asked: the value is written to a scratch TEMP table of
// the applier's with columns of each affinity and its stored type read
// back. Changesets from stores never take that path for the regional
// tables, whose numeric columns hold integers.

// affinityProbe is the scratch table; k pins it to one row.
const affinityProbe = `CREATE TEMP TABLE IF NOT EXISTS __patina_affinity (k INTEGER PRIMARY KEY, n NUMERIC, r REAL)`

// valueFits reports whether v is stored unchanged in value column i of
// ts. Called on the applier's connection, inside its transaction.
func (s *Store) valueFits(ctx context.Context, ts *tableSQL, i int, v crdt.Value) (bool, error) {
	switch ts.affinity[i] {
	case "TEXT":
		return v.Kind != crdt.Integer && v.Kind != crdt.Real, nil
	case "REAL":
		switch v.Kind {
		case crdt.Integer:
			return false, nil
		case crdt.Text:
			return s.storedAs(ctx, "r", v)
		}
	case "INTEGER", "NUMERIC": // the same when storing; they differ only in CAST
		switch v.Kind {
		case crdt.Real:
			if math.IsInf(v.Float, 0) || v.Float != math.Trunc(v.Float) {
				return true, nil
			}
			return s.storedAs(ctx, "n", v)
		case crdt.Text:
			return s.storedAs(ctx, "n", v)
		}
	}
	return true, nil
}

// storedAs writes v to column col of the scratch table and reports
// whether it was stored with v's own type.
func (s *Store) storedAs(ctx context.Context, col string, v crdt.Value) (bool, error) {
	// Every time: the path is rare, and a rolled-back batch takes a
	// table it created with it.
	if _, err := s.aint.ExecContext(ctx, affinityProbe); err != nil {
		return false, fmt.Errorf("affinity probe: %w", err)
	}
	var typ string
	q := fmt.Sprintf("REPLACE INTO temp.__patina_affinity (k, %[1]s) VALUES (1, ?) RETURNING typeof(%[1]s)", col)
	if err := s.aint.QueryRowContext(ctx, q, v.Go()).Scan(&typ); err != nil {
		return false, fmt.Errorf("affinity probe: %w", err)
	}
	return typ == v.Kind.String(), nil
}
