package subs

import (
	"errors"
	"fmt"
	"io"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"

	sqlparser "github.com/rqlite/sql"

	"github.com/patina-db/patina/internal/store"
)

// Plan is how a subscription's query is evaluated incrementally: the
// query rewritten to also return the primary key of every table it reads,
// so that each result row has an identity (its tables' keys) and can be
// re-evaluated for just the rows a commit changed.
//
// Only queries whose result rows are made of whole table rows qualify:
// one SELECT over tables and joins (inner, cross or LEFT), with any WHERE
// and ORDER BY, and no aggregates, window functions, DISTINCT, GROUP BY,
// LIMIT, compound SELECTs, CTEs or subqueries. Those would make a result
// row depend on rows other than its own, which a change to one row cannot
// bound.
type Plan struct {
	// Key is the normalized SQL: identical queries share a subscription.
	Key string
	// SQL is the client's query with the key columns prepended.
	SQL string
	// Occurrences are the tables in FROM, in order; a table joined twice
	// appears twice.
	Occurrences []Occurrence
	// KeyColumns is how many leading result columns are keys.
	KeyColumns int
	// unordered is SQL without its ORDER BY.
	unordered string
	// Outer is true when a LEFT JOIN can null-extend rows: a change to
	// one table can then make rows appear or vanish that hold none of the
	// changed keys, so evaluation widens its scope (see evaluateKeys).
	Outer bool
	// Routes are the WHERE terms that let a batch skip the subscription
	// without running its query.
	Routes []Route
	// Full is true when the query is re-run whole at each change of its
	// tables: a LEFT JOIN whose WHERE reads the null-extended side.
	Full bool
	// distinct are the tables read, each once.
	distinct []string
}

// Route is a top-level WHERE term "alias.column = parameter" on a table
// that is never null-extended. A row of that table whose column does not
// equal the parameter is in no result row, so a change to it can only
// remove rows the subscription already holds, which it knows without a
// query.
type Route struct {
	Occ    int
	Column string
	// Param is the parameter's 1-based position, or its name.
	Param     int
	ParamName string
}

// Occurrence is one table named in FROM.
type Occurrence struct {
	Table string
	Alias string
	// Nullable is true on the right of a LEFT JOIN.
	Nullable bool
	PK       []store.Column
	// First is the index of this occurrence's first key column.
	First int
}

// PlanError is a query a subscription cannot follow; the client's mistake.
type PlanError struct{ Err error }

func (e *PlanError) Error() string { return "subscription: " + e.Err.Error() }
func (e *PlanError) Unwrap() error { return e.Err }

func planErrorf(format string, args ...any) error {
	return &PlanError{Err: fmt.Errorf(format, args...)}
}

