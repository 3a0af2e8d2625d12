package reseed

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	_ "github.com/mattn/go-sqlite3" // the database/sql driver
)

// sqliteSource reads one table of a SQLite database (an apps database, a
// snapshot) into the cluster's table of the same name, by its column
// names. Ranges follow the table's own order: the rowid, or the primary
// key of a WITHOUT ROWID table.
type sqliteSource struct {
	path  string
	table string // as the source spells it
	db    *sql.DB
	cols  []string
	key   []string // "rowid", or the primary key columns
	up    *upsert  // on the source's primary key
}

func openSQLite(ctx context.Context, path, table string) (*sqliteSource, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("reseed: SQLite source %s: %w", path, err)
	}
	if _, err := os.Stat(abs); err != nil {
		return nil, fmt.Errorf("reseed: SQLite source: %w", err)
	}
	if table == "" {
		return nil, errors.New("reseed: a SQLite source needs a table (--table)")
	}
	// Read-only and immutable to us: mode=ro, no writes, no journal
	// created next to the file.
	dsn := "file:" + (&url.URL{Path: abs}).EscapedPath() + "?mode=ro"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("reseed: SQLite source %s: %w", path, err)
	}
	s := &sqliteSource{path: abs, db: db}
	if err := s.describe(ctx, table); err != nil {
		db.Close()
		return nil, err
	}
	return s, nil
}

// describe finds the table, its columns and its order key.
func (s *sqliteSource) describe(ctx context.Context, table string) error {
	var name string
	var withoutRowid int
	err := s.db.QueryRowContext(ctx, `SELECT name, wr FROM pragma_table_list WHERE type = 'table' AND schema = 'main' AND name = ? COLLATE NOCASE`, table).Scan(&name, &withoutRowid)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("reseed: SQLite source %s has no table %q", s.path, table)
	}
	if err != nil {
		return fmt.Errorf("reseed: SQLite source %s: %w", s.path, err)
	}
	s.table = name
	rows, err := s.db.QueryContext(ctx, `SELECT name, pk FROM pragma_table_info(?) ORDER BY cid`, name)
	if err != nil {
		return fmt.Errorf("reseed: SQLite source %s: table %s: %w", s.path, name, err)
	}
	defer rows.Close()
	var pk []string
	pkAt := map[int]string{}
	for rows.Next() {
		var col string
		var pos int
		if err := rows.Scan(&col, &pos); err != nil {
			return fmt.Errorf("reseed: SQLite source %s: table %s: %w", s.path, name, err)
		}
		s.cols = append(s.cols, col)
		if pos > 0 {
			pkAt[pos] = col
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reseed: SQLite source %s: table %s: %w", s.path, name, err)
	}
	for i := 1; i <= len(pkAt); i++ {
		pk = append(pk, pkAt[i])
	}
	if len(pk) == 0 {
		return fmt.Errorf("reseed: SQLite source %s: table %s has no primary key: rows are upserted on the primary key the cluster's table shares", s.path, name)
	}
	s.up = newUpsert(name, s.cols, pk)
	s.key = []string{"rowid"}
	if withoutRowid == 1 {
		s.key = pk
	}
	return nil
}

func (s *sqliteSource) Identity() string { return "sqlite:" + s.path + "#" + s.table }

func (s *sqliteSource) Close() error { return s.db.Close() }

// CheckTarget requires the cluster's table to have every column of the
// source's and the same primary key: rows are upserted on it.
func (s *sqliteSource) CheckTarget(ctx context.Context, cl cluster) error {
	return requireTable(ctx, cl, s.up)
}

// keyList is the order key as SQL: "rowid" or "(a, b)".
func (s *sqliteSource) keyList(raw bool) string {
	parts := make([]string, len(s.key))
	for i, k := range s.key {
		if k == "rowid" && len(s.key) == 1 {
			parts[i] = "rowid"
		} else {
			parts[i] = quoteIdent(k)
		}
		if !raw {
			// Unary + drops the declared type, so the driver hands back
			// the stored value as it is (no DATETIME or BOOLEAN guessing).
			parts[i] = "+" + parts[i]
		}
	}
	return strings.Join(parts, ", ")
}

