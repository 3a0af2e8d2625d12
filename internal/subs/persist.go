package subs

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/url"

	"github.com/patina-db/patina/internal/crdt"
)

// persister keeps subscriptions in their own SQLite file: the query, the
// materialized result and the retained changes. It is a separate file so
// that keeping subscriptions never competes with the node's writer and is
// never replicated.
type persister struct {
	db    *sql.DB
	stmts map[string]*sql.Stmt // the batch statements, prepared at open
}

// batchStatements are what save runs, prepared once.
var batchStatements = []string{
	`INSERT INTO subs (id, sql, args, named, columns, next_rowid, last_change) VALUES (?, ?, ?, ?, ?, ?, ?)`,
	`UPDATE subs SET next_rowid = ?, last_change = ? WHERE id = ?`,
	`INSERT INTO sub_changes (sub, change_id, kind, rowid, cells) VALUES (?, ?, ?, ?, ?)`,
	`INSERT OR REPLACE INTO sub_rows (sub, ident, rowid, cells) VALUES (?, ?, ?, ?)`,
	`DELETE FROM sub_rows WHERE sub = ? AND ident = ?`,
	`DELETE FROM sub_changes WHERE sub = ? AND change_id <= ?`,
}

const subsSchema = `
CREATE TABLE IF NOT EXISTS subs (
	id          TEXT PRIMARY KEY,
	sql         TEXT NOT NULL,
	args        BLOB NOT NULL,
	named       TEXT NOT NULL,
	columns     TEXT NOT NULL,
	next_rowid  INTEGER NOT NULL,
	last_change INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sub_rows (
	sub   TEXT NOT NULL,
	ident BLOB NOT NULL,
	rowid INTEGER NOT NULL,
	cells BLOB NOT NULL,
	PRIMARY KEY (sub, ident)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sub_changes (
	sub       TEXT NOT NULL,
	change_id INTEGER NOT NULL,
	kind      INTEGER NOT NULL,
	rowid     INTEGER NOT NULL,
	cells     BLOB NOT NULL,
	PRIMARY KEY (sub, change_id)
) WITHOUT ROWID;
`

