package store

import (
	"context"
	"strings"
	"testing"
)

func TestCheckParams(t *testing.T) {
	ok := []Statement{
		{SQL: "SELECT 1"},
		{SQL: "SELECT 1;"},
		{SQL: "SELECT 1 -- a comment to the end, no newline"},
		{SQL: "SELECT ?, ?", Args: []any{1, 2}},
		{SQL: "SELECT ?2, ?1", Args: []any{1, 2}},
		{SQL: "SELECT ':x', '?', \"?\", [?], `?` -- ?\n /* ? */", Args: nil},
		{SQL: "SELECT 'it''s ?'"},
		{SQL: "SELECT :a, :a, @b", Named: map[string]any{"a": 1, "@b": 2}},
		{SQL: "SELECT :a, :b", Args: []any{1, 2}},
		{SQL: "SELECT $x", Named: map[string]any{"$x": 1}},
		{SQL: "SELECT ?, ?, :b", Args: []any{1, 2}, Named: map[string]any{"b": 3}},
	}
	for _, st := range ok {
		if err := checkParams(st); err != nil {
			t.Errorf("%q: %v", st.SQL, err)
		}
	}
	bad := map[string]Statement{
		"expected 2 arguments, got 1":  {SQL: "SELECT ?, ?", Args: []any{1}},
		"expected 1 arguments, got 2":  {SQL: "SELECT ?", Args: []any{1, 2}},
		"expected 3 arguments, got 0":  {SQL: "SELECT ?3"},
		"2 statements":                 {SQL: "SELECT 1; SELECT 2"},
		"does not appear":              {SQL: "SELECT :a", Named: map[string]any{"b": 1}},
		"got 0 positional and 1 named": {SQL: "SELECT :a, :b, :a", Named: map[string]any{"a": 1}},
		"empty statement":              {SQL: " ; -- nothing"},
		"unterminated quoted string":   {SQL: "SELECT 'abc"},
		// :id is parameter 1: the positional value would go there and ?
		// would be NULL.
		"comes before a positional one": {SQL: "SELECT :id, ?", Args: []any{"x"}, Named: map[string]any{"id": 7}},
	}
	for want, st := range bad {
		err := checkParams(st)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: got %v, want %q", st.SQL, err, want)
		}
	}
}

func TestStatementEnd(t *testing.T) {
	for q, want := range map[string]string{
		"SELECT 1":                            "SELECT 1",
		"SELECT 1 ; -- done":                  "SELECT 1",
		"\n SELECT 'a;--' ;\n/* c */ ":        "\n SELECT 'a;--'",
		"SELECT \"x\"\"y\" FROM [t;] -- c\n;": "SELECT \"x\"\"y\" FROM [t;]",
		"SELECT ?2, :name;":                   "SELECT ?2, :name",
		"SELECT 'héé'; ":                      "SELECT 'héé'",
	} {
		if got := q[:StatementEnd(q)]; got != want {
			t.Errorf("%q: %q, want %q", q, got, want)
		}
	}
}

// TestPositionalThenNamedBind: positional arguments bind to the ?
// parameters and named ones by name, when the ? come first; a named
// parameter before a ? is refused.
func TestPositionalThenNamedBind(t *testing.T) {
	s := openTestStore(t, t.TempDir(), "a", `CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)`)
	defer s.Close()
	exec(t, s, Statement{SQL: `INSERT INTO t (id, v) VALUES (?, :v)`, Args: []any{int64(7)}, Named: map[string]any{"v": "hello"}})
	if got := dumpQuery(t, s, `SELECT id || ' ' || v FROM t`); !strings.Contains(got, "7 hello") {
		t.Fatalf("stored %q, want 7 hello", got)
	}
	if _, err := s.Transact(context.Background(), []Statement{{SQL: `INSERT INTO t (id, v) VALUES (:id, ?)`, Args: []any{"x"}, Named: map[string]any{"id": int64(8)}}}); err == nil {
		t.Fatal("a named parameter before a ? was accepted")
	}
}
