package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/patina-db/patina/internal/crdt"
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
	if len(stmts) == 0 {
		return nil, &StatementError{Index: 0, Err: errors.New("no statements"), Client: true}
	}
	res := &TxResult{Results: make([]StatementResult, 0, len(stmts))}
	start := time.Now()
	v, err := s.write(ctx, true, func(tx Tx) error {
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
			r, err := s.clientExec(ctx, st.SQL, args)
			if err != nil {
				return &StatementError{Index: i, Err: err, Client: isClientError(err)}
			}
			n, _ := r.RowsAffected()
			res.Results = append(res.Results, StatementResult{RowsAffected: n, Elapsed: time.Since(t0)})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	res.Version = v
	res.Elapsed = time.Since(start)
	return res, nil
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
// statement on tx; it must not commit or roll back.
func (s *Store) Write(ctx context.Context, fn func(tx Tx) error) (version uint64, err error) {
	return s.write(ctx, false, fn)
}

// write runs a local transaction and then, outside the lock, tells the
// commit hook about a new version.
func (s *Store) write(ctx context.Context, client bool, fn func(tx Tx) error) (uint64, error) {
	v, hooks, cs, err := s.writeLocked(ctx, client, fn)
	if err == nil && cs != nil {
		if hooks.Committed != nil {
			hooks.Committed(cs)
		}
		if hooks.Rows != nil {
			hooks.Rows(rowsOf(cs))
		}
	}
	return v, err
}

// write runs fn between BEGIN IMMEDIATE and COMMIT issued on the writer
// connection itself. Not database/sql's Tx: when a Tx's context ends it
// throws the connection away, and with it the TEMP capture triggers.
func (s *Store) writeLocked(ctx context.Context, client bool, fn func(tx Tx) error) (uint64, Hooks, *crdt.Changeset, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, Hooks{}, nil, ErrClosed
	}
	defer s.observeWrite(WriteLocal)()
	if s.broken != nil {
		return 0, Hooks{}, nil, fmt.Errorf("store: writer unusable: %w", s.broken)
	}
	next := s.head + 1
	if s.pending != next {
		if _, err := s.wint.ExecContext(ctx, `UPDATE temp.__patina_tx SET version = ?`, next); err != nil {
			return 0, Hooks{}, nil, fmt.Errorf("set pending version: %w", err)
		}
		s.pending = next
	}
	if _, err := s.wint.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return 0, Hooks{}, nil, fmt.Errorf("begin: %w", err)
	}
	rollback := func() {
		if _, err := s.wint.ExecContext(context.WithoutCancel(ctx), "ROLLBACK"); err != nil && !strings.Contains(err.Error(), "no transaction is active") {
			s.broken = fmt.Errorf("rollback failed: %w", err)
		}
	}
	s.clientSQL.Store(client)
	err := fn(s.writer)
	s.clientSQL.Store(false)
	if err != nil {
		rollback()
		return 0, Hooks{}, nil, err
	}
	touched, err := s.versionTouched(ctx, next)
	changed := len(touched) > 0
	if err != nil {
		rollback()
		return 0, Hooks{}, nil, err
	}
	var apply func()
	var cs *crdt.Changeset
	if changed {
		if s.hooks.Committed != nil || s.hooks.Rows != nil {
			// Read the new version for the hooks now, on the writer, whose
			// pages are hot, rather than after commit on another connection.
			cs = &crdt.Changeset{Actor: s.actor, Version: next}
			for _, name := range touched {
				if err := readVersionRows(ctx, s.wint, s.tableSQL(name), 0, next, cs); err != nil {
					rollback()
					return 0, Hooks{}, nil, fmt.Errorf("read version %d: %w", next, err)
				}
			}
			for i := range cs.Changes {
				cs.Changes[i].Seq = uint32(i)
			}
		}
		if apply, err = s.persistVersion(ctx, s.wint, s.actor, 0, next, false); err != nil {
			rollback()
			return 0, Hooks{}, nil, err
		}
	}
	if _, err := s.wint.ExecContext(ctx, "COMMIT"); err != nil {
		rollback()
		return 0, Hooks{}, nil, fmt.Errorf("commit: %w", err)
	}
	if !changed {
		return 0, Hooks{}, nil, nil
	}
	apply()
	s.head = next
	return next, s.hooks, cs, nil
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
// statements. They are prepared (and so authorized) while the client
// policy is in force, and kept apart from the store's own statements, so
// the cache never lets a statement skip the policy. Preparing is what is
// worth saving: it compiles the capture triggers into every write.
func (s *Store) clientExec(ctx context.Context, q string, args []any) (sql.Result, error) {
	if s.clientStmts == nil {
		s.clientStmts = newStmtConn(s.writer)
	}
	return s.clientStmts.ExecContext(ctx, q, args...)
}
