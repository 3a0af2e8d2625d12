package store

import (
	"fmt"
	"strings"
)

// tableSQL holds the statements the applier and the change reader run
// against one table, generated once per schema.
type tableSQL struct {
	t *Table
	// column index of each value column in t.Values
	valueIndex map[string]int

	pkWhere     string // "a" = ?1 AND "b" = ?2
	clockSelect string // cl, cl_sd, then (v, sd) per value column
	clockUpsert string // every clock column, pk first
	dataSelect  string // every value column, wrapped to lose its declared type
	dataDelete  string
	vxInsert    string // site, version, pk...
	changesSel  string // rows of one (site, version) with clock and data
}

func newTableSQL(t *Table) *tableSQL {
	ts := &tableSQL{t: t, valueIndex: map[string]int{}}
	for i, c := range t.Values {
		ts.valueIndex[c.Name] = i
	}
	var where, pkCols, joinC, joinT []string
	for i, c := range t.PK {
		q := quoteIdent(c.Name)
		where = append(where, fmt.Sprintf("%s = ?%d", q, i+1))
		pkCols = append(pkCols, q)
		joinC = append(joinC, "c."+q+" = x."+q)
		joinT = append(joinT, "d."+q+" = x."+q)
	}
	ts.pkWhere = strings.Join(where, " AND ")
	clockCols := []string{quoteIdent(colCL), quoteIdent(colCLSD)}
	var dataCols []string
	for _, c := range t.Values {
		clockCols = append(clockCols, quoteIdent(colVer(c.Name)), quoteIdent(colSD(c.Name)))
		// The unary plus keeps the value and drops the declared type, which
		// go-sqlite3 would otherwise use to turn DATETIME text into time.Time.
		dataCols = append(dataCols, "+"+quoteIdent(c.Name))
	}
	clock := quoteIdent(clockTable(t.Name))
	data := quoteIdent(t.Name)
	ts.clockSelect = fmt.Sprintf("SELECT %s FROM %s WHERE %s", strings.Join(clockCols, ", "), clock, ts.pkWhere)
	all := append(append([]string{}, pkCols...), clockCols...)
	ts.clockUpsert = fmt.Sprintf("INSERT OR REPLACE INTO %s (%s) VALUES (%s)", clock, strings.Join(all, ", "), placeholders(len(all)))
	if len(dataCols) > 0 {
		ts.dataSelect = fmt.Sprintf("SELECT %s FROM %s WHERE %s", strings.Join(dataCols, ", "), data, ts.pkWhere)
	}
	ts.dataDelete = fmt.Sprintf("DELETE FROM %s WHERE %s", data, ts.pkWhere)
	ts.vxInsert = fmt.Sprintf("INSERT OR IGNORE INTO %s (site, version, %s) VALUES (%s)", quoteIdent(vxTable(t.Name)), strings.Join(pkCols, ", "), placeholders(2+len(pkCols)))

	var sel []string
	for _, c := range pkCols {
		sel = append(sel, "+x."+c)
	}
	for _, c := range clockCols {
		sel = append(sel, "c."+c)
	}
	for _, c := range t.Values {
		sel = append(sel, "+d."+quoteIdent(c.Name))
	}
	sel = append(sel, existsExpr(t, "d"))
	ts.changesSel = fmt.Sprintf("SELECT %s FROM %s AS x JOIN %s AS c ON %s LEFT JOIN %s AS d ON %s WHERE x.site = ?1 AND x.version = ?2 ORDER BY %s",
		strings.Join(sel, ", "), quoteIdent(vxTable(t.Name)), clock, strings.Join(joinC, " AND "), data, strings.Join(joinT, " AND "), prefixAll("x.", pkCols))
	return ts
}

// existsExpr is true when the LEFT JOINed row exists, for tables without rowid too.
func existsExpr(t *Table, alias string) string {
	return alias + "." + quoteIdent(t.PK[0].Name) + " IS NOT NULL"
}

func prefixAll(p string, cols []string) string {
	out := make([]string, len(cols))
	for i, c := range cols {
		out[i] = p + c
	}
	return strings.Join(out, ", ")
}

func placeholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// dataUpdate sets the given value columns of one row.
func (ts *tableSQL) dataUpdate(cols []string) string {
	set := make([]string, len(cols))
	for i, c := range cols {
		set[i] = fmt.Sprintf("%s = ?%d", quoteIdent(c), len(ts.t.PK)+i+1)
	}
	return fmt.Sprintf("UPDATE %s SET %s WHERE %s", quoteIdent(ts.t.Name), strings.Join(set, ", "), ts.pkWhere)
}

// dataReplace writes a whole new life of a row: the key and the given
// columns; the other columns take their defaults.
func (ts *tableSQL) dataReplace(cols []string) string {
	all := make([]string, 0, len(ts.t.PK)+len(cols))
	for _, c := range ts.t.PK {
		all = append(all, quoteIdent(c.Name))
	}
	for _, c := range cols {
		all = append(all, quoteIdent(c))
	}
	return fmt.Sprintf("INSERT OR REPLACE INTO %s (%s) VALUES (%s)", quoteIdent(ts.t.Name), strings.Join(all, ", "), placeholders(len(all)))
}