// NewPlan parses and rewrites a subscription query against the schema.
func NewPlan(query string, schema *store.Schema) (plan *Plan, err error) {
	defer func() {
		// The parser's printer panics on a few constructs it parses.
		if r := recover(); r != nil {
			plan, err = nil, planErrorf("cannot handle the query: %v", r)
		}
	}()
	p := sqlparser.NewParser(strings.NewReader(query))
	parsed, err := p.ParseStatement()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, planErrorf("empty statement")
		}
		return nil, planErrorf("cannot parse the query: %v", err)
	}
	if _, err := p.ParseStatement(); !errors.Is(err, io.EOF) {
		return nil, planErrorf("one statement only")
	}
	sel, ok := parsed.(*sqlparser.SelectStatement)
	if !ok || sel.Select.Offset < 0 || !sel.Select.IsValid() {
		return nil, planErrorf("only SELECT statements can be subscribed to")
	}
	switch {
	case sel.WithClause != nil:
		return nil, planErrorf("WITH clauses are not supported")
	case sel.Distinct.IsValid():
		return nil, planErrorf("DISTINCT is not supported: result rows must map to table rows")
	case len(sel.GroupByExprs) > 0 || sel.HavingExpr != nil:
		return nil, planErrorf("GROUP BY and HAVING are not supported: result rows must map to table rows")
	case sel.Compound != nil:
		return nil, planErrorf("compound SELECTs (UNION, INTERSECT, EXCEPT) are not supported")
	case sel.LimitExpr != nil:
		return nil, planErrorf("LIMIT is not supported: a change to one row could move another into the limit")
	case len(sel.Windows) > 0:
		return nil, planErrorf("window functions are not supported")
	case sel.Source == nil:
		return nil, planErrorf("the query reads no table")
	}
	plan = &Plan{Key: sel.String()}
	if err := plan.addSource(sel.Source, schema, false); err != nil {
		return nil, err
	}
	if err := checkExpressions(sel); err != nil {
		return nil, err
	}
	plan.Routes = findRoutes(sel, plan.Occurrences, schema)
	plan.Full = plan.Outer && sel.WhereExpr != nil && readsNullable(sel.WhereExpr, plan.Occurrences, schema)
	for _, o := range plan.Occurrences {
		if !slices.Contains(plan.distinct, o.Table) {
			plan.distinct = append(plan.distinct, o.Table)
		}
	}
	seen := map[string]bool{}
	var keyCols []string
	for i := range plan.Occurrences {
		o := &plan.Occurrences[i]
		if seen[strings.ToLower(o.Alias)] {
			return nil, planErrorf("table name or alias %q is used twice", o.Alias)
		}
		seen[strings.ToLower(o.Alias)] = true
		o.First = plan.KeyColumns
		if len(o.PK) > maxKeyColumns {
			return nil, planErrorf("table %s has a key of %d columns; subscriptions follow tables with keys of at most %d", o.Table, len(o.PK), maxKeyColumns)
		}
		for j, c := range o.PK {
			keyCols = append(keyCols, fmt.Sprintf("%s.%s AS %s", quoteIdent(o.Alias), quoteIdent(c.Name), keyColumnName(i, j)))
		}
		plan.KeyColumns += len(o.PK)
	}
	// The parser counts positions in characters; the text is sliced in
	// bytes.
	at := byteOffset(query, sel.Select.Offset) + len("SELECT")
	if sel.All.IsValid() {
		at = byteOffset(query, sel.All.Offset) + len("ALL")
	}
	body := query[:store.StatementEnd(query)]
	if at > len(body) {
		return nil, planErrorf("cannot parse the query")
	}
	keys := " " + strings.Join(keyCols, ", ") + ","
	plan.SQL = body[:at] + keys + body[at:]
	plan.unordered = plan.SQL
	if sel.Order.IsValid() && !hasBinds(sel.OrderingTerms) {
		// A scope needs no order; ORDER BY may keep SQLite from
		// flattening the query into the join with the keys. (With
		// parameters in it, it stays: they keep their numbers.)
		if end := byteOffset(query, sel.Order.Offset); end > at && end <= len(body) {
			plan.unordered = body[:at] + keys + body[at:end]
		}
	}
	return plan, nil
}

// byteOffset turns a position counted in characters into one in bytes.
func byteOffset(s string, chars int) int {
	n := 0
	for i := range s {
		if n == chars {
			return i
		}
		n++
	}
	return len(s)
}

// hasBinds reports whether ORDER BY terms hold parameters.
func hasBinds(terms []*sqlparser.OrderingTerm) bool {
	found := false
	for _, t := range terms {
		inspect(t.X, func(n any) bool {
			_, isBind := n.(*sqlparser.BindExpr)
			found = found || isBind
			return !found
		})
	}
	return found
}

// readsNullable reports whether an expression reads a column of a table
// on the null-extended side of a LEFT JOIN (or a column it cannot place).
// Such a WHERE clause can be true for the rows a LEFT JOIN makes of NULLs
// (c.id IS NULL): those rows hold none of a change's keys, so the query
// is then evaluated in full at each change of its tables.
func readsNullable(e sqlparser.Expr, occs []Occurrence, schema *store.Schema) bool {
	nullable := false
	inspect(e, func(n any) bool {
		var col sqlparser.Expr
		switch x := n.(type) {
		case *sqlparser.QualifiedRef:
			col = x
		case *sqlparser.Ident:
			col = x
		case *sqlparser.Call:
			for _, a := range x.Args { // not the function's name
				inspect(a, func(n any) bool { return visitColumn(n, occs, schema, &nullable) })
			}
			return false
		default:
			return !nullable
		}
		occ, _, ok := resolveColumn(col, occs, schema)
		nullable = nullable || !ok || occs[occ].Nullable
		return false
	})
	return nullable
}

func visitColumn(n any, occs []Occurrence, schema *store.Schema, nullable *bool) bool {
	switch x := n.(type) {
	case *sqlparser.QualifiedRef, *sqlparser.Ident:
		occ, _, ok := resolveColumn(x.(sqlparser.Expr), occs, schema)
		*nullable = *nullable || !ok || occs[occ].Nullable
		return false
	case *sqlparser.Call:
		for _, a := range x.Args {
			inspect(a, func(n any) bool { return visitColumn(n, occs, schema, nullable) })
		}
		return false
	}
	return !*nullable
}

