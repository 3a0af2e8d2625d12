package reseed

import (
	"strings"

	"github.com/patina-db/patina/client"
)

// maxVariables is SQLite's bound on the parameters of one statement
// (SQLITE_MAX_VARIABLE_NUMBER in the agents' build).
const maxVariables = 32766

// upsert writes rows into a table with multi-row statements:
//
//	INSERT INTO t (c1, c2, ...) VALUES (?, ?, ...), (?, ?, ...), ...
//	ON CONFLICT (pk) DO UPDATE SET c2 = excluded.c2, ...
//
// One statement per maxVariables parameters instead of one per row: the
// agent prepares and runs each statement once, which is what makes a
// reseed fast. values holds the rows one after the other, len(cols) each.
type upsert struct {
	table   string
	cols    []string
	pk      []string
	updates []string // cols not in pk
}

func newUpsert(table string, cols, pk []string) *upsert {
	inPK := map[string]bool{}
	for _, c := range pk {
		inPK[strings.ToLower(c)] = true
	}
	u := &upsert{table: table, cols: cols, pk: pk}
	for _, c := range cols {
		if !inPK[strings.ToLower(c)] {
			u.updates = append(u.updates, c)
		}
	}
	return u
}

// statements returns the statements that write the rows in values.
func (u *upsert) statements(values []any) []client.Statement {
	width := len(u.cols)
	if width == 0 || len(values) == 0 {
		return nil
	}
	perStmt := maxVariables / width
	var out []client.Statement
	for start := 0; start < len(values); start += perStmt * width {
		end := min(start+perStmt*width, len(values))
		out = append(out, client.Statement{Query: u.query((end - start) / width), Params: values[start:end:end]})
	}
	return out
}

// probe is the statement for no rows at all: the agent prepares it as it
// would the real ones (table, columns, the ON CONFLICT target must match
// its primary key) and writes nothing.
func (u *upsert) probe() client.Statement {
	return client.Statement{Query: u.text("SELECT " + strings.TrimSuffix(strings.Repeat("NULL, ", len(u.cols)), ", ") + " WHERE 0")}
}

// query is the statement text for n rows.
func (u *upsert) query(n int) string {
	var b strings.Builder
	b.Grow(n * (2*len(u.cols) + 2))
	b.WriteString("VALUES ")
	row := "(" + strings.Repeat("?,", len(u.cols)-1) + "?)"
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(row)
	}
	return u.text(b.String())
}

// text is the statement with its rows part (VALUES ..., SELECT ...).
func (u *upsert) text(rows string) string {
	var b strings.Builder
	b.Grow(64 + len(rows) + 32*len(u.cols))
	b.WriteString("INSERT INTO ")
	b.WriteString(quoteIdent(u.table))
	b.WriteString(" (")
	for i, c := range u.cols {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(c))
	}
	b.WriteString(") ")
	b.WriteString(rows)
	b.WriteString(" ON CONFLICT (")
	for i, c := range u.pk {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(quoteIdent(c))
	}
	if len(u.updates) == 0 {
		b.WriteString(") DO NOTHING")
		return b.String()
	}
	b.WriteString(") DO UPDATE SET ")
	for i, c := range u.updates {
		if i > 0 {
			b.WriteString(", ")
		}
		q := quoteIdent(c)
		b.WriteString(q)
		b.WriteString(" = excluded.")
		b.WriteString(q)
	}
	return b.String()
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// valueSize estimates the bytes a parameter takes in a JSON request
// body; batches are cut so that their parameters stay well under the
// agent's body limit.
func valueSize(v any) int {
	switch v := v.(type) {
	case string:
		n := len(v) + 3
		for i := 0; i < len(v); i++ {
			// Escaped by encoding/json: \", \\, \u00XX, \u003c...
			if c := v[i]; c < 0x20 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
				n += 5
			}
		}
		return n
	case []byte:
		return 4*len(v) + 3 // [n,n,...]
	case nil:
		return 5
	default:
		return 21
	}
}
