package store

import (
	"context"
	"errors"
	"math"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"pgregory.net/rapid"

	"github.com/patina-db/patina/internal/crdt"
)

// TestValueFitsAsSQLiteStores: for every affinity and any value,
// valueFits says what SQLite does: a value fits exactly when a column
// of that affinity stores it with its own type. The shortcuts it takes
// without asking SQLite are checked here against SQLite itself.
func TestValueFitsAsSQLiteStores(t *testing.T) {
	st := openTestStore(t, t.TempDir(), "a", `CREATE TABLE v (id TEXT NOT NULL PRIMARY KEY, i INTEGER, n NUMERIC, r REAL, t TEXT, b BLOB);`)
	ts := st.tableSQL("v")
	ref := openSQLite(t, filepath.Join(t.TempDir(), "ref.db"), url.Values{})
	if _, err := ref.ExecContext(context.Background(), `CREATE TABLE v (k INTEGER PRIMARY KEY, i INTEGER, n NUMERIC, r REAL, t TEXT, b BLOB)`); err != nil {
		t.Fatal(err)
	}
	values := rapid.OneOf(
		rapid.Just(crdt.NullValue()),
		rapid.Map(rapid.Int64(), crdt.IntValue),
		rapid.Map(rapid.Float64(), crdt.RealValue),
		rapid.Map(rapid.Int64Range(-1<<53, 1<<53), func(i int64) crdt.Value { return crdt.RealValue(float64(i)) }),
		rapid.Map(rapid.SampledFrom([]float64{math.Inf(1), math.Inf(-1), math.Copysign(0, -1), 0, 1e18, 9.3e18, -9.3e18, math.Ldexp(1, 63), -math.Ldexp(1, 63)}), crdt.RealValue),
		rapid.Map(rapid.String(), crdt.TextValue),
		rapid.Map(rapid.SampledFrom([]string{"5", " 5 ", "5.0", "-0", "1e3", "0x10", "1e400", "0.10000000000000000000001", "12345678901234567890123", "+7", ".5", "5.", "abc", "", " ", "1_000", "inf", "NaN", "\t12\n"}), crdt.TextValue),
		rapid.Map(rapid.SliceOf(rapid.Byte()), crdt.BlobValue),
	)
	rapid.Check(t, func(rt *rapid.T) {
		v := values.Draw(rt, "value")
		if v.Kind == crdt.Real && math.IsNaN(v.Float) {
			return // refused by Validate before any of this
		}
		for i, col := range []string{"i", "n", "r", "t", "b"} {
			var typ string
			if err := ref.QueryRowContext(context.Background(), "REPLACE INTO v (k, "+col+") VALUES (1, ?) RETURNING typeof("+col+")", v.Go()).Scan(&typ); err != nil {
				rt.Fatal(err)
			}
			got, err := st.valueFits(context.Background(), ts, i, v)
			if err != nil {
				rt.Fatal(err)
			}
			if want := typ == v.Kind.String(); got != want {
				rt.Fatalf("%s column, %s value %s: fits %v, but SQLite stores it as %s", ts.affinity[i], v.Kind, v, got, typ)
			}
		}
	})
}

// TestValuesThatChangeTypeAreRefused: a changeset whose value would be
// stored as another type (a text '5' in an INTEGER column, a number in
// a TEXT one) is refused for good: applied as it came, it would make
// the merge of a col_version tie depend on the order of arrival.
func TestValuesThatChangeTypeAreRefused(t *testing.T) {
	a, b := regionalPair(t)
	exec(t, a, stmt(`INSERT INTO machines (id, app, port) VALUES ('m1', 'web', 7)`))
	base := changesetOf(t, a, 1)
	version := uint64(0)
	with := func(col string, v crdt.Value) *crdt.Changeset {
		version++
		cs := &crdt.Changeset{Actor: crdt.ActorID{9}, Version: version}
		for _, c := range base.Changes {
			if c.Column == col {
				c.Value = v
			}
			cs.Changes = append(cs.Changes, c)
		}
		return cs
	}
	for _, tc := range []struct {
		col     string
		v       crdt.Value
		refused bool
	}{
		{"port", crdt.TextValue("5"), true},
		{"port", crdt.RealValue(7), true},
		{"app", crdt.IntValue(5), true},
		{"app", crdt.RealValue(2.5), true},
		{"port", crdt.RealValue(7.5), false},
		{"port", crdt.TextValue("abc"), false},
		{"port", crdt.NullValue(), false},
	} {
		res, err := b.Apply(context.Background(), []*crdt.Changeset{with(tc.col, tc.v)})
		if err != nil {
			t.Fatal(err)
		}
		refused := len(res.Failed) == 1 && errors.Is(res.Failed[0], ErrRefused) && strings.Contains(res.Failed[0].Error(), "stored as another type")
		if refused != tc.refused || (!tc.refused && res.Applied != 1) {
			t.Errorf("%s = %s %s: %+v", tc.col, tc.v.Kind, tc.v, res)
		}
	}
}
