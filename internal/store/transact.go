package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mattn/go-sqlite3"
)

// Statement is one SQL statement with positional and/or named parameters.
// Parameter values are nil, int64, float64, string, []byte or bool.
type Statement struct {
	SQL   string
	Args  []any
	Named map[string]any
}

// StatementResult is what one statement of a transaction did.
type StatementResult struct {
	RowsAffected int64
	Elapsed      time.Duration
}

// TxResult is the outcome of a committed local transaction. Version is 0
// when nothing changed: such a transaction consumes no version.
type TxResult struct {
	Results []StatementResult
	Version uint64
	Elapsed time.Duration
	// Committed is when the commit returned, by this node's clock: the
	// moment the transaction became durable here and began its way to
	// the other members. Transactions committed together share it.
	Committed time.Time
}

// StatementError says which statement of a transaction failed and whether
// the failure is the caller's mistake (bad SQL, a constraint, a wrong
// parameter count) or the node's own (I/O, a full disk).
type StatementError struct {
	Index int
	Err   error
	// Client is true when the statement itself is at fault.
	Client bool
}

func (e *StatementError) Error() string {
	return fmt.Sprintf("statement %d: %v", e.Index, e.Err)
}

func (e *StatementError) Unwrap() error { return e.Err }

// Transact runs client statements in one local transaction. Any failure
// rolls back all of them. The transaction becomes this node's next version
// if it changed at least one cell.
func (s *Store) Transact(ctx context.Context, stmts []Statement) (*TxResult, error) {
	r, res := s.clientTx(ctx, stmts)
	if r == nil {
		return nil, noStatements()
	}
	_, err := s.write(ctx, r)
	return res.finish(r, err)
}

// Submit queues client statements as one local transaction, as Transact
// runs them, and returns at once; done is called with the outcome, on a
// goroutine of its own. The transactions of successive Submit calls
// commit in the order submitted (in one group commit or in successive
// ones), so a caller can queue several before any is answered: a stream
// of transactions keeps its order and still shares commits.
func (s *Store) Submit(ctx context.Context, stmts []Statement, done func(*TxResult, error)) {
	r, res := s.clientTx(ctx, stmts)
	if r == nil {
		go done(nil, noStatements())
		return
	}
	lead := s.enqueue(ctx, r)
	go func() {
		_, err := s.finish(r, lead)
		done(res.finish(r, err))
	}()
}

func noStatements() error {
	return &StatementError{Index: 0, Err: errors.New("no statements"), Client: true}
}

// pendingTx is a client transaction's result as it is being filled in.
type pendingTx struct {
	TxResult
	start time.Time
}

func (p *pendingTx) finish(r *writeReq, err error) (*TxResult, error) {
	if err != nil {
		return nil, err
	}
	p.Version, p.Committed = r.version, r.committed
	p.Elapsed = time.Since(p.start)
	return &p.TxResult, nil
}

// clientTx is the write request that runs client statements, and the
// result it fills in; nil when there are no statements.
func (s *Store) clientTx(ctx context.Context, stmts []Statement) (*writeReq, *pendingTx) {
	if len(stmts) == 0 {
		return nil, nil
	}
	res := &pendingTx{TxResult: TxResult{Results: make([]StatementResult, 0, len(stmts))}, start: time.Now()}
	return &writeReq{client: true, weight: groupWeight(stmts), fn: func(tx Tx) error {
		// A group may run a transaction again (see runGroup).
		res.Results = res.Results[:0]
		for i, st := range stmts {
			if err := checkClientSQL(st.SQL); err != nil {
				return &StatementError{Index: i, Err: err, Client: true}
			}
			if err := checkParams(st); err != nil {
				return &StatementError{Index: i, Err: err, Client: true}
			}
			args := make([]any, 0, len(st.Args)+len(st.Named))
			args = append(args, st.Args...)
			for name, val := range st.Named {
				args = append(args, sql.Named(strings.TrimLeft(name, ":@$"), val))
			}
			t0 := time.Now()
			n, err := s.clientExec(ctx, st.SQL, args)
			if err != nil {
				return &StatementError{Index: i, Err: err, Client: isClientError(err)}
			}
			res.Results = append(res.Results, StatementResult{RowsAffected: n, Elapsed: time.Since(t0)})
		}
		return nil
	}}, res
}

