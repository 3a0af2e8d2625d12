package store

import (
	"context"
	"database/sql"
)

// stmtConn runs the store's own statements on one connection through
// prepared statements it keeps, so each is parsed once. Never client SQL:
// the writer's authorizer judges client statements when they are
// prepared, so those must be prepared each time.
type stmtConn struct {
	conn  *sql.Conn
	stmts map[string]*sql.Stmt
	// prepared counts the statements prepared, kept ones included.
	prepared int
}

// maxStmts bounds the cache; the applier's statements vary with the
// columns a changeset writes and the number of rows.
const maxStmts = 512

func newStmtConn(conn *sql.Conn) *stmtConn {
	return &stmtConn{conn: conn, stmts: map[string]*sql.Stmt{}}
}

func (c *stmtConn) prepare(ctx context.Context, q string) (*sql.Stmt, error) {
	if st, ok := c.stmts[q]; ok {
		return st, nil
	}
	if len(c.stmts) >= maxStmts {
		c.reset()
	}
	st, err := c.conn.PrepareContext(ctx, q)
	if err != nil {
		return nil, err
	}
	c.prepared++
	c.stmts[q] = st
	return st, nil
}

func (c *stmtConn) ExecContext(ctx context.Context, q string, args ...any) (sql.Result, error) {
	st, err := c.prepare(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (c *stmtConn) QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	st, err := c.prepare(ctx, q)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (c *stmtConn) QueryRowContext(ctx context.Context, q string, args ...any) *sql.Row {
	st, err := c.prepare(ctx, q)
	if err != nil {
		// Let Scan report it: a Row from a failed query.
		return c.conn.QueryRowContext(ctx, q, args...)
	}
	return st.QueryRowContext(ctx, args...)
}

// reset closes every kept statement (after a schema change, or when full).
func (c *stmtConn) reset() {
	for q, st := range c.stmts {
		st.Close()
		delete(c.stmts, q)
	}
}
