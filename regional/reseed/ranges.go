package reseed

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// Key is a position in a source's key order: one value (a machine id, a
// rowid) or a tuple of primary key values. Values are nil, int64,
// float64, string or []byte.
type Key []any

// Range is one slice of the key space: keys k with Lo <= k < Hi. A nil
// Lo starts at the first key, a nil Hi runs to the last, so the ranges of
// a plan cover every key, including keys added after the plan was made.
type Range struct {
	Index int `json:"index"`
	Lo    Key `json:"lo"`
	Hi    Key `json:"hi"`
	// Rows is how many rows the range held when it was planned; progress
	// uses it, nothing else relies on it.
	Rows int64 `json:"rows"`
}

func (r Range) String() string {
	return fmt.Sprintf("range %d [%s, %s)", r.Index, r.Lo.describe("start"), r.Hi.describe("end"))
}

func (k Key) describe(none string) string {
	if k == nil {
		return none
	}
	parts := make([]string, len(k))
	for i, v := range k {
		switch v := v.(type) {
		case string:
			parts[i] = fmt.Sprintf("%q", v)
		case []byte:
			parts[i] = fmt.Sprintf("x'%x'", v)
		case nil:
			parts[i] = "NULL"
		default:
			parts[i] = fmt.Sprint(v)
		}
	}
	if len(parts) == 1 {
		return parts[0]
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// splitPoints returns the positions, in a sorted list of count keys, at
// which ranges 1..n-1 start, so that n ranges hold count/n keys each
// (give or take one). Fewer keys than ranges give fewer ranges; no keys
// give none.
func splitPoints(count, n int) []int {
	if n < 1 {
		n = 1
	}
	if n > count {
		n = count
	}
	var out []int
	for i := 1; i < n; i++ {
		p := int(int64(i) * int64(count) / int64(n))
		if len(out) == 0 || p > out[len(out)-1] {
			out = append(out, p)
		}
	}
	return out
}

// rangesFromSplits turns split keys (ascending, each the first key of
// its range) and the number of keys before each split into ranges.
func rangesFromSplits(splits []Key, positions []int, count int) []Range {
	out := make([]Range, 0, len(splits)+1)
	var lo Key
	start := 0
	for i := 0; i <= len(splits); i++ {
		r := Range{Index: i, Lo: lo}
		end := count
		if i < len(splits) {
			r.Hi = splits[i]
			end = positions[i]
		}
		r.Rows = int64(end - start)
		out = append(out, r)
		if i < len(splits) {
			lo, start = splits[i], positions[i]
		}
	}
	return out
}

// keyValue is one Key value in a state file, tagged with its type so that
// integers, reals, text and blobs come back as they went in.
type keyValue struct {
	I *int64   `json:"i,omitempty"`
	F *float64 `json:"f,omitempty"`
	S *string  `json:"s,omitempty"`
	B *string  `json:"b,omitempty"` // base64
}

// MarshalJSON writes a key as a list of tagged values.
func (k Key) MarshalJSON() ([]byte, error) {
	if k == nil {
		return []byte("null"), nil
	}
	out := make([]*keyValue, len(k))
	for i, v := range k {
		switch v := v.(type) {
		case nil:
		case int64:
			out[i] = &keyValue{I: &v}
		case float64:
			out[i] = &keyValue{F: &v}
		case string:
			out[i] = &keyValue{S: &v}
		case []byte:
			s := base64.StdEncoding.EncodeToString(v)
			out[i] = &keyValue{B: &s}
		default:
			return nil, fmt.Errorf("reseed: key value of type %T", v)
		}
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads what MarshalJSON wrote.
func (k *Key) UnmarshalJSON(data []byte) error {
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		*k = nil
		return nil
	}
	var in []*keyValue
	if err := json.Unmarshal(data, &in); err != nil {
		return err
	}
	out := make(Key, len(in))
	for i, v := range in {
		switch {
		case v == nil:
		case v.I != nil:
			out[i] = *v.I
		case v.F != nil:
			out[i] = *v.F
		case v.S != nil:
			out[i] = *v.S
		case v.B != nil:
			b, err := base64.StdEncoding.DecodeString(*v.B)
			if err != nil {
				return fmt.Errorf("key value %d: %w", i, err)
			}
			out[i] = b
		default:
			return fmt.Errorf("key value %d: no type", i)
		}
	}
	*k = out
	return nil
}