// Tx is the open local transaction a Write callback runs statements on.
type Tx interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
	PrepareContext(ctx context.Context, query string) (*sql.Stmt, error)
}

// Write runs fn in a local transaction with change capture, for the
// store's own callers (the host agent, tests, benchmarks). fn may run any
// statement on tx; it must not commit or roll back, and must close every
// Rows it opens (an open one would hold a read against the applier).
func (s *Store) Write(ctx context.Context, fn func(tx Tx) error) (version uint64, err error) {
	return s.write(ctx, &writeReq{alone: true, fn: fn})
}

// endTx leaves the writer outside any transaction after a failure: it
// rolls back what is open. A statement still running on the connection
// (one a canceled context cut short) would keep the rollback from
// finishing, so if the writer is still inside a transaction the cached
// statements are finalized and the rollback tried again. A writer that
// cannot be brought back is marked broken and its SQLite connection
// closed, which releases its locks: local writes then fail, but the
// applier keeps replicating.
func (s *Store) endTx(ctx context.Context) {
	if s.writerIdle() {
		return
	}
	_, err := s.wint.ExecContext(ctx, "ROLLBACK")
	if s.writerIdle() {
		return
	}
	s.wint.reset()
	if s.clientStmts != nil {
		s.clientStmts.reset()
	}
	_, err2 := s.wint.ExecContext(ctx, "ROLLBACK")
	if s.writerIdle() {
		return
	}
	s.broken = fmt.Errorf("rollback failed: %w", errors.Join(err, err2))
	// Close the SQLite connection underneath (not the sql.Conn, which
	// would wait for any rows a caller left open): closing rolls the
	// transaction back once its last statement is finalized.
	_ = s.writer.Raw(func(dc any) error {
		if c, ok := dc.(*sqlite3.SQLiteConn); ok {
			return c.Close()
		}
		return nil
	})
}

// writerIdle reports whether the writer connection is outside any
// transaction; an unusable connection counts as not idle.
func (s *Store) writerIdle() bool {
	idle := false
	err := s.writer.Raw(func(dc any) error {
		c, ok := dc.(*sqlite3.SQLiteConn)
		if !ok {
			return fmt.Errorf("writer is a %T", dc)
		}
		idle = c.AutoCommit()
		return nil
	})
	return err == nil && idle
}

// versionTouched lists the tables, in name order, in which the open
// transaction wrote a row under version v: the capture triggers add a
// version-index entry per changed row.
func (s *Store) versionTouched(ctx context.Context, v uint64) ([]string, error) {
	names := s.schema.TableNames()
	if len(names) == 0 {
		return nil, nil
	}
	parts := make([]string, len(names))
	flags := make([]bool, len(names))
	dest := make([]any, len(names))
	for i, name := range names {
		parts[i] = fmt.Sprintf("EXISTS (SELECT 1 FROM %s WHERE __patina_site = 0 AND __patina_version = ?1)", quoteIdent(vxTable(name)))
		dest[i] = &flags[i]
	}
	if err := s.wint.QueryRowContext(ctx, "SELECT "+strings.Join(parts, ", "), v).Scan(dest...); err != nil {
		return nil, fmt.Errorf("detect changes: %w", err)
	}
	var touched []string
	for i, name := range names {
		if flags[i] {
			touched = append(touched, name)
		}
	}
	return touched, nil
}

