package store

import (
	"fmt"
	"math/bits"
	"strconv"
	"strings"
	"sync"
)

// tableSQL builds the statements the applier and the change reader run
// against one table. The applier works a changeset's rows of one table at
// a time, so its statements take n rows at once.
type tableSQL struct {
	t          *Table
	valueIndex map[string]int // value column name → index in t.Values
	affinity   []string       // per value column, as affinityOf
	pkCols     []string       // quoted key columns
	changesSel string         // rows of a range of versions of a site, with clock and data
	versionSel string         // the same columns for one version

	mu    sync.Mutex
	texts map[textKey]string // statement texts built so far
}

// textKind names a statement the applier runs; with the columns it
// writes and its row count it names one statement text.
type textKind uint8

const (
	textClockRead textKind = iota
	textValuesRead
	textClockWrite
	textClockWriteUniform
	textClockUpdate
	textVxWrite
	textVxWriteRows
	textDataDelete
	textDataReplace
	textDataUpsert
)

type textKey struct {
	kind textKind
	cols string // planKey of the columns, for the kinds that take them
	n    int
}

// maxTexts bounds the texts kept per table (column sets can vary).
const maxTexts = 1024

// text returns the statement of kind for cols and n rows, which build
// makes, built once: building one costs more than running a small one.
func (ts *tableSQL) text(kind textKind, cols []int, n int, build func() string) string {
	k := textKey{kind: kind, n: n}
	if cols != nil {
		k.cols = planKey(0, cols)
	}
	ts.mu.Lock()
	q, ok := ts.texts[k]
	ts.mu.Unlock()
	if ok {
		return q
	}
	q = build()
	ts.mu.Lock()
	if ts.texts == nil || len(ts.texts) >= maxTexts {
		ts.texts = map[textKey]string{}
	}
	ts.texts[k] = q
	ts.mu.Unlock()
	return q
}

func (ts *tableSQL) clockRead(n int) string {
	return ts.text(textClockRead, nil, n, func() string { return ts.buildClockRead(n) })
}
func (ts *tableSQL) valuesRead(n int) string {
	return ts.text(textValuesRead, nil, n, func() string { return ts.buildValuesRead(n) })
}
func (ts *tableSQL) clockWrite(n int) string {
	return ts.text(textClockWrite, nil, n, func() string { return ts.buildClockWrite(n) })
}
func (ts *tableSQL) clockWriteUniform(n int) string {
	return ts.text(textClockWriteUniform, nil, n, func() string { return ts.buildClockWriteUniform(n) })
}
func (ts *tableSQL) clockUpdate(cols []int, n int) string {
	return ts.text(textClockUpdate, cols, n, func() string { return ts.buildClockUpdate(cols, n) })
}
func (ts *tableSQL) vxWrite(n int) string {
	return ts.text(textVxWrite, nil, n, func() string { return ts.buildVxWrite(n) })
}
func (ts *tableSQL) vxWriteRows(n int) string {
	return ts.text(textVxWriteRows, nil, n, func() string { return ts.buildVxWriteRows(n) })
}
func (ts *tableSQL) dataDelete(n int) string {
	return ts.text(textDataDelete, nil, n, func() string { return ts.buildDataDelete(n) })
}
func (ts *tableSQL) dataReplace(cols []int, n int) string {
	return ts.text(textDataReplace, cols, n, func() string { return ts.buildDataReplace(cols, n) })
}
func (ts *tableSQL) dataUpsert(cols []int, n int) string {
	return ts.text(textDataUpsert, cols, n, func() string { return ts.buildDataUpsert(cols, n) })
}

// maxStmtParams bounds the parameters of one multi-row statement.
const maxStmtParams = 900

