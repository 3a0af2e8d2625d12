package store

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// internalPrefix marks every table, index and trigger patina owns.
const internalPrefix = "__patina"

// Column is one column of a replicated table as SQLite reports it.
type Column struct {
	Name       string
	Type       string // declared type, as written
	NotNull    bool
	Default    string // SQL text of the default, "" when none
	PKPosition int    // 1-based position in the primary key, 0 when not part of it
	// Strict: the column of a STRICT table, where a column declared ANY
	// keeps values as given (no affinity), not NUMERIC as elsewhere.
	Strict bool
}

// affinity is the column's affinity by SQLite's rules.
func (c Column) affinity() string {
	if c.Strict && strings.EqualFold(strings.TrimSpace(c.Type), "ANY") {
		return "BLOB"
	}
	return affinityOf(c.Type)
}

// Table is a replicated table's shape.
type Table struct {
	Name    string
	SQL     string
	Columns []Column
	PK      []Column // in key order
	Values  []Column // non-key columns, in declaration order
	// RowidAlias: the key is one column that is the table's rowid, so
	// it holds integers only and is never NULL. That takes a single
	// column declared exactly INTEGER in a table with rowids, and not
	// SQLite's exception, a column declared INTEGER PRIMARY KEY DESC:
	// the key is then kept in an index of its own, and takes any value.
	RowidAlias bool
	// WithoutRowid: a WITHOUT ROWID table, whose key columns SQLite
	// keeps NOT NULL whether declared so or not.
	WithoutRowid bool
}

// Index is a secondary index on a replicated table.
type Index struct {
	Name  string
	Table string
	SQL   string
}

// Schema is the set of replicated tables and their indexes.
type Schema struct {
	Tables  map[string]*Table
	Indexes map[string]*Index
}