// inspect calls fn for every node of an expression tree, depth first,
// descending into a node's fields when fn returns true. It reaches every
// field by reflection, so no kind of node is skipped (the parser's own
// walker skips some, such as IS NULL).
func inspect(n any, fn func(n any) bool) {
	inspectValue(reflect.ValueOf(n), fn)
}

var posType = reflect.TypeOf(sqlparser.Pos{})

func inspectValue(v reflect.Value, fn func(n any) bool) {
	switch v.Kind() {
	case reflect.Interface:
		if !v.IsNil() {
			inspectValue(v.Elem(), fn)
		}
	case reflect.Pointer:
		if !v.IsNil() && fn(v.Interface()) && v.Elem().Kind() == reflect.Struct {
			inspectFields(v.Elem(), fn)
		}
	case reflect.Struct: // a node held by value, such as SelectExpr
		if v.Type() != posType && fn(v.Interface()) {
			inspectFields(v, fn)
		}
	case reflect.Slice:
		for i := 0; i < v.Len(); i++ {
			inspectValue(v.Index(i), fn)
		}
	}
}

func inspectFields(v reflect.Value, fn func(n any) bool) {
	for i := 0; i < v.NumField(); i++ {
		if v.Type().Field(i).IsExported() {
			inspectValue(v.Field(i), fn)
		}
	}
}

func keyColumnName(occ, col int) string { return fmt.Sprintf("__patina_k%d_%d", occ, col) }

// addSource collects the tables of a FROM clause.
func (p *Plan) addSource(src sqlparser.Source, schema *store.Schema, nullable bool) error {
	switch s := src.(type) {
	case *sqlparser.QualifiedTableName:
		if s.Schema != nil && !strings.EqualFold(s.Schema.Name, "main") {
			return planErrorf("table %s.%s: only the main database can be subscribed to", s.Schema.Name, s.Name.Name)
		}
		t := lookupTable(schema, s.Name.Name)
		if t == nil {
			return planErrorf("no such replicated table: %s", s.Name.Name)
		}
		alias := s.Name.Name
		if s.Alias != nil {
			alias = s.Alias.Name
		}
		p.Occurrences = append(p.Occurrences, Occurrence{Table: t.Name, Alias: alias, PK: t.PK, Nullable: nullable})
		return nil
	case *sqlparser.JoinClause:
		if s.Operator != nil && s.Operator.Natural.IsValid() {
			return planErrorf("NATURAL joins are not supported: name the join columns")
		}
		if err := p.addSource(s.X, schema, nullable); err != nil {
			return err
		}
		left := s.Operator != nil && s.Operator.Left.IsValid()
		if left {
			p.Outer = true
		}
		if s.Constraint != nil {
			if err := checkNoSubquery(s.Constraint); err != nil {
				return err
			}
		}
		return p.addSource(s.Y, schema, nullable || left)
	case *sqlparser.ParenSource:
		if _, isSelect := s.X.(*sqlparser.SelectStatement); isSelect {
			return planErrorf("subqueries in FROM are not supported")
		}
		if s.Alias != nil {
			return planErrorf("an alias on a parenthesized join is not supported")
		}
		return p.addSource(s.X, schema, nullable)
	default:
		return planErrorf("FROM may only name tables and joins, not %s", src)
	}
}

func lookupTable(schema *store.Schema, name string) *store.Table {
	if t := schema.Tables[name]; t != nil {
		return t
	}
	for n, t := range schema.Tables {
		if strings.EqualFold(n, name) {
			return t
		}
	}
	return nil
}

// aggregates are SQLite's built-in aggregate functions. min and max with
// more than one argument are scalar.
var aggregates = map[string]bool{
	"avg": true, "count": true, "group_concat": true, "string_agg": true, "sum": true, "total": true,
	"json_group_array": true, "json_group_object": true, "jsonb_group_array": true, "jsonb_group_object": true,
	"median": true, "percentile": true, "percentile_cont": true, "percentile_disc": true,
}

// checkExpressions refuses aggregates, window functions and subqueries in
// the result columns, WHERE and ORDER BY.
func checkExpressions(sel *sqlparser.SelectStatement) error {
	var nodes []sqlparser.Node
	for _, c := range sel.Columns {
		if c.Expr != nil {
			nodes = append(nodes, c.Expr)
		}
	}
	if sel.WhereExpr != nil {
		nodes = append(nodes, sel.WhereExpr)
	}
	for _, t := range sel.OrderingTerms {
		nodes = append(nodes, t.X)
	}
	for _, n := range nodes {
		if err := checkNoSubquery(n); err != nil {
			return err
		}
	}
	return nil
}