// checkClientSQL keeps client statements away from patina's own tables.
// The writer's authorizer already refuses DDL, PRAGMA, ATTACH and
// transaction control; SQLite offers no way to name a table without
// spelling it, so a textual check suffices for the internal ones.
func checkClientSQL(q string) error {
	if strings.TrimSpace(q) == "" {
		return errors.New("empty statement")
	}
	if strings.Contains(strings.ToLower(q), internalPrefix) {
		return fmt.Errorf("tables named %s* are patina's own and cannot be used in statements", internalPrefix)
	}
	return nil
}

// isClientError tells the statement's own faults from the node's.
func isClientError(err error) bool {
	var se sqlite3.Error
	if errors.As(err, &se) {
		switch se.Code {
		case sqlite3.ErrIoErr, sqlite3.ErrCorrupt, sqlite3.ErrFull, sqlite3.ErrNomem, sqlite3.ErrCantOpen,
			sqlite3.ErrReadonly, sqlite3.ErrBusy, sqlite3.ErrLocked, sqlite3.ErrNotADB, sqlite3.ErrProtocol:
			return false
		}
		return true
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	// database/sql's own argument checks ("expected 2 arguments, got 1")
	// and the driver's bind errors are about the statement.
	return true
}

// clientExec runs a client statement through a cache of prepared client
// statements and returns the rows it changed. They are prepared (and so
// authorized) while the client policy is in force, and kept apart from
// the store's own statements, so the cache never lets a statement skip
// the policy. Preparing is what is worth saving: it compiles the capture
// triggers into every write.
//
// A statement that may return rows (a SELECT, an INSERT ... RETURNING) is
// read to its end and reset, not just stepped once as Exec does: it would
// otherwise stay active in the cache. A write left in progress keeps COMMIT from
// finishing; a read left open holds a read lock that the applier's next
// write would find in the cache the writer shares with it.
func (s *Store) clientExec(ctx context.Context, q string, args []any) (int64, error) {
	if s.clientStmts == nil {
		s.clientStmts = newStmtConn(s.writer)
	}
	if returnsNoRows(q) {
		r, err := s.clientStmts.ExecContext(ctx, q, args...)
		if err != nil {
			return 0, err
		}
		return r.RowsAffected()
	}
	// changes() is what the last INSERT, UPDATE or DELETE to finish
	// changed, and a SELECT is none: it counts for this statement only
	// if one finished meanwhile, which total_changes() shows.
	var before int64
	if err := s.wint.QueryRowContext(context.WithoutCancel(ctx), "SELECT total_changes()").Scan(&before); err != nil {
		return 0, fmt.Errorf("rows changed: %w", err)
	}
	rows, err := s.clientStmts.QueryContext(ctx, q, args...)
	if err != nil {
		return 0, err
	}
	for rows.Next() {
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		return 0, err
	}
	var n, after int64
	if err := s.wint.QueryRowContext(context.WithoutCancel(ctx), "SELECT changes(), total_changes()").Scan(&n, &after); err != nil {
		return 0, fmt.Errorf("rows changed: %w", err)
	}
	if after == before {
		return 0, nil
	}
	return n, nil
}

// returnsNoRows reports whether q is sure to return no rows: an INSERT,
// UPDATE, DELETE or REPLACE with no RETURNING anywhere in its text. Only
// those take Exec's single step; anything else (a SELECT, a RETURNING, a
// WITH, a leading comment) is read to its end, which costs a statement
// more.
func returnsNoRows(q string) bool {
	q = strings.TrimLeft(q, " \t\r\n")
	dml := false
	for _, kw := range []string{"INSERT", "UPDATE", "DELETE", "REPLACE"} {
		if len(q) > len(kw) && strings.EqualFold(q[:len(kw)], kw) {
			dml = true
			break
		}
	}
	if !dml {
		return false
	}
	const ret = "returning"
	for i := 0; i+len(ret) <= len(q); i++ {
		if strings.EqualFold(q[i:i+len(ret)], ret) {
			return false
		}
	}
	return true
}
