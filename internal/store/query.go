package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	"github.com/mattn/go-sqlite3"
)

// ErrNotReadOnly is returned by Query for a statement that would write.
var ErrNotReadOnly = errors.New("statement is not read-only: only queries are allowed here")

// QueryError is a query the store refused or SQLite rejected; it is the
// caller's mistake, not the node's.
type QueryError struct{ Err error }

func (e *QueryError) Error() string { return e.Err.Error() }
func (e *QueryError) Unwrap() error { return e.Err }

// Rows is an open query result. Values are nil, int64, float64, string
// (TEXT) or []byte (BLOB). Close must be called.
type Rows struct {
	rows    *sql.Rows
	columns []string
	vals    []any
	ptrs    []any
}

// Columns names the result columns.
func (r *Rows) Columns() []string { return r.columns }

// Next advances to the next row.
func (r *Rows) Next() bool { return r.rows.Next() }

// Values returns the current row. The slice is reused by the next call.
func (r *Rows) Values() ([]any, error) {
	if err := r.rows.Scan(r.ptrs...); err != nil {
		return nil, err
	}
	return r.vals, nil
}

// Scan copies the current row into dest, as database/sql's Rows.Scan
// does. Use either Scan or Values for a row, not both.
func (r *Rows) Scan(dest ...any) error { return r.rows.Scan(dest...) }

// Err is the error that ended iteration, if any.
func (r *Rows) Err() error { return r.rows.Err() }

// Close releases the reader connection.
func (r *Rows) Close() error { return r.rows.Close() }

// Query runs a read-only statement on the reader pool. Writes, PRAGMAs and
// ATTACH are refused with ErrNotReadOnly.
func (s *Store) Query(ctx context.Context, st Statement) (*Rows, error) {
	if strings.TrimSpace(st.SQL) == "" {
		return nil, &QueryError{Err: errors.New("empty statement")}
	}
	if err := checkParams(st); err != nil {
		return nil, &QueryError{Err: err}
	}
	args := make([]any, 0, len(st.Args)+len(st.Named))
	args = append(args, st.Args...)
	for name, val := range st.Named {
		args = append(args, sql.Named(strings.TrimLeft(name, ":@$"), val))
	}
	// Only the statement: the driver would run a trailing comment after
	// its semicolon as a statement of its own, and return its (empty)
	// result instead.
	rows, err := s.readers.QueryContext(ctx, st.SQL[:StatementEnd(st.SQL)], args...)
	if err != nil {
		return nil, classifyQueryError(err)
	}
	cols, err := rows.Columns()
	if err != nil {
		rows.Close()
		return nil, classifyQueryError(err)
	}
	r := &Rows{rows: rows, columns: cols, vals: make([]any, len(cols)), ptrs: make([]any, len(cols))}
	for i := range r.vals {
		r.ptrs[i] = &r.vals[i]
	}
	return r, nil
}

func classifyQueryError(err error) error {
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrAuth, sqlite3.ErrReadonly:
			return &QueryError{Err: ErrNotReadOnly}
		}
	}
	if isClientError(err) {
		return &QueryError{Err: err}
	}
	return fmt.Errorf("query: %w", err)
}
