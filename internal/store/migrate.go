package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
)

// createRe finds the object a CREATE TABLE or CREATE INDEX statement names.
var createRe = regexp.MustCompile(`(?is)^\s*CREATE\s+(?:UNIQUE\s+)?(TABLE|INDEX)\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:main\.)?("(?:[^"]|"")+"|\[[^\]]+\]|` + "`[^`]+`" + `|[^\s(]+)`)

func unquoteIdent(s string) string {
	if len(s) >= 2 {
		switch {
		case s[0] == '"' && s[len(s)-1] == '"':
			return strings.ReplaceAll(s[1:len(s)-1], `""`, `"`)
		case s[0] == '[' && s[len(s)-1] == ']', s[0] == '`' && s[len(s)-1] == '`':
			return s[1 : len(s)-1]
		}
	}
	return s
}

// scratch is an in-memory database used to evaluate a schema before the
// real one is touched.
type scratch struct {
	db   *sql.DB
	conn *sql.Conn
	// client is set while a caller's statement runs: the authorizer then
	// allows schema statements on the scratch database and nothing else
	// (no ATTACH, which would reach the live database or make files; no
	// VACUUM INTO, PRAGMA or rows written).
	client atomic.Bool
}

func newScratch(ctx context.Context) (*scratch, error) {
	db, err := sql.Open("sqlite3", "file::memory:?_foreign_keys=0")
	if err != nil {
		return nil, fmt.Errorf("schema scratch: %w", err)
	}
	conn, err := db.Conn(ctx)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("schema scratch: %w", err)
	}
	sc := &scratch{db: db, conn: conn}
	err = authorizeWhile(conn, &sc.client, schemaAuthorizer)
	if err != nil {
		sc.close()
		return nil, fmt.Errorf("schema scratch: %w", err)
	}
	return sc, nil
}

// schemaAuthorizer allows what a migration's statements may do in the
// scratch copy of the schema, which is in memory and holds no rows: create,
// alter and drop its tables, indexes, views and triggers (the schema rules
// then refuse the last two by name), which writes its schema table. Nothing
// that reaches past it: no ATTACH (another database, the live one
// included, or a new file: VACUUM INTO attaches its target), no PRAGMA, no
// TEMP objects, no transaction control.
func schemaAuthorizer(op int, table, db string) int {
	switch op {
	case authAlterTable: // its last argument is not always the database
		return authOK
	case authRead, authSelect, authFunction, authRecursive:
		return authOK
	case authCreateIndex, authCreateTable, authCreateView, authCreateTrigger,
		authDropIndex, authDropTable, authDropView, authDropTrigger, authReindex,
		authInsert, authUpdate, authDelete:
		// ALTER TABLE also rewrites the (empty) TEMP schema table.
		if db == "main" || db == "temp" && (table == "sqlite_temp_master" || table == "sqlite_temp_schema") {
			return authOK
		}
	}
	return authDeny
}

// migrationVerb is the keyword a migration statement starts with: it
// takes CREATE, ALTER and DROP, nothing else.
func migrationVerb(q string) (string, bool) {
	fields := strings.Fields(string(sqlCode(q)))
	if len(fields) == 0 {
		return "", false
	}
	verb := strings.ToUpper(fields[0])
	return verb, verb == "CREATE" || verb == "ALTER" || verb == "DROP"
}

// run runs a caller's statement under schemaAuthorizer.
func (s *scratch) run(ctx context.Context, q string) error {
	s.client.Store(true)
	defer s.client.Store(false)
	_, err := s.conn.ExecContext(ctx, q)
	return err
}

func (s *scratch) close() { s.conn.Close(); s.db.Close() }

