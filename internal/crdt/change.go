package crdt

import (
	"bytes"
	"errors"
	"fmt"
	"math"
)

// Change is one cell of a row as written by some actor's version, or, with
// Column == "", the row's sentinel, which carries the causal length alone.
// A change always carries the row's causal length at the time it was read,
// so a cell also tells which life of the row it belongs to.
type Change struct {
	Table      string
	PK         []byte // PackPK of the primary-key values, in key order
	Column     string // "" for the row sentinel
	Value      Value
	ColVersion uint64 // bumped each time the cell changes within a life
	CL         uint64 // causal length: odd alive, even deleted
	Seq        uint32 // position inside the version, for chunking
}

// IsSentinel reports whether the change is the row-level causal length.
func (c Change) IsSentinel() bool { return c.Column == "" }

// Changeset is every surviving change of one actor's version. Versions are
// applied atomically: all of a changeset, or none of it.
type Changeset struct {
	Actor   ActorID
	Version uint64
	Changes []Change
}

// MaxCounter bounds the causal lengths and col_versions a changeset may
// carry. SQLite integers are signed 64-bit, and a local write adds one
// to the counter it finds: accepting up to 2⁶³−1 from a peer would let
// the next write here overflow into a REAL, which no peer accepts back.
// Half the range leaves 2⁶² writes of headroom, which no cell reaches.
const MaxCounter = 1 << 62

// ErrBadChangeset is wrapped by every Validate failure.
var ErrBadChangeset = errors.New("crdt: invalid changeset")

// Validate checks what the merge rules rely on. Changesets come from peers;
// one that fails is refused whole.
func (cs *Changeset) Validate() error {
	if cs.Actor.IsZero() {
		return fmt.Errorf("%w: zero actor id", ErrBadChangeset)
	}
	if cs.Version == 0 {
		return fmt.Errorf("%w: version 0", ErrBadChangeset)
	}
	for i, c := range cs.Changes {
		if c.CL > MaxCounter || c.ColVersion > MaxCounter {
			return fmt.Errorf("%w: change %d: causal length or col_version above %d", ErrBadChangeset, i, uint64(MaxCounter))
		}
		if c.Value.Kind > Blob {
			return fmt.Errorf("%w: change %d: unknown value kind %d", ErrBadChangeset, i, c.Value.Kind)
		}
		if c.Value.Kind == Real && math.IsNaN(c.Value.Float) {
			// SQLite stores NaN as NULL; a store never sends one.
			return fmt.Errorf("%w: change %d: NaN value", ErrBadChangeset, i)
		}
		if c.Table == "" {
			return fmt.Errorf("%w: change %d: empty table name", ErrBadChangeset, i)
		}
		if c.CL == 0 {
			return fmt.Errorf("%w: change %d: causal length 0", ErrBadChangeset, i)
		}
		if !c.IsSentinel() {
			if c.CL%2 == 0 {
				return fmt.Errorf("%w: change %d: cell %q of a deleted row (cl %d)", ErrBadChangeset, i, c.Column, c.CL)
			}
			if c.ColVersion == 0 {
				return fmt.Errorf("%w: change %d: cell %q with col_version 0", ErrBadChangeset, i, c.Column)
			}
		}
		// A row's changes come together; its key is checked once.
		if i > 0 && bytes.Equal(c.PK, cs.Changes[i-1].PK) {
			continue
		}
		if _, err := UnpackPK(c.PK); err != nil {
			return fmt.Errorf("%w: change %d: %v", ErrBadChangeset, i, err)
		}
	}
	return nil
}