func openPersister(ctx context.Context, path string) (*persister, error) {
	if path == "" {
		return nil, fmt.Errorf("subscriptions: no database path")
	}
	params := url.Values{}
	params.Set("_journal_mode", "WAL")
	// No fsync, ever: the file survives a crash of the process (the OS
	// has the writes). After a power loss it may come back older, and
	// the change ids after its last saved one are issued again for what
	// the rows are then (see docs/operations.md). An fsync per
	// checkpoint would stall the engine loop for as long as the disk
	// takes.
	params.Set("_synchronous", "OFF")
	params.Set("_busy_timeout", "5000")
	params.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite3", "file:"+(&url.URL{Path: path}).EscapedPath()+"?"+params.Encode())
	if err != nil {
		return nil, fmt.Errorf("subscriptions: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, subsSchema); err != nil {
		db.Close()
		return nil, fmt.Errorf("subscriptions: open %s: %w", path, err)
	}
	p := &persister{db: db, stmts: map[string]*sql.Stmt{}}
	for _, q := range batchStatements {
		st, err := db.PrepareContext(ctx, q)
		if err != nil {
			p.close()
			return nil, fmt.Errorf("subscriptions: open %s: %w", path, err)
		}
		p.stmts[q] = st
	}
	return p, nil
}

func (p *persister) close() error {
	for _, st := range p.stmts {
		st.Close()
	}
	return p.db.Close()
}

// exec runs one of the batch statements in tx.
func (p *persister) exec(ctx context.Context, tx *sql.Tx, q string, args ...any) error {
	st := p.stmts[q]
	if st == nil {
		return fmt.Errorf("statement not prepared: %s", q)
	}
	_, err := tx.StmtContext(ctx, st).ExecContext(ctx, args...)
	return err
}

// saved is what one evaluation changed in a subscription.
type saved struct {
	sub     *Sub
	changes []Change
	header  bool // a new subscription: write its query too
}

// save writes a batch of evaluations in one transaction.
func (p *persister) save(ctx context.Context, batch []saved, window int) error {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("subscriptions: save: %w", err)
	}
	defer tx.Rollback()
	for _, sv := range batch {
		if err := p.saveOne(ctx, tx, sv, window); err != nil {
			return fmt.Errorf("subscriptions: save %s: %w", sv.sub.ID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("subscriptions: save: %w", err)
	}
	return nil
}

func (p *persister) saveOne(ctx context.Context, tx *sql.Tx, sv saved, window int) error {
	s := sv.sub
	s.mu.Lock()
	defer s.mu.Unlock()
	if sv.header {
		var args []byte
		if len(s.Query.Args) > 0 {
			args = crdt.PackValues(s.Query.Args)
		}
		named := map[string][]byte{}
		for k, v := range s.Query.Named {
			named[k] = crdt.PackValues([]crdt.Value{v})
		}
		namedJSON, _ := json.Marshal(named)
		colsJSON, _ := json.Marshal(s.columns)
		if err := p.exec(ctx, tx, `INSERT INTO subs (id, sql, args, named, columns, next_rowid, last_change) VALUES (?, ?, ?, ?, ?, ?, ?)`,
			s.ID, s.Query.SQL, nonNilBytes(args), string(namedJSON), string(colsJSON), s.nextRowID, s.last); err != nil {
			return err
		}
	} else if err := p.exec(ctx, tx, `UPDATE subs SET next_rowid = ?, last_change = ? WHERE id = ?`, s.nextRowID, s.last, s.ID); err != nil {
		return err
	}
	for _, c := range sv.changes {
		cells := crdt.PackValues(c.Cells)
		if err := p.exec(ctx, tx, `INSERT INTO sub_changes (sub, change_id, kind, rowid, cells) VALUES (?, ?, ?, ?, ?)`,
			s.ID, int64(c.ID), int(c.Kind), c.RowID, cells); err != nil {
			return err
		}
	}
	for ident := range s.dirty {
		if r := s.rows[ident]; r != nil {
			if err := p.exec(ctx, tx, `INSERT OR REPLACE INTO sub_rows (sub, ident, rowid, cells) VALUES (?, ?, ?, ?)`, s.ID, []byte(ident), r.rowid, r.cells); err != nil {
				return err
			}
		} else if err := p.exec(ctx, tx, `DELETE FROM sub_rows WHERE sub = ? AND ident = ?`, s.ID, []byte(ident)); err != nil {
			return err
		}
	}
	clear(s.dirty)
	if s.last > uint64(window) {
		if err := p.exec(ctx, tx, `DELETE FROM sub_changes WHERE sub = ? AND change_id <= ?`, s.ID, int64(s.last)-int64(window)); err != nil {
			return err
		}
	}
	return nil
}

func nonNilBytes(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// remove deletes a subscription.
func (p *persister) remove(ctx context.Context, id string) error {
	tx, err := p.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, q := range []string{`DELETE FROM subs WHERE id = ?`, `DELETE FROM sub_rows WHERE sub = ?`, `DELETE FROM sub_changes WHERE sub = ?`} {
		if _, err := tx.ExecContext(ctx, q, id); err != nil {
			return err
		}
	}
	return tx.Commit()
}

// load reads every stored subscription. Their plans are set by the caller.
// A subscription whose record does not decode is left out and named in
// damaged, for the caller to drop: one bad record must not keep the
// agent from starting.
func (p *persister) load(ctx context.Context, window int) (out []*Sub, damaged map[string]error, err error) {
	rows, err := p.db.QueryContext(ctx, `SELECT id, sql, args, named, columns, next_rowid, last_change FROM subs ORDER BY id`)
	if err != nil {
		return nil, nil, fmt.Errorf("subscriptions: load: %w", err)
	}
	damaged = map[string]error{}
	for rows.Next() {
		var id, sqlText, namedJSON, colsJSON string
		var args []byte
		var next, last int64
		if err := rows.Scan(&id, &sqlText, &args, &namedJSON, &colsJSON, &next, &last); err != nil {
			rows.Close()
			return nil, nil, fmt.Errorf("subscriptions: load: %w", err)
		}
		s, err := decodeSub(id, sqlText, args, namedJSON, colsJSON, next, last, window)
		if err != nil {
			damaged[id] = err
			continue
		}
		out = append(out, s)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("subscriptions: load: %w", err)
	}
	kept := out[:0]
	for _, s := range out {
		if err := p.loadState(ctx, s, window); err != nil {
			if ctx.Err() != nil {
				return nil, nil, err
			}
			damaged[s.ID] = err
			continue
		}
		kept = append(kept, s)
	}
	return kept, damaged, nil
}

// decodeSub builds a subscription from its stored record.
func decodeSub(id, sqlText string, args []byte, namedJSON, colsJSON string, next, last int64, window int) (*Sub, error) {
	q := Query{SQL: sqlText}
	if len(args) > 0 {
		var err error
		if q.Args, err = crdt.UnpackValues(args); err != nil {
			return nil, fmt.Errorf("arguments: %w", err)
		}
	}
	var named map[string][]byte
	if err := json.Unmarshal([]byte(namedJSON), &named); err != nil {
		return nil, fmt.Errorf("named arguments: %w", err)
	}
	for k, b := range named {
		v, err := crdt.UnpackValues(b)
		if err != nil || len(v) != 1 {
			return nil, fmt.Errorf("named argument %s: %v", k, err)
		}
		if q.Named == nil {
			q.Named = map[string]crdt.Value{}
		}
		q.Named[k] = v[0]
	}
	s := &Sub{ID: id, Query: q, window: window, nextRowID: next, last: uint64(last), visible: uint64(last), rows: map[string]*resultRow{}, wake: make(chan struct{}), dirty: map[string]struct{}{}}
	if err := json.Unmarshal([]byte(colsJSON), &s.columns); err != nil {
		return nil, fmt.Errorf("columns: %w", err)
	}
	return s, nil
}

func (p *persister) loadState(ctx context.Context, s *Sub, window int) error {
	rows, err := p.db.QueryContext(ctx, `SELECT ident, rowid, cells FROM sub_rows WHERE sub = ?`, s.ID)
	if err != nil {
		return err
	}
	for rows.Next() {
		var ident, cells []byte
		var rowid int64
		if err := rows.Scan(&ident, &rowid, &cells); err != nil {
			rows.Close()
			return err
		}
		s.rows[string(ident)] = &resultRow{rowid: rowid, cells: cells}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	rows, err = p.db.QueryContext(ctx, `SELECT change_id, kind, rowid, cells FROM sub_changes WHERE sub = ? AND change_id > ? ORDER BY change_id`, s.ID, int64(s.last)-int64(window))
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var id, rowid int64
		var kind int
		var cells []byte
		if err := rows.Scan(&id, &kind, &rowid, &cells); err != nil {
			return err
		}
		vals, err := crdt.UnpackValues(cells)
		if err != nil {
			return fmt.Errorf("change %d: %w", id, err)
		}
		s.log = append(s.log, Change{ID: uint64(id), Kind: ChangeKind(kind), RowID: rowid, Cells: vals})
	}
	if err := rows.Err(); err != nil {
		return err
	}
	// The window must end at the last change, contiguous.
	for i, c := range s.log {
		if c.ID != s.last-uint64(len(s.log)-1-i) {
			return fmt.Errorf("retained changes are not contiguous up to %d", s.last)
		}
	}
	return nil
}

// restore attaches the plan to a loaded subscription and rebuilds the key
// index from the row identities.
func (s *Sub) restore(plan *Plan) error {
	s.plan = plan
	s.byKey = make([]map[string]map[string]struct{}, len(plan.Occurrences))
	for i := range s.byKey {
		s.byKey[i] = map[string]map[string]struct{}{}
	}
	for ident, r := range s.rows {
		vals, err := crdt.UnpackValues([]byte(ident))
		if err != nil || len(vals) != plan.KeyColumns {
			return fmt.Errorf("row identity does not match the query's keys")
		}
		r.keys = make([][]byte, len(plan.Occurrences))
		for i, o := range plan.Occurrences {
			kv := vals[o.First : o.First+len(o.PK)]
			if kv[0].Kind != crdt.Null {
				r.keys[i] = crdt.PackPK(kv)
			}
		}
		s.load(ident, r)
	}
	return nil
}