// Migrate applies schema statements (CREATE TABLE, CREATE INDEX, ALTER
// TABLE ... ADD COLUMN, DROP INDEX, or a CREATE TABLE that restates an
// existing table with more columns) on top of the current schema, if the
// result only adds. Otherwise it returns a *SchemaError naming the refused
// part and changes nothing.
func (s *Store) Migrate(ctx context.Context, stmts []string) error {
	if len(stmts) == 0 {
		return &SchemaError{Reason: "no statements"}
	}
	sc, err := newScratch(ctx)
	if err != nil {
		return err
	}
	defer sc.close()
	cur := s.Schema()
	for _, name := range cur.TableNames() {
		if _, err := sc.conn.ExecContext(ctx, cur.Tables[name].SQL); err != nil {
			return fmt.Errorf("schema scratch: %w", err)
		}
	}
	for _, name := range sortedKeys(cur.Indexes) {
		if _, err := sc.conn.ExecContext(ctx, cur.Indexes[name].SQL); err != nil {
			return fmt.Errorf("schema scratch: %w", err)
		}
	}
	for i, q := range stmts {
		if verb, ok := migrationVerb(q); !ok {
			return &SchemaError{Reason: fmt.Sprintf("statement %d: %q: a migration takes CREATE, ALTER and DROP statements", i, verb)}
		}
		if strings.Contains(strings.ToLower(q), internalPrefix) {
			return &SchemaError{Reason: fmt.Sprintf("statement %d: names starting with %s are reserved", i, internalPrefix)}
		}
		restated := ""
		if m := createRe.FindStringSubmatch(q); m != nil {
			kind, name := strings.ToUpper(m[1]), unquoteIdent(m[2])
			if kind == "TABLE" && cur.Tables[name] != nil {
				restated = name
				// A restated table replaces the old definition in the scratch
				// copy; the comparison below decides whether that is allowed.
				if _, err := sc.conn.ExecContext(ctx, "DROP TABLE "+quoteIdent(name)); err != nil {
					return fmt.Errorf("schema scratch: %w", err)
				}
			}
			if kind == "INDEX" && cur.Indexes[name] != nil {
				if _, err := sc.conn.ExecContext(ctx, "DROP INDEX IF EXISTS "+quoteIdent(name)); err != nil {
					return fmt.Errorf("schema scratch: %w", err)
				}
			}
		}
		if err := sc.run(ctx, q); err != nil {
			return &SchemaError{Reason: fmt.Sprintf("statement %d: %v", i, err)}
		}
		// Dropping the restated table took its indexes: they stay unless
		// the migration drops them itself. One that no longer fits the
		// new definition (a column gone) is left out: the comparison then
		// refuses the migration, naming the column.
		for _, name := range sortedKeys(cur.Indexes) {
			if idx := cur.Indexes[name]; restated != "" && idx.Table == restated {
				_, _ = sc.conn.ExecContext(ctx, idx.SQL)
			}
		}
	}
	want, err := readSchema(ctx, sc.conn)
	if err != nil {
		return err
	}
	return s.migrateTo(ctx, cur, want)
}

// ApplySchemaFiles makes the database's schema the one in the given .sql
// files and directories of .sql files (read in name order). The files are
// the whole desired schema: a table missing from them is a refused drop.
func (s *Store) ApplySchemaFiles(ctx context.Context, paths []string) error {
	text, err := ReadSchemaFiles(paths)
	if err != nil {
		return err
	}
	return s.ApplySchemaSQL(ctx, text)
}

// ApplySchemaSQL is ApplySchemaFiles for schema text.
func (s *Store) ApplySchemaSQL(ctx context.Context, text string) error {
	want, err := schemaOf(ctx, text)
	if err != nil {
		return err
	}
	return wholeSchema(s.migrateTo(ctx, s.Schema(), want))
}

// CheckSchemaFiles reports whether an agent with the given schema files
// could start on the database file at path, without changing the file:
// the files may add tables, columns and indexes (the agent applies them
// when it starts); a table or column the database has and the files lack,
// or hold otherwise, is refused as it would be at start.
func CheckSchemaFiles(ctx context.Context, path string, paths []string) error {
	text, err := ReadSchemaFiles(paths)
	if err != nil {
		return err
	}
	want, err := schemaOf(ctx, text)
	if err != nil {
		return err
	}
	db, conn, err := openFile(ctx, path)
	if err != nil {
		return err
	}
	defer db.Close()
	defer conn.Close()
	cur, err := readSchema(ctx, conn)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	_, err = planMigration(cur, want)
	return wholeSchema(err)
}