func newTableSQL(t *Table) *tableSQL {
	ts := &tableSQL{t: t, valueIndex: map[string]int{}}
	for i, c := range t.Values {
		ts.valueIndex[c.Name] = i
		ts.affinity = append(ts.affinity, c.affinity())
	}
	var joinC, joinT, joinDC []string
	for _, c := range t.PK {
		q := quoteIdent(c.Name)
		ts.pkCols = append(ts.pkCols, q)
		joinC = append(joinC, "c."+q+" = x."+q)
		joinT = append(joinT, "d."+q+" = x."+q)
		joinDC = append(joinDC, "d."+q+" = c."+q)
	}
	var sel []string
	for _, c := range ts.pkCols {
		sel = append(sel, "+x."+c)
	}
	for _, c := range ts.clockCols() {
		sel = append(sel, "c."+c)
	}
	// The unary plus keeps the value and drops the declared type, which
	// go-sqlite3 would otherwise use to convert values.
	for _, c := range t.Values {
		sel = append(sel, "+d."+quoteIdent(c.Name))
	}
	sel = append(sel, existsExpr(t, "d"))
	sel = append(sel, "x.__patina_version")
	// Versions ?2 to ?3 of site ?1, in version then key order.
	ts.changesSel = fmt.Sprintf("SELECT %s FROM %s AS x JOIN %s AS c ON %s LEFT JOIN %s AS d ON %s WHERE x.__patina_site = ?1 AND x.__patina_version BETWEEN ?2 AND ?3 ORDER BY x.__patina_version, %s",
		strings.Join(sel, ", "), quoteIdent(vxTable(t.Name)), quoteIdent(clockTable(t.Name)), strings.Join(joinC, " AND "),
		quoteIdent(t.Name), strings.Join(joinT, " AND "), prefixAll("x.", ts.pkCols))
	// One version ?2 of site ?1, in key order, with the clock table
	// driving: SQLite runs this form in a fraction of the time of the join
	// above (about 8 µs against 50 µs for a one-row version here), which
	// matters because every local commit reads its version back.
	var vsel []string
	for _, c := range ts.pkCols {
		vsel = append(vsel, "+c."+c)
	}
	vsel = append(vsel, sel[len(ts.pkCols):len(sel)-1]...)
	vsel = append(vsel, "?2")
	ts.versionSel = fmt.Sprintf("SELECT %s FROM %s AS c LEFT JOIN %s AS d ON %s WHERE (%s) IN (SELECT %s FROM %s AS x WHERE x.__patina_site = ?1 AND x.__patina_version = ?2) ORDER BY %s",
		strings.Join(vsel, ", "), quoteIdent(clockTable(t.Name)), quoteIdent(t.Name), strings.Join(joinDC, " AND "),
		prefixAll("c.", ts.pkCols), prefixAll("x.", ts.pkCols), quoteIdent(vxTable(t.Name)), prefixAll("c.", ts.pkCols))
	return ts
}

// clockCols are the clock columns after the key: cl, cl_sd, then (v, sd)
// per value column.
func (ts *tableSQL) clockCols() []string {
	cols := []string{quoteIdent(colCL), quoteIdent(colCLSD)}
	for _, c := range ts.t.Values {
		cols = append(cols, quoteIdent(colVer(c.Name)), quoteIdent(colSD(c.Name)))
	}
	return cols
}

// rowsPerStmt is how many rows of perRow parameters fit one statement.
func rowsPerStmt(perRow int) int { return max(1, maxStmtParams/max(1, perRow)) }

// chunkRows is how many of the remaining rows the next multi-row statement
// takes: the largest power of two that fits both. Statements are prepared
// once per row count and kept, so batches of every size from 1 to a few
// hundred would otherwise prepare (and evict) a statement per size; in
// powers of two a batch of any size takes at most a statement per bit of
// its size, from about ten texts per kind.
func chunkRows(remaining, perRow int) int {
	return 1 << (bits.Len(uint(min(max(remaining, 1), rowsPerStmt(perRow)))) - 1)
}

// keyIn matches n keys: "a" IN (?, ?) or ("a", "b") IN (VALUES (?, ?), (?, ?)).
func (ts *tableSQL) keyIn(alias string, n int) string {
	if len(ts.pkCols) == 1 {
		return alias + ts.pkCols[0] + " IN (" + placeholders(n) + ")"
	}
	row := "(" + placeholders(len(ts.pkCols)) + ")"
	return "(" + prefixAll(alias, ts.pkCols) + ") IN (VALUES " + strings.TrimSuffix(strings.Repeat(row+", ", n), ", ") + ")"
}

// buildClockRead reads the key and clock of n rows.
func (ts *tableSQL) buildClockRead(n int) string {
	return fmt.Sprintf("SELECT %s, %s FROM %s AS c WHERE %s",
		prefixAll("+c.", ts.pkCols), prefixAll("c.", ts.clockCols()), quoteIdent(clockTable(ts.t.Name)), ts.keyIn("c.", n))
}

// buildValuesRead reads the key and values of n data rows.
func (ts *tableSQL) buildValuesRead(n int) string {
	return fmt.Sprintf("SELECT %s, %s FROM %s AS d WHERE %s",
		prefixAll("+d.", ts.pkCols), prefixAll("+d.", valueCols(ts.t)), quoteIdent(ts.t.Name), ts.keyIn("d.", n))
}

// buildClockWrite replaces the whole clock of n rows.
func (ts *tableSQL) buildClockWrite(n int) string {
	cols := append(append([]string{}, ts.pkCols...), ts.clockCols()...)
	return fmt.Sprintf("INSERT OR REPLACE INTO %s (%s) VALUES %s", quoteIdent(clockTable(ts.t.Name)), strings.Join(cols, ", "), valuesRows(len(cols), n))
}

// buildClockWriteUniform replaces the whole clock of n rows whose cells all
// carry the same (col_version, sd), as every cell of a row that one
// version created does: key, cl, cl_sd, then the one (v, sd) pair per
// row, which the statement repeats for every column. Five parameters a
// row instead of three plus two per column: binding them one by one is
// a good part of an apply's cost.
func (ts *tableSQL) buildClockWriteUniform(n int) string {
	cols := append(append([]string{}, ts.pkCols...), ts.clockCols()...)
	k := len(ts.pkCols)
	w := k + 4
	b := make([]byte, 0, n*(w+2*len(ts.t.Values))*7)
	for r := 0; r < n; r++ {
		base := r * w
		if r > 0 {
			b = append(b, ", "...)
		}
		b = append(b, '(')
		for j := 1; j <= k+2; j++ {
			if j > 1 {
				b = append(b, ", "...)
			}
			b = append(b, '?')
			b = strconv.AppendInt(b, int64(base+j), 10)
		}
		for range ts.t.Values {
			b = append(b, ", ?"...)
			b = strconv.AppendInt(b, int64(base+k+3), 10)
			b = append(b, ", ?"...)
			b = strconv.AppendInt(b, int64(base+k+4), 10)
		}
		b = append(b, ')')
	}
	return fmt.Sprintf("INSERT OR REPLACE INTO %s (%s) VALUES %s", quoteIdent(clockTable(ts.t.Name)), strings.Join(cols, ", "), b)
}

