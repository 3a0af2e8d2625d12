package store

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/schemas"
)

// tb is what the helpers need of *testing.T, *testing.B and *rapid.T.
type tb interface {
	Helper()
	Fatalf(format string, args ...any)
}

func openTestStore(t tb, dir, name string, schema string) *Store {
	t.Helper()
	s, err := Open(context.Background(), Config{Path: filepath.Join(dir, name+".db")})
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	if schema != "" {
		if err := s.ApplySchemaSQL(context.Background(), schema); err != nil {
			t.Fatalf("schema %s: %v", name, err)
		}
	}
	return s
}

func regionalStore(t tb, dir, name string) *Store {
	return openTestStore(t, dir, name, schemas.Regional())
}

func exec(t tb, s *Store, stmts ...Statement) *TxResult {
	t.Helper()
	res, err := s.Transact(context.Background(), stmts)
	if err != nil {
		t.Fatalf("transact: %v", err)
	}
	return res
}

func stmt(q string, args ...any) Statement { return Statement{SQL: q, Args: args} }

// dumpTable renders a table's rows, in key order, with every value's
// storage class: equal dumps mean byte-identical tables.
func dumpTable(t tb, s *Store, table string) string {
	t.Helper()
	tb := s.Schema().Tables[table]
	var cols, pk []string
	for _, c := range tb.Columns {
		cols = append(cols, fmt.Sprintf("typeof(%[1]s) || ':' || quote(%[1]s)", quoteIdent(c.Name)))
	}
	for _, c := range tb.PK {
		pk = append(pk, quoteIdent(c.Name))
	}
	return dumpQuery(t, s, fmt.Sprintf("SELECT %s FROM %s ORDER BY %s", strings.Join(cols, " || ' ' || "), quoteIdent(table), strings.Join(pk, ", ")))
}

// dumpClock renders a table's clock with site ordinals resolved to actor
// ids, so clocks of different nodes compare.
func dumpClock(t tb, s *Store, table string) string {
	t.Helper()
	return dumpQuery(t, s, clockDumpQuery(s.Schema().Tables[table]))
}

func dumpQuery(t tb, s *Store, q string) string {
	t.Helper()
	rows, err := s.writer.QueryContext(context.Background(), q)
	if err != nil {
		t.Fatalf("dump %q: %v", q, err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatalf("dump: %v", err)
		}
		b.WriteString(line + "\n")
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("dump: %v", err)
	}
	return b.String()
}

func dumpBook(s *Store) string {
	b := s.Bookkeeping()
	var out strings.Builder
	for _, a := range b.Actors() {
		v := b.Versions(a)
		fmt.Fprintf(&out, "%s %v\n", a, v.Known.Ranges())
	}
	return out.String()
}

// changesetOf reads a committed local version back as a changeset.
func changesetOf(t tb, s *Store, v uint64) *crdt.Changeset {
	t.Helper()
	cs, _, err := s.Changes(context.Background(), s.Actor(), v)
	if err != nil {
		t.Fatalf("changes %d: %v", v, err)
	}
	return cs
}

func apply(t tb, s *Store, css ...*crdt.Changeset) ApplyResult {
	t.Helper()
	res, err := s.Apply(context.Background(), css)
	if err != nil {
		t.Fatalf("apply: %v", err)
	}
	for _, e := range res.Failed {
		t.Fatalf("apply: %v", e)
	}
	return res
}

// regionalPair is two regional stores, a and b, closed when the test ends.
func regionalPair(t testing.TB) (a, b *Store) {
	t.Helper()
	dir := t.TempDir()
	a = regionalStore(t, dir, "a")
	t.Cleanup(func() { a.Close() })
	b = regionalStore(t, dir, "b")
	t.Cleanup(func() { b.Close() })
	return a, b
}

// openSQLite opens one plain connection to path through the store's VFS,
// with the driver parameters p and no capture, closed when t ends.
func openSQLite(t testing.TB, path string, p url.Values) *sql.Conn {
	t.Helper()
	db, err := sql.Open("sqlite3", dsn(path, p))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	c, err := db.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}
