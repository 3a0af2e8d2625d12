package crdt

import (
	"bytes"
	"encoding/hex"
	"fmt"
)

// ActorID identifies a node for as long as its database lives: 16 random
// bytes created once and persisted. Ties between equal writes go to the
// greater ActorID.
type ActorID [16]byte

// String is the lower-case hex form used in the API and logs.
func (a ActorID) String() string { return hex.EncodeToString(a[:]) }

// Compare orders actor ids bytewise.
func (a ActorID) Compare(b ActorID) int { return bytes.Compare(a[:], b[:]) }

// IsZero reports whether a is the zero id, which no node ever uses.
func (a ActorID) IsZero() bool { return a == ActorID{} }

// ParseActorID reads the hex form written by String.
func ParseActorID(s string) (ActorID, error) {
	var a ActorID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(a) {
		return a, fmt.Errorf("crdt: actor id %q: want 32 hex digits", s)
	}
	copy(a[:], b)
	return a, nil
}

// ActorIDFromBytes copies a 16-byte slice into an ActorID.
func ActorIDFromBytes(b []byte) (ActorID, error) {
	var a ActorID
	if len(b) != len(a) {
		return a, fmt.Errorf("crdt: actor id is %d bytes, want %d", len(b), len(a))
	}
	copy(a[:], b)
	return a, nil
}
