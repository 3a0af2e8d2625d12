package store

import (
	"fmt"
	"strings"
)

// Names of the per-table metadata objects.
func clockTable(t string) string { return internalPrefix + "_clock_" + t }
func vxTable(t string) string    { return internalPrefix + "_vx_" + t }

// Clock column names. Data columns named with the internal prefix are
// refused, so these never collide.
const (
	colCL   = "__patina_cl"    // causal length
	colCLSD = "__patina_cl_sd" // the (site, version) that set it, packed
)

func colVer(c string) string { return "__patina_v_" + c }  // col_version
func colSD(c string) string  { return "__patina_sd_" + c } // (site, version) that wrote it, packed

// A clock names the version that wrote a cell as one integer:
// site ordinal << siteShift | version. Site 0 is this node, so a local
// write stores the bare version; one integer instead of two keeps the
// clock row narrow and the triggers short, which measurably matters.
const (
	siteShift   = 43
	versionMask = 1<<siteShift - 1
	// MaxVersion is the highest version a store accepts (8.8e12: centuries
	// at ten thousand transactions a second).
	MaxVersion = versionMask
	// maxSites bounds the actors one node can record.
	maxSites = 1 << (63 - siteShift)
)

func packSD(site int64, version uint64) int64 { return site<<siteShift | int64(version) }
func sdSite(sd int64) int64                   { return sd >> siteShift }
func sdVersion(sd int64) uint64               { return uint64(sd & versionMask) }

// unattributed marks a causal length learned from cells of a later version
// before the version that set it arrived; see applyRow.
const unattributed = -1

// clockDDL creates the clock and version-index tables of t.
func clockDDL(t *Table) []string {
	var cols, pk []string
	for _, c := range t.PK {
		cols = append(cols, quoteIdent(c.Name)+" "+c.Type+" NOT NULL")
		pk = append(pk, quoteIdent(c.Name))
	}
	cols = append(cols,
		quoteIdent(colCL)+" INTEGER NOT NULL",
		quoteIdent(colCLSD)+" INTEGER NOT NULL")
	for _, c := range t.Values {
		cols = append(cols, clockColumnDefs(c.Name)...)
	}
	clock := fmt.Sprintf("CREATE TABLE %s (%s, PRIMARY KEY (%s)) WITHOUT ROWID",
		quoteIdent(clockTable(t.Name)), strings.Join(cols, ", "), strings.Join(pk, ", "))
	var vxCols []string
	for _, c := range t.PK {
		vxCols = append(vxCols, quoteIdent(c.Name)+" "+c.Type+" NOT NULL")
	}
	vx := fmt.Sprintf("CREATE TABLE %s (__patina_site INTEGER NOT NULL, __patina_version INTEGER NOT NULL, %s, PRIMARY KEY (__patina_site, __patina_version, %s)) WITHOUT ROWID",
		quoteIdent(vxTable(t.Name)), strings.Join(vxCols, ", "), strings.Join(pk, ", "))
	return []string{clock, vx}
}

// clockColumnDefs are the clock columns of one data column. Their constant
// defaults are what make ADD COLUMN O(1): a row whose clock predates the
// column reads col_version 0, which any write beats.
func clockColumnDefs(c string) []string {
	return []string{
		quoteIdent(colVer(c)) + " INTEGER NOT NULL DEFAULT 0",
		quoteIdent(colSD(c)) + " INTEGER NOT NULL DEFAULT 0",
	}
}

// addColumnDDL adds the clock columns for a new data column.
func addColumnDDL(t string, c Column) []string {
	var out []string
	for _, def := range clockColumnDefs(c.Name) {
		out = append(out, fmt.Sprintf("ALTER TABLE %s ADD COLUMN %s", quoteIdent(clockTable(t)), def))
	}
	return out
}

// pendingVersion is the version the open local transaction will get if it
// changes anything. It lives in a TEMP table of the writer connection.
const pendingVersion = "(SELECT version FROM temp.__patina_tx)"

