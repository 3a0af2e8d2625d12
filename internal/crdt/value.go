package crdt

import (
	"bytes"
	"fmt"
	"math"
	"strings"
)

// Kind is a SQLite storage class.
type Kind uint8

// Storage classes in the order the merge total order ranks them.
const (
	Null Kind = iota
	Integer
	Real
	Text
	Blob
)

func (k Kind) String() string {
	switch k {
	case Null:
		return "null"
	case Integer:
		return "integer"
	case Real:
		return "real"
	case Text:
		return "text"
	case Blob:
		return "blob"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Value is one SQLite value. Exactly one field besides Kind is meaningful.
type Value struct {
	Kind  Kind
	Int   int64
	Float float64
	Bytes []byte // Text and Blob
}

// NullValue, IntValue, RealValue, TextValue and BlobValue build Values.
func NullValue() Value          { return Value{} }
func IntValue(i int64) Value    { return Value{Kind: Integer, Int: i} }
func RealValue(f float64) Value { return Value{Kind: Real, Float: f} }
func TextValue(s string) Value  { return Value{Kind: Text, Bytes: []byte(s)} }
func BlobValue(b []byte) Value  { return Value{Kind: Blob, Bytes: append([]byte{}, b...)} }

// FromGo converts what database/sql returns for a SQLite column (nil, int64,
// float64, string, []byte, bool) into a Value. go-sqlite3 hands TEXT back as
// string and BLOB as []byte, which keeps the storage class intact.
func FromGo(v any) (Value, error) {
	switch x := v.(type) {
	case nil:
		return NullValue(), nil
	case int64:
		return IntValue(x), nil
	case int:
		return IntValue(int64(x)), nil
	case float64:
		return RealValue(x), nil
	case bool:
		if x {
			return IntValue(1), nil
		}
		return IntValue(0), nil
	case string:
		return TextValue(x), nil
	case []byte:
		return BlobValue(x), nil
	}
	return Value{}, fmt.Errorf("crdt: unsupported value type %T", v)
}

// Go returns the value as database/sql expects a parameter.
func (v Value) Go() any {
	switch v.Kind {
	case Integer:
		return v.Int
	case Real:
		return v.Float
	case Text:
		return string(v.Bytes)
	case Blob:
		if v.Bytes == nil {
			return []byte{}
		}
		return v.Bytes
	}
	return nil
}

// String renders the value for logs.
func (v Value) String() string {
	switch v.Kind {
	case Null:
		return "NULL"
	case Integer:
		return fmt.Sprintf("%d", v.Int)
	case Real:
		return fmt.Sprintf("%g", v.Float)
	case Text:
		return fmt.Sprintf("%q", v.Bytes)
	default:
		return fmt.Sprintf("x'%x'", v.Bytes)
	}
}

// CompareValues is the one total order of SQLite values that breaks merge
// ties. It follows SQLite's own ORDER BY: NULL < numbers < TEXT < BLOB;
// numbers compare numerically across INTEGER and REAL; TEXT and BLOB compare
// bytewise. To be total it adds two rules SQLite leaves open: a number equal
// in value as INTEGER and REAL ranks the INTEGER first, and NaN ranks below
// every other REAL.
func CompareValues(a, b Value) int {
	ra, rb := rank(a.Kind), rank(b.Kind)
	if ra != rb {
		return cmpInt(ra, rb)
	}
	switch a.Kind {
	case Null:
		return 0
	case Integer, Real:
		if c := compareNumbers(a, b); c != 0 {
			return c
		}
		return cmpInt(int(a.Kind), int(b.Kind))
	default:
		return bytes.Compare(a.Bytes, b.Bytes)
	}
}

// Equal reports whether two values are identical in storage class and content.
func (v Value) Equal(o Value) bool {
	if v.Kind != o.Kind {
		return false
	}
	switch v.Kind {
	case Integer:
		return v.Int == o.Int
	case Real:
		return math.Float64bits(v.Float) == math.Float64bits(o.Float)
	case Text, Blob:
		return bytes.Equal(v.Bytes, o.Bytes)
	}
	return true
}

func rank(k Kind) int {
	switch k {
	case Null:
		return 0
	case Integer, Real:
		return 1
	case Text:
		return 2
	}
	return 3
}

func compareNumbers(a, b Value) int {
	switch {
	case a.Kind == Integer && b.Kind == Integer:
		return cmpInt64(a.Int, b.Int)
	case a.Kind == Real && b.Kind == Real:
		return cmpFloat(a.Float, b.Float)
	case a.Kind == Integer:
		return -compareRealInt(b.Float, a.Int)
	default:
		return compareRealInt(a.Float, b.Int)
	}
}

// compareRealInt compares a REAL with an INTEGER exactly, without rounding
// the integer through float64 where that would lose precision.
func compareRealInt(f float64, i int64) int {
	if math.IsNaN(f) {
		return -1
	}
	if f < -9223372036854775808.0 {
		return -1
	}
	if f >= 9223372036854775808.0 {
		return 1
	}
	t := math.Trunc(f)
	ti := int64(t)
	if c := cmpInt64(ti, i); c != 0 {
		return c
	}
	return cmpFloat(f, t)
}

func cmpFloat(a, b float64) int {
	an, bn := math.IsNaN(a), math.IsNaN(b)
	switch {
	case an && bn:
		return 0
	case an:
		return -1
	case bn:
		return 1
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func cmpInt(a, b int) int { return cmpInt64(int64(a), int64(b)) }

// Quote renders the value as a SQLite literal, for dumps and error messages.
func (v Value) Quote() string {
	switch v.Kind {
	case Null:
		return "NULL"
	case Integer:
		return fmt.Sprintf("%d", v.Int)
	case Real:
		return fmt.Sprintf("%v", v.Float)
	case Text:
		return "'" + strings.ReplaceAll(string(v.Bytes), "'", "''") + "'"
	}
	return fmt.Sprintf("X'%X'", v.Bytes)
}