// schemaOf is the schema that schema text describes.
func schemaOf(ctx context.Context, text string) (*Schema, error) {
	if strings.Contains(strings.ToLower(text), internalPrefix) {
		return nil, &SchemaError{Reason: "names starting with " + internalPrefix + " are reserved"}
	}
	sc, err := newScratch(ctx)
	if err != nil {
		return nil, err
	}
	defer sc.close()
	if _, err := sc.conn.ExecContext(ctx, text); err != nil {
		return nil, &SchemaError{Reason: err.Error()}
	}
	return readSchema(ctx, sc.conn)
}

// wholeSchema words a refused migration to schema files, which are the
// whole schema: what they lack is most often a table or column added by
// a migration and not to the files.
func wholeSchema(err error) error {
	var se *SchemaError
	if errors.As(err, &se) {
		switch se.Reason {
		case reasonDropTable:
			se.Reason = "the database has it and the schema files do not; " + reasonDropTable + " (a table added by POST /v1/migrations must be added to the files too)"
		case reasonDropColumn:
			se.Reason = "the database has it and the schema files do not; " + reasonDropColumn + " (a column added by POST /v1/migrations must be added to the files too)"
		}
	}
	return err
}

// ReadSchemaFiles concatenates the .sql files named by paths, expanding
// directories to their .sql files in name order.
func ReadSchemaFiles(paths []string) (string, error) {
	var files []string
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("schema: %w", err)
		}
		if !fi.IsDir() {
			files = append(files, p)
			continue
		}
		matches, err := filepath.Glob(filepath.Join(p, "*.sql"))
		if err != nil {
			return "", fmt.Errorf("schema: %w", err)
		}
		sort.Strings(matches)
		files = append(files, matches...)
	}
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("schema: %w", err)
		}
		b.Write(data)
		b.WriteString("\n;\n")
	}
	return b.String(), nil
}

func (s *Store) migrateTo(ctx context.Context, cur, want *Schema) error {
	plan, err := planMigration(cur, want)
	if err != nil {
		return err
	}
	if plan.empty() {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if s.schema != cur {
		return fmt.Errorf("schema: changed concurrently, retry")
	}
	var stmts []string
	for _, t := range plan.newTables {
		stmts = append(stmts, t.SQL)
		stmts = append(stmts, clockDDL(t)...)
	}
	for _, name := range sortedKeys(plan.newColumns) {
		for _, c := range plan.newColumns[name] {
			stmts = append(stmts, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s", quoteIdent(name), columnDef(c)))
			stmts = append(stmts, addColumnDDL(name, c)...)
		}
	}
	for _, name := range plan.dropIndexes {
		stmts = append(stmts, "DROP INDEX IF EXISTS "+quoteIdent(name))
	}
	for _, idx := range plan.createIndex {
		stmts = append(stmts, idx.SQL)
	}
	if _, err := s.writer.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	rollback := func() { _, _ = s.writer.ExecContext(context.WithoutCancel(ctx), "ROLLBACK") }
	for _, q := range stmts {
		if _, err := s.writer.ExecContext(ctx, q); err != nil {
			rollback()
			return &SchemaError{Reason: fmt.Sprintf("%v (in %s)", err, q)}
		}
	}
	// The new schema is read and the capture rebuilt inside the same
	// transaction: if anything fails (or the caller goes away) before
	// the commit, all of it rolls back, and after it nothing is left to
	// do that could fail. A schema committed without its capture would
	// leave writes to the new columns unreplicated.
	next, err := readSchema(ctx, s.writer)
	if err != nil {
		rollback()
		return fmt.Errorf("migrate: reread schema: %w", err)
	}
	for name := range plan.changedTable {
		if err := s.installCapture(ctx, next.Tables[name]); err != nil {
			rollback()
			return err
		}
	}
	if err := s.commit(ctx, s.writer); err != nil {
		rollback()
		return fmt.Errorf("migrate: commit: %w", err)
	}
	s.schema = next
	s.dropApplierStmts()
	return nil
}