// captureTriggers returns the TEMP triggers that maintain t's clock on the
// writer connection. Per changed row they do one clock upsert and one
// version-index insert; unchanged columns keep their clock, and an UPDATE
// that changes nothing does not fire at all.
func captureTriggers(t *Table) []string {
	name := func(kind string) string { return quoteIdent(internalPrefix + "_" + kind + "_" + t.Name) }
	tbl := "main." + quoteIdent(t.Name)
	// Unqualified: older SQLite refuses qualified names in trigger bodies,
	// and no TEMP table shadows these.
	clock := quoteIdent(clockTable(t.Name))
	vx := quoteIdent(vxTable(t.Name))

	var pkCols, newPK, oldPK, pkSame []string
	for _, c := range t.PK {
		q := quoteIdent(c.Name)
		pkCols = append(pkCols, q)
		newPK = append(newPK, "NEW."+q)
		oldPK = append(oldPK, "OLD."+q)
		pkSame = append(pkSame, "OLD."+q+" IS NEW."+q+" COLLATE BINARY")
	}
	// ON CONFLICT DO NOTHING, not INSERT OR IGNORE: an outer statement's
	// OR-clause (and an upsert) overrides the OR-clauses inside a trigger,
	// while a trigger's own upsert clause is kept.
	vxInsert := func(pk []string) string {
		return fmt.Sprintf("INSERT INTO %s (__patina_site, __patina_version, %s) SELECT 0, x.version, %s FROM temp.__patina_tx AS x WHERE true ON CONFLICT DO NOTHING;",
			vx, strings.Join(pkCols, ", "), strings.Join(pk, ", "))
	}
	clockCols := func() []string {
		cols := append([]string{}, pkCols...)
		cols = append(cols, quoteIdent(colCL), quoteIdent(colCLSD))
		for _, c := range t.Values {
			cols = append(cols, quoteIdent(colVer(c.Name)), quoteIdent(colSD(c.Name)))
		}
		return cols
	}()
	cl, clSD := quoteIdent(colCL), quoteIdent(colCLSD)

	// A row comes to life: a fresh key, or a key whose clock says deleted.
	// Every column is written by this version. (An INSERT OR REPLACE over a
	// live row lands here too, and counts as writing every column.)
	// Keys must have the storage class their packed form says, or two
	// spellings of one stored key would replicate as two rows.
	var keyGuard []string
	for i, c := range t.PK {
		classes := keyClasses(c)
		if t.RowidAlias {
			continue // a rowid alias is always an integer
		}
		msg := fmt.Sprintf("patina: key column %s of %s takes %s values", c.Name, t.Name, strings.Join(classes, " or "))
		keyGuard = append(keyGuard, fmt.Sprintf("SELECT RAISE(ABORT, %s) WHERE typeof(%%[%d]s) NOT IN ('%s');", sqlString(msg), i+1, strings.Join(classes, "', '")))
	}
	guard := func(pk []string) string {
		args := make([]any, len(pk))
		for i, p := range pk {
			args[i] = p
		}
		var out []string
		for _, g := range keyGuard {
			out = append(out, fmt.Sprintf(g, args...))
		}
		return strings.Join(out, " ")
	}
	insertBody := func(pk []string) string {
		vals := append([]string{}, pk...)
		vals = append(vals, "1", "x.version")
		set := []string{
			fmt.Sprintf("%s = %s + 1 - (%s %% 2)", cl, cl, cl),
			fmt.Sprintf("%s = iif(%s %% 2 = 0, excluded.%s, %s)", clSD, cl, clSD, clSD),
		}
		for _, c := range t.Values {
			v, sd := quoteIdent(colVer(c.Name)), quoteIdent(colSD(c.Name))
			vals = append(vals, "1", "x.version")
			set = append(set,
				fmt.Sprintf("%s = iif(%s %% 2 = 0, 1, %s + 1)", v, cl, v),
				sd+" = excluded."+sd)
		}
		// SELECT ... FROM the pending-version table rather than a scalar
		// subquery per column: measured, it halves the trigger's cost.
		return guard(pk) + fmt.Sprintf(" INSERT INTO %s (%s) SELECT %s FROM temp.__patina_tx AS x WHERE true ON CONFLICT DO UPDATE SET %s;",
			clock, strings.Join(clockCols, ", "), strings.Join(vals, ", "), strings.Join(set, ", "))
	}
	// A row dies: its causal length becomes even and its cell clocks reset.
	deleteBody := func(pk []string) string {
		vals := append([]string{}, pk...)
		vals = append(vals, "2", "x.version")
		set := []string{
			fmt.Sprintf("%s = %s + 2 - (%s %% 2)", cl, cl, cl),
			clSD + " = excluded." + clSD,
		}
		for _, c := range t.Values {
			vals = append(vals, "0", "0")
			set = append(set, quoteIdent(colVer(c.Name))+" = 0", quoteIdent(colSD(c.Name))+" = 0")
		}
		return fmt.Sprintf("INSERT INTO %s (%s) SELECT %s FROM temp.__patina_tx AS x WHERE true ON CONFLICT DO UPDATE SET %s;",
			clock, strings.Join(clockCols, ", "), strings.Join(vals, ", "), strings.Join(set, ", "))
	}

	changed := func(c Column) string {
		q := quoteIdent(c.Name)
		// BINARY: a NOCASE column changing 'abc' to 'ABC' is a change.
		expr := "OLD." + q + " IS NOT NEW." + q + " COLLATE BINARY"
		if c.affinity() == "BLOB" {
			// Without affinity 1 and 1.0 are equal to IS but stored differently.
			expr = "(" + expr + " OR typeof(OLD." + q + ") IS NOT typeof(NEW." + q + "))"
		}
		return expr
	}

	var stmts []string
	stmts = append(stmts, fmt.Sprintf("CREATE TEMP TRIGGER %s AFTER INSERT ON %s BEGIN %s %s END",
		name("ins"), tbl, insertBody(newPK), vxInsert(newPK)))
	stmts = append(stmts, fmt.Sprintf("CREATE TEMP TRIGGER %s AFTER DELETE ON %s BEGIN %s %s END",
		name("del"), tbl, deleteBody(oldPK), vxInsert(oldPK)))
	if len(t.Values) > 0 {
		// A plain UPDATE: the row has a clock since its insert went through
		// the insert trigger. Only columns whose value changed are bumped.
		var anyChange, set, where []string
		for _, c := range t.Values {
			ch := changed(c)
			anyChange = append(anyChange, ch)
			v, sd := quoteIdent(colVer(c.Name)), quoteIdent(colSD(c.Name))
			// IS NOT yields 0 or 1.
			set = append(set,
				fmt.Sprintf("%s = %s + (%s)", v, v, ch),
				fmt.Sprintf("%s = iif(%s, %s, %s)", sd, ch, pendingVersion, sd))
		}
		for i, c := range pkCols {
			where = append(where, c+" = "+newPK[i])
		}
		upd := fmt.Sprintf("UPDATE %s SET %s WHERE %s;", clock, strings.Join(set, ", "), strings.Join(where, " AND "))
		stmts = append(stmts, fmt.Sprintf("CREATE TEMP TRIGGER %s AFTER UPDATE ON %s WHEN (%s) AND (%s) BEGIN %s %s END",
			name("upd"), tbl, strings.Join(pkSame, " AND "), strings.Join(anyChange, " OR "), upd, vxInsert(newPK)))
	}
	// Changing a key is a delete of the old key and an insert of the new.
	// UPDATE OF: the trigger is not even considered for statements that do
	// not SET a key column, which is nearly all of them. Except for an
	// INTEGER PRIMARY KEY, which `SET rowid = ...` changes too.
	of := " OF " + strings.Join(pkCols, ", ")
	if len(t.PK) == 1 && strings.EqualFold(strings.TrimSpace(t.PK[0].Type), "INTEGER") {
		of = ""
	}
	stmts = append(stmts, fmt.Sprintf("CREATE TEMP TRIGGER %s AFTER UPDATE%s ON %s WHEN NOT (%s) BEGIN %s %s %s %s END",
		name("rekey"), of, tbl, strings.Join(pkSame, " AND "), deleteBody(oldPK), vxInsert(oldPK), insertBody(newPK), vxInsert(newPK)))
	return stmts
}

