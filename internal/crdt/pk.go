package crdt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// Primary keys travel packed: a uvarint count, then per value a storage-class
// tag and its payload (INTEGER and REAL: 8 bytes big-endian; TEXT and BLOB:
// uvarint length then the bytes). The encoding is canonical, so equal keys
// pack to equal bytes and packed keys can be compared and used as map keys.

const (
	tagNull byte = iota
	tagInt
	tagReal
	tagText
	tagBlob
)

// maxPKValues bounds what UnpackPK accepts from a peer.
const maxPKValues = 64

// ErrBadPK is wrapped by every UnpackPK failure.
var ErrBadPK = errors.New("crdt: malformed packed primary key")

// PackPK encodes the values of a (possibly multi-column) primary key.
func PackPK(values []Value) []byte {
	n := binary.MaxVarintLen64
	for _, v := range values {
		n += 1 + 8 + binary.MaxVarintLen64 + len(v.Bytes)
	}
	out := make([]byte, 0, n)
	out = binary.AppendUvarint(out, uint64(len(values)))
	for _, v := range values {
		switch v.Kind {
		case Null:
			out = append(out, tagNull)
		case Integer:
			out = append(out, tagInt)
			out = binary.BigEndian.AppendUint64(out, uint64(v.Int))
		case Real:
			out = append(out, tagReal)
			out = binary.BigEndian.AppendUint64(out, math.Float64bits(v.Float))
		case Text, Blob:
			tag := tagText
			if v.Kind == Blob {
				tag = tagBlob
			}
			out = append(out, tag)
			out = binary.AppendUvarint(out, uint64(len(v.Bytes)))
			out = append(out, v.Bytes...)
		}
	}
	return out
}

// UnpackPK decodes what PackPK wrote. Any malformed input, including
// trailing bytes and a number written in more bytes than it takes, is an
// error wrapping ErrBadPK: packed keys come from peers, and one key must
// have one packed form, or a peer's key would miss the row it names.
func UnpackPK(b []byte) ([]Value, error) {
	return unpack(b, 1, maxPKValues)
}

// PackValues encodes a list of values of any length (a query's arguments,
// a result row's cells) as PackPK encodes a key.
func PackValues(values []Value) []byte { return PackPK(values) }

// UnpackValues decodes what PackValues wrote: UnpackPK without its bounds
// on the number of values, which are a peer's key's, not a list's.
func UnpackValues(b []byte) ([]Value, error) {
	return unpack(b, 0, math.MaxInt)
}

// unpack decodes between least and most values.
func unpack(b []byte, least, most uint64) ([]Value, error) {
	n, k := uvarint(b)
	// Every value takes at least a byte: a count past what is left is a
	// lie, refused before it sizes an allocation.
	if k <= 0 || n < least || n > most || n > uint64(len(b)-k) {
		return nil, fmt.Errorf("%w: bad value count", ErrBadPK)
	}
	b = b[k:]
	values := make([]Value, 0, n)
	for i := uint64(0); i < n; i++ {
		if len(b) == 0 {
			return nil, fmt.Errorf("%w: value %d missing", ErrBadPK, i)
		}
		tag := b[0]
		b = b[1:]
		switch tag {
		case tagNull:
			values = append(values, NullValue())
		case tagInt, tagReal:
			if len(b) < 8 {
				return nil, fmt.Errorf("%w: value %d truncated", ErrBadPK, i)
			}
			u := binary.BigEndian.Uint64(b)
			b = b[8:]
			if tag == tagInt {
				values = append(values, IntValue(int64(u)))
			} else {
				values = append(values, RealValue(math.Float64frombits(u)))
			}
		case tagText, tagBlob:
			l, k := uvarint(b)
			if k <= 0 || l > uint64(len(b)-k) {
				return nil, fmt.Errorf("%w: value %d length", ErrBadPK, i)
			}
			data := append([]byte{}, b[k:k+int(l)]...)
			b = b[k+int(l):]
			kind := Text
			if tag == tagBlob {
				kind = Blob
			}
			values = append(values, Value{Kind: kind, Bytes: data})
		default:
			return nil, fmt.Errorf("%w: value %d has unknown tag %d", ErrBadPK, i, tag)
		}
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadPK, len(b))
	}
	return values, nil
}

// uvarint is binary.Uvarint that also refuses a number written in more
// bytes than it takes (k is then 0).
func uvarint(b []byte) (v uint64, k int) {
	v, k = binary.Uvarint(b)
	if k > 1 && b[k-1] == 0 {
		// The last byte of a minimal encoding carries a set bit: a zero
		// there only pads.
		return 0, 0
	}
	return v, k
}
