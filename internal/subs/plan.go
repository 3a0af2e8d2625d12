package subs

import (
	"errors"
	"fmt"
	"io"
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
	// Outer is true when a LEFT JOIN can null-extend rows: a change to
	// one table can then make rows appear or vanish that hold none of the
	// changed keys, so evaluation widens its scope (see evaluate).
	Outer bool
}

// Occurrence is one table named in FROM.
type Occurrence struct {
	Table string
	Alias string
	PK    []store.Column
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
func NewPlan(query string, schema *store.Schema) (*Plan, error) {
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
	plan := &Plan{Key: sel.String()}
	if err := plan.addSource(sel.Source, schema); err != nil {
		return nil, err
	}
	if err := checkExpressions(sel); err != nil {
		return nil, err
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
		for j, c := range o.PK {
			keyCols = append(keyCols, fmt.Sprintf("%s.%s AS %s", quoteIdent(o.Alias), quoteIdent(c.Name), keyColumnName(i, j)))
		}
		plan.KeyColumns += len(o.PK)
	}
	at := sel.Select.Offset + len("SELECT")
	if sel.All.IsValid() {
		at = sel.All.Offset + len("ALL")
	}
	body := strings.TrimRight(strings.TrimSpace(query), "; \t\r\n")
	if at > len(body) {
		return nil, planErrorf("cannot parse the query")
	}
	plan.SQL = body[:at] + " " + strings.Join(keyCols, ", ") + "," + body[at:]
	return plan, nil
}

func keyColumnName(occ, col int) string { return fmt.Sprintf("__patina_k%d_%d", occ, col) }

// addSource collects the tables of a FROM clause.
func (p *Plan) addSource(src sqlparser.Source, schema *store.Schema) error {
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
		p.Occurrences = append(p.Occurrences, Occurrence{Table: t.Name, Alias: alias, PK: t.PK})
		return nil
	case *sqlparser.JoinClause:
		if s.Operator != nil && s.Operator.Natural.IsValid() {
			return planErrorf("NATURAL joins are not supported: name the join columns")
		}
		if err := p.addSource(s.X, schema); err != nil {
			return err
		}
		if s.Operator != nil && s.Operator.Left.IsValid() {
			p.Outer = true
		}
		if s.Constraint != nil {
			if err := checkNoSubquery(s.Constraint); err != nil {
				return err
			}
		}
		return p.addSource(s.Y, schema)
	case *sqlparser.ParenSource:
		if _, isSelect := s.X.(*sqlparser.SelectStatement); isSelect {
			return planErrorf("subqueries in FROM are not supported")
		}
		if s.Alias != nil {
			return planErrorf("an alias on a parenthesized join is not supported")
		}
		return p.addSource(s.X, schema)
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

type exprChecker struct{ err error }

func (c *exprChecker) Visit(n sqlparser.Node) (sqlparser.Visitor, sqlparser.Node, error) {
	switch x := n.(type) {
	case *sqlparser.SelectStatement, *sqlparser.Exists, sqlparser.SelectExpr, *sqlparser.SelectExpr:
		return nil, n, planErrorf("subqueries are not supported: a result row must depend only on its own tables' rows")
	case *sqlparser.Call:
		name := strings.ToLower(x.Name.Name)
		if x.Over != nil || x.Filter != nil {
			return nil, n, planErrorf("window and aggregate functions are not supported (%s)", name)
		}
		if aggregates[name] || ((name == "min" || name == "max") && len(x.Args) == 1) || x.Star.IsValid() {
			return nil, n, planErrorf("aggregate functions are not supported (%s): result rows must map to table rows", name)
		}
	}
	return c, n, nil
}

func (c *exprChecker) VisitEnd(n sqlparser.Node) (sqlparser.Node, error) { return n, nil }

func checkNoSubquery(n sqlparser.Node) error {
	_, err := sqlparser.Walk(&exprChecker{}, n)
	return err
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }
