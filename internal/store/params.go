package store

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// sqlShape is what checkParams needs to know of a statement's text.
type sqlShape struct {
	statements int            // non-empty statements in the text
	maxIndex   int            // highest parameter index: what SQLite binds
	named      map[string]int // :name, @name, $name (without the sigil) → index
	positional bool           // uses ? or ?NNN
	end        int            // just past the last token
	// code is the text without its comments (each now a space) and with
	// every string literal emptied (''): what remains is SQL to look for
	// keywords in.
	code []byte
}

// scanSQL finds the statements and parameters of SQL text the way SQLite's
// tokenizer would: outside string literals, quoted identifiers and
// comments. It is only used to give clear errors for parameter mistakes;
// SQLite still parses the statement.
func scanSQL(q string) (sqlShape, error) { return scan(q, false) }

// sqlCode is q's code (see sqlShape.code): q itself when it does not scan.
func sqlCode(q string) []byte {
	sh, err := scan(q, true)
	if err != nil {
		return []byte(q)
	}
	return sh.code
}

// scan is scanSQL, building the code too when asked (not on the write
// path, which needs only the shape).
func scan(q string, withCode bool) (sqlShape, error) {
	sh := sqlShape{named: map[string]int{}}
	keep := func(s string) {
		if withCode {
			sh.code = append(sh.code, s...)
		}
	}
	inStmt := false
	i := 0
	for i < len(q) {
		c := q[i]
		from := i
		switch {
		case c == '\'' || c == '"' || c == '`':
			end := strings.IndexByte(q[i+1:], c)
			for end >= 0 && i+1+end+1 < len(q) && q[i+1+end+1] == c { // doubled quote
				next := strings.IndexByte(q[i+1+end+2:], c)
				if next < 0 {
					end = -1
					break
				}
				end += 2 + next
			}
			if end < 0 {
				return sh, errors.New("unterminated quoted string or identifier")
			}
			i += end + 2
			inStmt, sh.end = true, i
			if c == '\'' {
				keep("''")
			} else {
				keep(q[from:i])
			}
			continue
		case c == '[':
			end := strings.IndexByte(q[i:], ']')
			if end < 0 {
				return sh, errors.New("unterminated [identifier]")
			}
			i += end + 1
			inStmt, sh.end = true, i
			keep(q[from:i])
			continue
		case c == '-' && i+1 < len(q) && q[i+1] == '-':
			keep(" ")
			end := strings.IndexByte(q[i:], '\n')
			if end < 0 {
				i = len(q)
				continue
			}
			i += end + 1
			continue
		case c == '/' && i+1 < len(q) && q[i+1] == '*':
			keep(" ")
			end := strings.Index(q[i+2:], "*/")
			if end < 0 {
				i = len(q)
				continue
			}
			i += end + 4
			continue
		case c == ';':
			if inStmt {
				sh.statements++
				inStmt = false
			}
		case c == '?':
			j := i + 1
			for j < len(q) && q[j] >= '0' && q[j] <= '9' {
				j++
			}
			sh.positional = true
			if j > i+1 {
				n, err := strconv.Atoi(q[i+1 : j])
				if err != nil || n < 1 || n > 32766 {
					return sh, fmt.Errorf("bad parameter %s", q[i:j])
				}
				sh.maxIndex = max(sh.maxIndex, n)
			} else {
				sh.maxIndex++
			}
			i = j
			inStmt, sh.end = true, i
			keep(q[from:i])
			continue
		case (c == ':' || c == '@' || c == '$') && i+1 < len(q) && isIdentByte(q[i+1]):
			j := i + 1
			for j < len(q) && isIdentByte(q[j]) {
				j++
			}
			name := q[i+1 : j]
			if _, ok := sh.named[name]; !ok {
				sh.maxIndex++
				sh.named[name] = sh.maxIndex
			}
			i = j
			inStmt, sh.end = true, i
			keep(q[from:i])
			continue
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f':
		default:
			inStmt, sh.end = true, i+1
		}
		if withCode {
			sh.code = append(sh.code, c)
		}
		i++
	}
	if inStmt {
		sh.statements++
	}
	return sh, nil
}

func isIdentByte(b byte) bool {
	return b == '_' || b >= '0' && b <= '9' || b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= 0x80
}

// checkParams refuses a statement whose parameters do not match what it
// declares: SQLite would silently bind NULL to a missing one, and the
// driver silently drops extra ones.
func checkParams(st Statement) error {
	sh, err := scanSQL(st.SQL)
	if err != nil {
		return err
	}
	switch {
	case sh.statements == 0:
		return errors.New("empty statement")
	case sh.statements > 1:
		return fmt.Errorf("%d statements in one entry: send each statement as its own entry", sh.statements)
	}
	if len(st.Named) == 0 {
		if len(st.Args) != sh.maxIndex {
			return fmt.Errorf("expected %d arguments, got %d", sh.maxIndex, len(st.Args))
		}
		return nil
	}
	for name := range st.Named {
		if _, ok := sh.named[strings.TrimLeft(name, ":@$")]; !ok {
			return fmt.Errorf("named parameter %q does not appear in the statement", name)
		}
	}
	if len(st.Args)+len(st.Named) != sh.maxIndex {
		return fmt.Errorf("expected %d arguments, got %d positional and %d named", sh.maxIndex, len(st.Args), len(st.Named))
	}
	// Positional arguments bind to parameters 1..len(Args) by number, and
	// SQLite numbers a named parameter where it first appears: one before
	// a ? takes that ?'s number, and the ? would get NULL.
	for name, idx := range sh.named {
		if idx <= len(st.Args) {
			return fmt.Errorf("named parameter %q comes before a positional one: put the ? parameters first, or name them all", name)
		}
	}
	return nil
}

// StatementEnd is where a statement's text ends: before trailing
// whitespace, comments and a semicolon, read as SQLite's tokenizer would.
func StatementEnd(q string) int {
	sh, err := scanSQL(q)
	if err != nil {
		return len(q) // an unterminated quote: SQLite reports it
	}
	return sh.end
}