// checkNoSubquery refuses subqueries, aggregates and window functions
// anywhere in an expression.
func checkNoSubquery(n any) error {
	var err error
	inspect(n, func(n any) bool {
		switch x := n.(type) {
		case *sqlparser.SelectStatement, *sqlparser.Exists, sqlparser.SelectExpr, *sqlparser.SelectExpr:
			err = planErrorf("subqueries are not supported: a result row must depend only on its own tables' rows")
		case *sqlparser.Call:
			name := strings.ToLower(x.Name.Name)
			if x.Over != nil || x.Filter != nil {
				err = planErrorf("window and aggregate functions are not supported (%s)", name)
			} else if aggregates[name] || ((name == "min" || name == "max") && len(x.Args) == 1) || x.Star.IsValid() {
				err = planErrorf("aggregate functions are not supported (%s): result rows must map to table rows", name)
			}
		}
		return err == nil
	})
	return err
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// findRoutes finds the top-level "column = parameter" terms of the WHERE
// clause on tables never null-extended. Parameters must be all positional
// or all named, so their numbering is plain.
func findRoutes(sel *sqlparser.SelectStatement, occs []Occurrence, schema *store.Schema) []Route {
	if sel.WhereExpr == nil {
		return nil
	}
	var binds []*sqlparser.BindExpr
	inspect(sel, func(n any) bool {
		if b, ok := n.(*sqlparser.BindExpr); ok {
			binds = append(binds, b)
		}
		return true
	})
	numbers, ok := numberBinds(binds)
	if !ok {
		return nil
	}
	var routes []Route
	var walk func(e sqlparser.Expr)
	walk = func(e sqlparser.Expr) {
		switch x := e.(type) {
		case *sqlparser.ParenExpr:
			walk(x.X)
		case *sqlparser.BinaryExpr:
			switch x.Op {
			case sqlparser.AND:
				walk(x.X)
				walk(x.Y)
			case sqlparser.EQ:
				col, bind := x.X, x.Y
				if _, isBind := col.(*sqlparser.BindExpr); isBind {
					col, bind = bind, col
				}
				b, isBind := bind.(*sqlparser.BindExpr)
				if !isBind {
					return
				}
				occ, column, ok := resolveColumn(col, occs, schema)
				if !ok || occs[occ].Nullable {
					return
				}
				r := Route{Occ: occ, Column: column}
				if n := numbers[b]; n > 0 {
					r.Param = n
				} else {
					r.ParamName = b.Name[1:]
				}
				routes = append(routes, r)
			}
		}
	}
	walk(sel.WhereExpr)
	return routes
}

// numberBinds gives positional parameters their numbers as SQLite does:
// "?" one more than the largest so far, "?N" N. Named parameters get 0.
// It fails when both kinds appear.
func numberBinds(binds []*sqlparser.BindExpr) (map[*sqlparser.BindExpr]int, bool) {
	sort.Slice(binds, func(i, j int) bool { return binds[i].NamePos.Offset < binds[j].NamePos.Offset })
	out := map[*sqlparser.BindExpr]int{}
	named, positional, largest := false, false, 0
	for _, b := range binds {
		switch {
		case b.Name == "?":
			largest++
			out[b] = largest
			positional = true
		case strings.HasPrefix(b.Name, "?"):
			n, err := strconv.Atoi(b.Name[1:])
			if err != nil || n < 1 {
				return nil, false
			}
			out[b] = n
			largest = max(largest, n)
			positional = true
		default:
			named = true
		}
	}
	return out, !(named && positional)
}

// resolveColumn finds the occurrence and column a column reference names.
func resolveColumn(e sqlparser.Expr, occs []Occurrence, schema *store.Schema) (int, string, bool) {
	var alias, column string
	switch x := e.(type) {
	case *sqlparser.QualifiedRef:
		if x.Table == nil || x.Column == nil {
			return 0, "", false
		}
		alias, column = x.Table.Name, x.Column.Name
	case *sqlparser.Ident:
		column = x.Name
	default:
		return 0, "", false
	}
	found := -1
	for i, o := range occs {
		if alias != "" && !strings.EqualFold(o.Alias, alias) {
			continue
		}
		if c := tableColumn(schema.Tables[o.Table], column); c != "" {
			if found >= 0 {
				return 0, "", false // ambiguous
			}
			found, column = i, c
		}
	}
	return found, column, found >= 0
}

func tableColumn(t *store.Table, name string) string {
	for _, c := range t.Columns {
		if strings.EqualFold(c.Name, name) {
			return c.Name
		}
	}
	return ""
}
