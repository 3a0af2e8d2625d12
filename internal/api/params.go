package api

import (
	"math"
	"strconv"
	"unicode/utf8"
)

// scanParams decodes a JSON array of parameters in one pass, for the
// common case: strings without escapes, numbers, null, true and false.
// It reports false for anything else (escapes, blobs, objects, invalid
// JSON), and decodeParams then takes the general path, which also words
// the errors. Where it reports true, the result is exactly what the
// general path gives. A reseed sends tens of thousands of parameters per
// request, and the general path scans each one four times over.
func scanParams(data []byte) ([]any, bool) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return nil, false
	}
	i = skipSpace(data, i+1)
	out := make([]any, 0, 16)
	if i < len(data) && data[i] == ']' {
		return out, skipSpace(data, i+1) == len(data)
	}
	for {
		v, next, ok := scanValue(data, i)
		if !ok {
			return nil, false
		}
		out = append(out, v)
		i = skipSpace(data, next)
		if i >= len(data) {
			return nil, false
		}
		switch data[i] {
		case ',':
			i = skipSpace(data, i+1)
		case ']':
			return out, skipSpace(data, i+1) == len(data)
		default:
			return nil, false
		}
	}
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// scanValue reads one value at data[i]; next is just past it.
func scanValue(data []byte, i int) (v any, next int, ok bool) {
	if i >= len(data) {
		return nil, 0, false
	}
	switch c := data[i]; {
	case c == '"':
		ascii := true
		for j := i + 1; j < len(data); j++ {
			switch b := data[j]; {
			case b == '"':
				s := data[i+1 : j]
				if !ascii && !utf8.Valid(s) {
					return nil, 0, false // the general path substitutes U+FFFD
				}
				return string(s), j + 1, true
			case b == '\\' || b < 0x20:
				return nil, 0, false
			case b >= utf8.RuneSelf:
				ascii = false
			}
		}
		return nil, 0, false
	case c == 'n':
		return literal(data, i, "null", nil)
	case c == 't':
		return literal(data, i, "true", int64(1))
	case c == 'f':
		return literal(data, i, "false", int64(0))
	case c == '-' || (c >= '0' && c <= '9'):
		end, ok := numberEnd(data, i)
		if !ok {
			return nil, 0, false
		}
		v, err := numberValue(string(data[i:end]))
		if err != nil {
			return nil, 0, false
		}
		return v, end, true
	}
	return nil, 0, false
}

func literal(data []byte, i int, word string, v any) (any, int, bool) {
	if len(data)-i < len(word) || string(data[i:i+len(word)]) != word {
		return nil, 0, false
	}
	return v, i + len(word), true
}

// numberEnd checks JSON's number grammar,
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, from data[i] and
// returns where the number ends.
func numberEnd(data []byte, i int) (int, bool) {
	digits := func(j int) int {
		for j < len(data) && data[j] >= '0' && data[j] <= '9' {
			j++
		}
		return j
	}
	if data[i] == '-' {
		i++
	}
	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		i = digits(i)
	default:
		return 0, false
	}
	if i < len(data) && data[i] == '.' {
		j := digits(i + 1)
		if j == i+1 {
			return 0, false
		}
		i = j
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := digits(i)
		if j == i {
			return 0, false
		}
		i = j
	}
	return i, true
}

// numberValue is a JSON number as a parameter: an integer when it is one
// that fits, else a float.
func numberValue(n string) (any, error) {
	if i, err := strconv.ParseInt(n, 10, 64); err == nil {
		return i, nil
	}
	f, err := strconv.ParseFloat(n, 64)
	if err != nil || math.IsInf(f, 0) {
		return nil, errBadNumber(n)
	}
	return f, nil
}

type errBadNumber string

func (e errBadNumber) Error() string { return "bad number " + string(e) }