func (s *sqliteSource) Plan(ctx context.Context, n int) ([]Range, error) {
	var count int
	if err := s.db.QueryRowContext(ctx, "SELECT count(*) FROM "+quoteIdent(s.table)).Scan(&count); err != nil {
		return nil, fmt.Errorf("reseed: SQLite source %s: %w", s.path, err)
	}
	points := splitPoints(count, n)
	splits := make([]Key, 0, len(points))
	if len(points) > 0 {
		rows, err := s.db.QueryContext(ctx, "SELECT "+s.keyList(false)+" FROM "+quoteIdent(s.table)+" ORDER BY "+s.keyList(true))
		if err != nil {
			return nil, fmt.Errorf("reseed: SQLite source %s: %w", s.path, err)
		}
		defer rows.Close()
		vals := make([]any, len(s.key))
		ptrs := make([]any, len(s.key))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		for pos, next := 0, 0; next < len(points) && rows.Next(); pos++ {
			if pos != points[next] {
				continue
			}
			if err := rows.Scan(ptrs...); err != nil {
				return nil, fmt.Errorf("reseed: SQLite source %s: %w", s.path, err)
			}
			splits = append(splits, append(Key(nil), vals...))
			next++
		}
		if err := rows.Err(); err != nil {
			return nil, fmt.Errorf("reseed: SQLite source %s: %w", s.path, err)
		}
		if len(splits) != len(points) {
			return nil, fmt.Errorf("reseed: SQLite source %s: table %s changed while it was read", s.path, s.table)
		}
	}
	return rangesFromSplits(splits, points, count), nil
}

func (s *sqliteSource) OpenRange(ctx context.Context, r Range) (rangeReader, error) {
	for _, k := range []Key{r.Lo, r.Hi} {
		if k != nil && len(k) != len(s.key) {
			return nil, fmt.Errorf("reseed: %s: keys of %d values, the table's order has %d", r, len(k), len(s.key))
		}
	}
	return &sqliteRange{src: s, r: r}, nil
}

// sqliteRange reads a range by its key, one batch per query: each query
// starts after the last key the previous one returned.
type sqliteRange struct {
	src   *sqliteSource
	r     Range
	after Key
	done  bool
}

func (r *sqliteRange) Next(ctx context.Context, maxRows, maxBytes int) (*batch, error) {
	if r.done {
		return nil, nil
	}
	s := r.src
	keyRaw := "(" + s.keyList(true) + ")"
	marks := "(" + strings.TrimSuffix(strings.Repeat("?, ", len(s.key)), ", ") + ")"
	var where []string
	var args []any
	switch {
	case r.after != nil:
		where = append(where, keyRaw+" > "+marks)
		args = append(args, r.after...)
	case r.r.Lo != nil:
		where = append(where, keyRaw+" >= "+marks)
		args = append(args, r.r.Lo...)
	}
	if r.r.Hi != nil {
		where = append(where, keyRaw+" < "+marks)
		args = append(args, r.r.Hi...)
	}
	cols := make([]string, len(s.cols))
	for i, c := range s.cols {
		cols[i] = "+" + quoteIdent(c)
	}
	q := "SELECT " + strings.Join(cols, ", ") + ", " + s.keyList(false) + " FROM " + quoteIdent(s.table)
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY " + s.keyList(true) + " LIMIT ?"
	args = append(args, maxRows)
	rows, err := s.db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("reseed: SQLite source %s: %w", s.path, err)
	}
	defer rows.Close()
	width := len(s.cols)
	var values []any
	b := &batch{}
	size := 0
	for (size < maxBytes || b.Rows == 0) && rows.Next() {
		row := make([]any, width+len(s.key))
		ptrs := make([]any, len(row))
		for i := range row {
			ptrs[i] = &row[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, fmt.Errorf("reseed: SQLite source %s: %w", s.path, err)
		}
		for _, v := range row[:width] {
			size += valueSize(v)
		}
		values = append(values, row[:width]...)
		key := Key(row[width:])
		if b.First == nil {
			b.First = key
		}
		b.Last = key
		b.Rows++
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("reseed: SQLite source %s: %w", s.path, err)
	}
	if b.Rows == 0 {
		r.done = true
		return nil, nil
	}
	r.after = b.Last
	b.Stmts = s.up.statements(values)
	return b, nil
}

func (r *sqliteRange) Close() error { return nil }