// TableNames returns the table names in sorted order.
func (s *Schema) TableNames() []string {
	names := make([]string, 0, len(s.Tables))
	for n := range s.Tables {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Column returns the named column of t, or nil.
func (t *Table) Column(name string) *Column {
	for i := range t.Columns {
		if t.Columns[i].Name == name {
			return &t.Columns[i]
		}
	}
	return nil
}

// SchemaError is a schema the store refuses, naming what is wrong.
type SchemaError struct {
	Table  string
	Column string
	Reason string
}

func (e *SchemaError) Error() string {
	switch {
	case e.Column != "":
		return fmt.Sprintf("schema: table %q column %q: %s", e.Table, e.Column, e.Reason)
	case e.Table != "":
		return fmt.Sprintf("schema: table %q: %s", e.Table, e.Reason)
	}
	return "schema: " + e.Reason
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// readSchema introspects the user tables of a database (every table that is
// not SQLite's or patina's own) and checks each against the rules replicated
// tables must follow.
func readSchema(ctx context.Context, q querier) (*Schema, error) {
	s := &Schema{Tables: map[string]*Table{}, Indexes: map[string]*Index{}}
	rows, err := q.QueryContext(ctx, `SELECT type, name, tbl_name, coalesce(sql, '') FROM main.sqlite_master
		WHERE type IN ('table', 'index', 'view', 'trigger') AND name NOT LIKE 'sqlite\_%' ESCAPE '\' ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("read schema: %w", err)
	}
	type obj struct{ typ, name, tbl, sql string }
	var objs []obj
	for rows.Next() {
		var o obj
		if err := rows.Scan(&o.typ, &o.name, &o.tbl, &o.sql); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read schema: %w", err)
		}
		objs = append(objs, o)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read schema: %w", err)
	}
	for _, o := range objs {
		if strings.HasPrefix(strings.ToLower(o.name), internalPrefix) || strings.HasPrefix(strings.ToLower(o.tbl), internalPrefix) {
			continue
		}
		switch o.typ {
		case "view", "trigger":
			return nil, &SchemaError{Table: o.tbl, Reason: fmt.Sprintf("%ss are not supported (%s)", o.typ, o.name)}
		case "table":
			t, err := readTable(ctx, q, o.name, o.sql)
			if err != nil {
				return nil, err
			}
			s.Tables[o.name] = t
		case "index":
			if o.sql == "" {
				continue // automatic index of a PRIMARY KEY or UNIQUE; checked with the table
			}
			s.Indexes[o.name] = &Index{Name: o.name, Table: o.tbl, SQL: o.sql}
		}
	}
	return s, nil
}

func readTable(ctx context.Context, q querier, name, createSQL string) (*Table, error) {
	t := &Table{Name: name, SQL: createSQL}
	rows, err := q.QueryContext(ctx, `SELECT name, type, "notnull", coalesce(dflt_value, ''), pk, hidden FROM pragma_table_xinfo(?)`, name)
	if err != nil {
		return nil, fmt.Errorf("read table %q: %w", name, err)
	}
	for rows.Next() {
		var c Column
		var hidden int
		if err := rows.Scan(&c.Name, &c.Type, &c.NotNull, &c.Default, &c.PKPosition, &hidden); err != nil {
			rows.Close()
			return nil, fmt.Errorf("read table %q: %w", name, err)
		}
		if hidden != 0 {
			rows.Close()
			return nil, &SchemaError{Table: name, Column: c.Name, Reason: "generated and hidden columns are not supported"}
		}
		t.Columns = append(t.Columns, c)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read table %q: %w", name, err)
	}
	for _, c := range t.Columns {
		if c.PKPosition > 0 {
			t.PK = append(t.PK, c)
		} else {
			t.Values = append(t.Values, c)
		}
	}
	sort.SliceStable(t.PK, func(i, j int) bool { return t.PK[i].PKPosition < t.PK[j].PKPosition })
	if err := readKeyKind(ctx, q, t); err != nil {
		return nil, fmt.Errorf("read table %q: %w", name, err)
	}
	if err := checkTable(ctx, q, t); err != nil {
		return nil, err
	}
	return t, nil
}

// readKeyKind sets WithoutRowid and RowidAlias, and marks the columns
// of a STRICT table.
func readKeyKind(ctx context.Context, q querier, t *Table) error {
	rows, err := q.QueryContext(ctx, `SELECT wr, strict FROM pragma_table_list WHERE schema = 'main' AND name = ?`, t.Name)
	if err != nil {
		return err
	}
	var strict bool
	if rows.Next() {
		err = rows.Scan(&t.WithoutRowid, &strict)
	}
	for _, cols := range [][]Column{t.Columns, t.PK, t.Values} {
		for i := range cols {
			cols[i].Strict = strict
		}
	}
	rows.Close()
	if err == nil {
		err = rows.Err()
	}
	if err != nil || t.WithoutRowid || len(t.PK) != 1 || !strings.EqualFold(strings.TrimSpace(t.PK[0].Type), "INTEGER") {
		return err
	}
	// A key kept in an index of its own (the DESC exception) shows as
	// an index of origin pk; a rowid alias needs none.
	rows, err = q.QueryContext(ctx, `SELECT 1 FROM pragma_index_list(?) WHERE origin = 'pk'`, t.Name)
	if err != nil {
		return err
	}
	t.RowidAlias = !rows.Next()
	rows.Close()
	return rows.Err()
}

// checkTable enforces what merging needs of a table: a primary key, no
// constraint a merge could violate (UNIQUE besides the key, FOREIGN KEY), and
// a default for every NOT NULL column, since a row can come back to life
// from a single remote cell.
func checkTable(ctx context.Context, q querier, t *Table) error {
	if strings.HasPrefix(strings.ToLower(t.Name), "sqlite_") {
		return &SchemaError{Table: t.Name, Reason: "reserved table name"}
	}
	if len(t.PK) == 0 {
		return &SchemaError{Table: t.Name, Reason: "a replicated table needs a PRIMARY KEY"}
	}
	for _, c := range t.Columns {
		if strings.HasPrefix(strings.ToLower(c.Name), internalPrefix) {
			return &SchemaError{Table: t.Name, Column: c.Name, Reason: "column names starting with " + internalPrefix + " are reserved"}
		}
		switch strings.ToLower(strings.TrimSpace(c.Type)) {
		case "date", "datetime", "timestamp", "boolean":
			// go-sqlite3 turns values of exactly these declared types into
			// time.Time or bool when read, which would not round-trip.
			return &SchemaError{Table: t.Name, Column: c.Name, Reason: fmt.Sprintf("declared type %s is not supported; declare it TEXT or INTEGER", c.Type)}
		}
	}
	for _, c := range t.Columns {
		if !typeNameRe.MatchString(c.Type) {
			return &SchemaError{Table: t.Name, Column: c.Name, Reason: fmt.Sprintf("declared type %q is not supported: use a plain type name such as TEXT, INTEGER, REAL, BLOB or VARCHAR(64)", c.Type)}
		}
	}
	// Looked for in the statement's code: a comment may sit between
	// CHECK and its parenthesis, and a string may say anything.
	if checkRe.Match(sqlCode(t.SQL)) {
		// Two writes each valid alone can merge into a row that is not.
		return &SchemaError{Table: t.Name, Reason: "CHECK constraints are refused, a merge could violate them"}
	}
	for _, c := range t.PK {
		switch keyAffinity(c) {
		case "INTEGER", "TEXT", "BLOB":
		default:
			// REAL and NUMERIC keys make 1 and 1.0 the same key, which
			// packed keys cannot tell apart.
			return &SchemaError{Table: t.Name, Column: c.Name, Reason: fmt.Sprintf("key columns must be declared INTEGER, TEXT or BLOB, not %q", c.Type)}
		}
		// A single INTEGER key may be declared without NOT NULL: a rowid
		// alias, and a WITHOUT ROWID key, never hold NULL, and the one
		// other kind (INTEGER PRIMARY KEY DESC), which could, has its
		// values' class checked by the capture trigger, which refuses
		// NULL. Databases made before that kind was told apart keep
		// opening.
		integerKey := len(t.PK) == 1 && strings.EqualFold(strings.TrimSpace(t.PK[0].Type), "INTEGER")
		if !c.NotNull && !integerKey && !t.WithoutRowid {
			return &SchemaError{Table: t.Name, Column: c.Name, Reason: "primary key columns must be NOT NULL"}
		}
	}
	for _, c := range t.Values {
		if c.NotNull && c.Default == "" {
			return &SchemaError{Table: t.Name, Column: c.Name, Reason: "NOT NULL needs a DEFAULT (a row may be rebuilt from a single remote cell)"}
		}
	}
	rows, err := q.QueryContext(ctx, `SELECT name, "unique", origin FROM pragma_index_list(?)`, t.Name)
	if err != nil {
		return fmt.Errorf("read indexes of %q: %w", t.Name, err)
	}
	var uniq []string
	for rows.Next() {
		var name, origin string
		var unique bool
		if err := rows.Scan(&name, &unique, &origin); err != nil {
			rows.Close()
			return fmt.Errorf("read indexes of %q: %w", t.Name, err)
		}
		if unique && origin != "pk" {
			uniq = append(uniq, name)
		}
	}
	rows.Close()
	if len(uniq) > 0 {
		return &SchemaError{Table: t.Name, Reason: fmt.Sprintf("UNIQUE constraints besides the PRIMARY KEY are refused, a merge could violate them (%s)", strings.Join(uniq, ", "))}
	}
	if err := checkKeyCollation(ctx, q, t); err != nil {
		return err
	}
	var fks int
	if err := queryRow(ctx, q, `SELECT count(*) FROM pragma_foreign_key_list(?)`, []any{t.Name}, &fks); err != nil {
		return fmt.Errorf("read foreign keys of %q: %w", t.Name, err)
	}
	if fks > 0 {
		return &SchemaError{Table: t.Name, Reason: "FOREIGN KEY constraints are refused, a merge could violate them"}
	}
	return nil
}

// typeNameRe is what a declared type may look like. Types are pasted into
// the clock tables' DDL, so nothing else gets through.
var typeNameRe = regexp.MustCompile(`^\s*([A-Za-z][A-Za-z0-9_]*(\s+[A-Za-z][A-Za-z0-9_]*)*(\s*\(\s*[+-]?\d+\s*(,\s*[+-]?\d+\s*)?\))?)?\s*$`)

// checkRe finds a CHECK constraint in a CREATE TABLE statement.
var checkRe = regexp.MustCompile(`(?i)\bCHECK\s*\(`)

// keyAffinity is a key column's affinity, untyped counting as BLOB.
func keyAffinity(c Column) string { return c.affinity() }

// checkKeyCollation refuses key columns with a collation other than
// BINARY: the data table would take 'k' and 'K' as one key while the clock
// and the packed keys take them as two.
func checkKeyCollation(ctx context.Context, q querier, t *Table) error {
	rows, err := q.QueryContext(ctx, `SELECT x.name, x.coll FROM pragma_index_list(?1) AS l, pragma_index_xinfo(l.name) AS x WHERE l.origin = 'pk' AND x.key = 1`, t.Name)
	if err != nil {
		return fmt.Errorf("read key of %q: %w", t.Name, err)
	}
	defer rows.Close()
	for rows.Next() {
		var name, coll sql.NullString
		if err := rows.Scan(&name, &coll); err != nil {
			return fmt.Errorf("read key of %q: %w", t.Name, err)
		}
		if coll.Valid && !strings.EqualFold(coll.String, "BINARY") {
			return &SchemaError{Table: t.Name, Column: name.String, Reason: fmt.Sprintf("key columns must use the BINARY collation, not %s", coll.String)}
		}
	}
	return rows.Err()
}

func queryRow(ctx context.Context, q querier, query string, args []any, dest ...any) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Close()
}

// migrationPlan is what it takes to move from one schema to another.
type migrationPlan struct {
	newTables    []*Table            // created whole
	newColumns   map[string][]Column // table → added columns, in order
	dropIndexes  []string
	createIndex  []*Index
	changedTable map[string]bool // tables whose capture must be rebuilt
}

func (p *migrationPlan) empty() bool {
	return len(p.newTables) == 0 && len(p.newColumns) == 0 && len(p.dropIndexes) == 0 && len(p.createIndex) == 0
}

// The reasons planMigration gives for a table or column the desired
// schema lacks.
const (
	reasonDropTable  = "dropping a table is refused"
	reasonDropColumn = "dropping or renaming a column is refused"
)

// planMigration compares the current schema with the desired one and
// returns the additive steps, or a SchemaError naming the first destructive
// change: a dropped table or column, a changed type, a changed key.
func planMigration(cur, want *Schema) (*migrationPlan, error) {
	p := &migrationPlan{newColumns: map[string][]Column{}, changedTable: map[string]bool{}}
	for _, name := range cur.TableNames() {
		if _, ok := want.Tables[name]; !ok {
			return nil, &SchemaError{Table: name, Reason: reasonDropTable}
		}
	}
	for _, name := range want.TableNames() {
		wt := want.Tables[name]
		ct, ok := cur.Tables[name]
		if !ok {
			p.newTables = append(p.newTables, wt)
			p.changedTable[name] = true
			continue
		}
		for _, cc := range ct.Columns {
			wc := wt.Column(cc.Name)
			if wc == nil {
				return nil, &SchemaError{Table: name, Column: cc.Name, Reason: reasonDropColumn}
			}
			if !strings.EqualFold(strings.TrimSpace(wc.Type), strings.TrimSpace(cc.Type)) {
				return nil, &SchemaError{Table: name, Column: cc.Name, Reason: fmt.Sprintf("changing the type from %q to %q is refused", cc.Type, wc.Type)}
			}
			if wc.PKPosition != cc.PKPosition {
				return nil, &SchemaError{Table: name, Column: cc.Name, Reason: "changing the primary key is refused"}
			}
			if wc.NotNull != cc.NotNull || wc.Default != cc.Default {
				return nil, &SchemaError{Table: name, Column: cc.Name, Reason: "changing NOT NULL or DEFAULT of an existing column is refused"}
			}
		}
		for i, wc := range wt.Columns {
			if ct.Column(wc.Name) != nil {
				continue
			}
			if wc.PKPosition > 0 {
				return nil, &SchemaError{Table: name, Column: wc.Name, Reason: "changing the primary key is refused"}
			}
			if i < len(ct.Columns) {
				return nil, &SchemaError{Table: name, Column: wc.Name, Reason: "new columns must come after the existing ones (is this a rename?)"}
			}
			p.newColumns[name] = append(p.newColumns[name], wc)
			p.changedTable[name] = true
		}
	}
	for _, name := range sortedKeys(cur.Indexes) {
		wi, ok := want.Indexes[name]
		if !ok || normalizeSQL(wi.SQL) != normalizeSQL(cur.Indexes[name].SQL) {
			p.dropIndexes = append(p.dropIndexes, name)
		}
	}
	for _, name := range sortedKeys(want.Indexes) {
		ci, ok := cur.Indexes[name]
		if !ok || normalizeSQL(ci.SQL) != normalizeSQL(want.Indexes[name].SQL) {
			p.createIndex = append(p.createIndex, want.Indexes[name])
		}
	}
	return p, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func normalizeSQL(s string) string { return strings.Join(strings.Fields(s), " ") }

// columnDef renders a column definition for ALTER TABLE ADD COLUMN.
func columnDef(c Column) string {
	var b strings.Builder
	b.WriteString(quoteIdent(c.Name))
	if c.Type != "" {
		b.WriteString(" " + c.Type)
	}
	if c.NotNull {
		b.WriteString(" NOT NULL")
	}
	if c.Default != "" {
		b.WriteString(" DEFAULT " + c.Default)
	}
	return b.String()
}

// quoteIdent quotes a SQL identifier.
func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