// dropTriggers removes t's capture triggers before they are rebuilt.
func dropTriggers(t string) []string {
	var out []string
	for _, k := range []string{"ins", "del", "upd", "rekey"} {
		out = append(out, "DROP TRIGGER IF EXISTS temp."+quoteIdent(internalPrefix+"_"+k+"_"+t))
	}
	return out
}

// keyClasses are the storage classes a key column may hold: one per
// affinity, so that equal stored keys always pack to equal bytes.
func keyClasses(c Column) []string {
	switch c.affinity() {
	case "INTEGER":
		return []string{"integer"}
	case "TEXT":
		return []string{"text"}
	}
	return []string{"integer", "text", "blob"}
}

func sqlString(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

// affinityOf applies SQLite's column affinity rules to a declared type.
func affinityOf(declared string) string {
	t := strings.ToUpper(declared)
	switch {
	case strings.Contains(t, "INT"):
		return "INTEGER"
	case strings.Contains(t, "CHAR"), strings.Contains(t, "CLOB"), strings.Contains(t, "TEXT"):
		return "TEXT"
	case t == "" || strings.Contains(t, "BLOB"):
		return "BLOB"
	case strings.Contains(t, "REAL"), strings.Contains(t, "FLOA"), strings.Contains(t, "DOUB"):
		return "REAL"
	}
	return "NUMERIC"
}
