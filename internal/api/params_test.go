package api

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"pgregory.net/rapid"
)

// jsonValue draws one parameter as JSON text, valid or nearly so: the
// forms a client sends and the edges of the grammar.
func jsonValue(t *rapid.T) string {
	switch rapid.IntRange(0, 9).Draw(t, "kind") {
	case 0:
		b, _ := json.Marshal(rapid.String().Draw(t, "s")) // escapes as needed
		return string(b)
	case 1: // raw bytes between quotes: control characters, invalid UTF-8
		return `"` + string(rapid.SliceOf(rapid.Byte()).Draw(t, "raw")) + `"`
	case 2:
		return `"` + rapid.StringMatching(`[a-z0-9 ._:/-]{0,20}`).Draw(t, "plain") + `"`
	case 3:
		return strconv.FormatInt(rapid.Int64().Draw(t, "i"), 10)
	case 4:
		f := rapid.Float64().Draw(t, "f")
		return strconv.FormatFloat(f, rapid.SampledFrom([]byte{'e', 'E', 'f', 'g'}).Draw(t, "fmt"), -1, 64)
	case 5:
		return rapid.SampledFrom([]string{"null", "true", "false", "nul", "truee", "True"}).Draw(t, "lit")
	case 6:
		return rapid.SampledFrom([]string{"-0", "0", "00", "01", "1.", ".5", "1e", "1e+", "-", "+1", "1.5e-3", "99999999999999999999", "1e400", "-1e400", "9223372036854775808", "-9223372036854775808"}).Draw(t, "edge")
	case 7:
		return "[" + strings.Join(rapid.SliceOfN(rapid.SampledFrom([]string{"0", "255", "256", "-1", "7"}), 0, 4).Draw(t, "blob"), ",") + "]"
	case 8:
		return rapid.SampledFrom([]string{"{}", `{"a":1}`, `"\u00e9"`, `"a\nb"`, `"\"`}).Draw(t, "other")
	default:
		return rapid.StringMatching(`[0-9eE.+-]{1,8}`).Draw(t, "numberish")
	}
}

func space(t *rapid.T, label string) string {
	return rapid.StringMatching(`[ \t\r\n]{0,2}`).Draw(t, label)
}

// TestScanParamsAgreesWithJSON: wherever the one-pass scanner accepts
// the input, the general path accepts it too and decodes the same values.
func TestScanParamsAgreesWithJSON(t *testing.T) {
	check := func(t *rapid.T, data []byte) {
		fast, ok := scanParams(data)
		if !ok {
			return
		}
		slow, err := decodeParamsJSON(data)
		if err != nil {
			t.Fatalf("scanner accepted %q, general path says %v", data, err)
		}
		if !reflect.DeepEqual(fast, slow) {
			t.Fatalf("%q: scanner %#v, general path %#v", data, fast, slow)
		}
	}
	rapid.Check(t, func(t *rapid.T) {
		vals := rapid.SliceOfN(rapid.Custom(jsonValue), 0, 6).Draw(t, "values")
		var b strings.Builder
		b.WriteString(space(t, "lead") + "[")
		for i, v := range vals {
			if i > 0 {
				b.WriteString(space(t, "pre") + "," + space(t, "post"))
			}
			b.WriteString(v)
		}
		b.WriteString(space(t, "end") + "]" + space(t, "trail"))
		check(t, []byte(b.String()))
	})
	rapid.Check(t, func(t *rapid.T) {
		check(t, rapid.SliceOf(rapid.SampledFrom([]byte(`[]",0123456789-+.eE ntrufalse\`))).Draw(t, "bytes"))
	})
}

func TestScanParamsCommonForms(t *testing.T) {
	got, ok := scanParams([]byte(` [ "m-1", 42, -7, 1.5, 1e3, null, true, false, "", "é" ] `))
	want := []any{"m-1", int64(42), int64(-7), 1.5, 1000.0, nil, int64(1), int64(0), "", "é"}
	if !ok || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %#v, %v", got, ok)
	}
	for _, bad := range []string{`["a\"b"]`, `[[1,2]]`, `[1,]`, `[01]`, `[1] x`, `{"a":1}`, `["\u0001"]`, "[\"\xff\"]", `[`} {
		if _, ok := scanParams([]byte(bad)); ok {
			t.Errorf("scanner accepted %q", bad)
		}
	}
	if got, ok := scanParams([]byte(`[]`)); !ok || got == nil || len(got) != 0 {
		t.Fatalf("empty array: %#v %v", got, ok)
	}
}

// TestStatementPlainEncodingMatches: where the reflection-free encoder
// takes a statement, it writes exactly what the general path writes.
func TestStatementPlainEncodingMatches(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		st := Statement{Query: rapid.String().Draw(t, "query")}
		for _, kind := range rapid.SliceOfN(rapid.IntRange(0, 7), 0, 8).Draw(t, "kinds") {
			switch kind {
			case 0:
				st.Params = append(st.Params, nil)
			case 1:
				st.Params = append(st.Params, rapid.String().Draw(t, "s"))
			case 2:
				st.Params = append(st.Params, rapid.StringMatching(`[a-z0-9 ._<>&-]{0,12}`).Draw(t, "plain"))
			case 3:
				st.Params = append(st.Params, rapid.Int64().Draw(t, "i64"))
			case 4:
				st.Params = append(st.Params, rapid.Int().Draw(t, "i"))
			case 5:
				st.Params = append(st.Params, rapid.Bool().Draw(t, "b"))
			case 6:
				st.Params = append(st.Params, rapid.OneOf(rapid.Float64(), rapid.SampledFrom([]float64{0, math.Copysign(0, -1), 1, math.NaN(), math.Inf(1), 1e21, 5e-324})).Draw(t, "f"))
			default:
				st.Params = append(st.Params, []byte{1, 2})
			}
		}
		fast, ok := st.appendPlain(nil)
		slow, err := st.marshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		if ok && !bytes.Equal(fast, slow) {
			t.Fatalf("plain %s\ngeneral %s", fast, slow)
		}
		// Whichever path it takes, the statement reads back the same.
		var back Statement
		if err := json.Unmarshal(slow, &back); err != nil {
			t.Fatalf("%s: %v", slow, err)
		}
	})
}
