package crdt

// The merge rules, applied to each incoming change against the local clock:
//
//  1. The row's causal length decides first: a higher one wins. An even
//     winner deletes the row; an odd winner starts a new life of the row
//     from its column defaults. A lower one loses. Equal even lengths (both
//     deleted) are a no-op.
//  2. Within the same life, a cell with a higher col_version wins.
//  3. Equal col_versions: the greater value under CompareValues wins.
//  4. Equal values: the greater actor id wins.
//
// Wall clocks never decide anything. The rules are commutative, associative
// and idempotent, which the property tests check on real SQLite replicas.

// RowAction is what an incoming causal length does to the local row.
type RowAction uint8

const (
	// RowIgnore: the change belongs to an older life, or both sides agree
	// the row is deleted.
	RowIgnore RowAction = iota
	// RowDelete: a newer, even causal length deletes the row.
	RowDelete
	// RowNewLife: a newer, odd causal length: the row restarts from its
	// defaults and every cell of that life wins against the reset clock.
	RowNewLife
	// RowSameLife: equal odd causal lengths: cells are compared one by one.
	RowSameLife
)

// DecideRow compares the local causal length (0 when the row was never seen)
// with an incoming one.
func DecideRow(local, remote uint64) RowAction {
	switch {
	case remote < local:
		return RowIgnore
	case remote > local:
		if remote%2 == 0 {
			return RowDelete
		}
		return RowNewLife
	case remote%2 == 0:
		return RowIgnore
	default:
		return RowSameLife
	}
}

// Cell is one column's clock and value within a row's current life.
// ColVersion 0 means the cell was never written in this life (its value is
// the column default); any written cell beats it.
type Cell struct {
	ColVersion uint64
	Value      Value
	Site       ActorID
}

// CellWins reports whether remote replaces local, both in the same life.
// An identical cell does not win, which makes re-delivery a no-op.
func CellWins(local, remote Cell) bool {
	if remote.ColVersion != local.ColVersion {
		return remote.ColVersion > local.ColVersion
	}
	if c := CompareValues(remote.Value, local.Value); c != 0 {
		return c > 0
	}
	return remote.Site.Compare(local.Site) > 0
}