// buildClockUpdate sets the causal length's credit and the clocks of the given
// value columns of n rows whose clock exists: key, cl_sd, then (v, sd) per
// column, per row.
func (ts *tableSQL) buildClockUpdate(cols []int, n int) string {
	k := len(ts.pkCols)
	set := []string{fmt.Sprintf("%s = u.column%d", quoteIdent(colCLSD), k+1)}
	for j, i := range cols {
		c := ts.t.Values[i].Name
		set = append(set,
			fmt.Sprintf("%s = u.column%d", quoteIdent(colVer(c)), k+2+2*j),
			fmt.Sprintf("%s = u.column%d", quoteIdent(colSD(c)), k+3+2*j))
	}
	var where []string
	for j, c := range ts.pkCols {
		where = append(where, fmt.Sprintf("%s.%s = u.column%d", quoteIdent(clockTable(ts.t.Name)), c, j+1))
	}
	return fmt.Sprintf("UPDATE %s SET %s FROM (VALUES %s) AS u WHERE %s", quoteIdent(clockTable(ts.t.Name)), strings.Join(set, ", "),
		valuesRows(k+1+2*len(cols), n), strings.Join(where, " AND "))
}

// buildVxWrite indexes n rows under one (site, version): ?1, ?2, then the keys.
func (ts *tableSQL) buildVxWrite(n int) string {
	k := len(ts.pkCols)
	rows := make([]string, n)
	for i := range rows {
		ps := make([]string, k)
		for j := range ps {
			ps[j] = fmt.Sprintf("?%d", 3+i*k+j)
		}
		rows[i] = "(?1, ?2, " + strings.Join(ps, ", ") + ")"
	}
	return fmt.Sprintf("INSERT OR IGNORE INTO %s (__patina_site, __patina_version, %s) VALUES %s", quoteIdent(vxTable(ts.t.Name)), strings.Join(ts.pkCols, ", "), strings.Join(rows, ", "))
}

// buildVxWriteRows indexes n rows, each under its own (site, version): per
// row the site, the version, then the key.
func (ts *tableSQL) buildVxWriteRows(n int) string {
	return fmt.Sprintf("INSERT OR IGNORE INTO %s (__patina_site, __patina_version, %s) VALUES %s", quoteIdent(vxTable(ts.t.Name)), strings.Join(ts.pkCols, ", "), valuesRows(2+len(ts.pkCols), n))
}

// buildDataDelete deletes n rows.
func (ts *tableSQL) buildDataDelete(n int) string {
	return fmt.Sprintf("DELETE FROM %s WHERE %s", quoteIdent(ts.t.Name), ts.keyIn("", n))
}

// buildDataReplace writes a whole new life of n rows: the key and the given
// columns; the other columns take their defaults.
func (ts *tableSQL) buildDataReplace(cols []int, n int) string {
	all := ts.withKey(cols)
	return fmt.Sprintf("INSERT OR REPLACE INTO %s (%s) VALUES %s", quoteIdent(ts.t.Name), strings.Join(all, ", "), valuesRows(len(all), n))
}

// buildDataUpsert sets the given columns of n rows, inserting a row that is
// missing (its other columns at their defaults).
func (ts *tableSQL) buildDataUpsert(cols []int, n int) string {
	all := ts.withKey(cols)
	set := make([]string, len(cols))
	for i, c := range cols {
		q := quoteIdent(ts.t.Values[c].Name)
		set[i] = q + " = excluded." + q
	}
	return fmt.Sprintf("INSERT INTO %s (%s) VALUES %s ON CONFLICT (%s) DO UPDATE SET %s", quoteIdent(ts.t.Name), strings.Join(all, ", "),
		valuesRows(len(all), n), strings.Join(ts.pkCols, ", "), strings.Join(set, ", "))
}

func (ts *tableSQL) withKey(cols []int) []string {
	all := append([]string{}, ts.pkCols...)
	for _, c := range cols {
		all = append(all, quoteIdent(ts.t.Values[c].Name))
	}
	return all
}

func valuesRows(width, n int) string {
	row := "(" + placeholders(width) + ")"
	return strings.TrimSuffix(strings.Repeat(row+", ", n), ", ")
}

func valueCols(t *Table) []string {
	out := make([]string, len(t.Values))
	for i, c := range t.Values {
		out[i] = quoteIdent(c.Name)
	}
	return out
}

// existsExpr is true when the LEFT JOINed row exists.
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
