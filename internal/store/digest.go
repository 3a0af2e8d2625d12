package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
)

// Digest hashes the node's replicated state: every table's rows (values
// with their storage classes, in key order), every clock with actor ids in
// place of local ordinals, and the known versions of every actor. Two
// nodes with equal digests hold byte-identical tables and identical clocks
// and bookkeeping. It reads one snapshot.
func (s *Store) Digest(ctx context.Context) (string, error) {
	s.mu.Lock()
	schema := s.schema
	s.mu.Unlock()
	tx, err := s.snap.BeginTx(ctx, nil)
	if err != nil {
		return "", fmt.Errorf("digest: %w", err)
	}
	defer tx.Rollback()
	h := sha256.New()
	for _, name := range schema.TableNames() {
		t := schema.Tables[name]
		var cols, pk []string
		for _, c := range t.Columns {
			cols = append(cols, fmt.Sprintf("typeof(%[1]s) || ':' || quote(%[1]s)", quoteIdent(c.Name)))
		}
		for _, c := range t.PK {
			pk = append(pk, quoteIdent(c.Name))
		}
		for _, q := range []string{
			fmt.Sprintf("SELECT %s FROM %s ORDER BY %s", strings.Join(cols, " || ' ' || "), quoteIdent(name), strings.Join(pk, ", ")),
			clockDumpQuery(t),
		} {
			rows, err := tx.QueryContext(ctx, q)
			if err != nil {
				return "", fmt.Errorf("digest %q: %w", name, err)
			}
			fmt.Fprintf(h, "%s\n", name)
			for rows.Next() {
				var line string
				if err := rows.Scan(&line); err != nil {
					rows.Close()
					return "", fmt.Errorf("digest %q: %w", name, err)
				}
				fmt.Fprintln(h, line)
			}
			rows.Close()
			if err := rows.Err(); err != nil {
				return "", fmt.Errorf("digest %q: %w", name, err)
			}
		}
	}
	book := s.Bookkeeping()
	for _, a := range book.Actors() {
		av := book.Versions(a)
		fmt.Fprintf(h, "%s %v\n", a, av.Known.Ranges())
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// clockDumpQuery renders t's clock one line per key, in key order, with
// the (site, version) of every entry as actor id and version, so the
// clocks of different nodes compare as text.
func clockDumpQuery(t *Table) string {
	actor := func(col string) string {
		return fmt.Sprintf("CASE WHEN %[1]s < 0 THEN 'none' ELSE coalesce((SELECT hex(actor) FROM __patina_sites WHERE ordinal = %[1]s >> %[2]d), '?') || '/' || (%[1]s & %[3]d) END",
			col, siteShift, versionMask)
	}
	parts := []string{}
	var pk []string
	for _, c := range t.PK {
		parts = append(parts, "quote("+quoteIdent(c.Name)+")")
		pk = append(pk, quoteIdent(c.Name))
	}
	parts = append(parts, quoteIdent(colCL), actor(quoteIdent(colCLSD)))
	for _, c := range t.Values {
		v := quoteIdent(colVer(c.Name))
		// An unwritten cell (col_version 0) has no meaningful writer.
		parts = append(parts, v, fmt.Sprintf("CASE WHEN %s = 0 THEN '-' ELSE %s END", v, actor(quoteIdent(colSD(c.Name)))))
	}
	return fmt.Sprintf("SELECT %s FROM %s ORDER BY %s", strings.Join(parts, " || ' ' || "), quoteIdent(clockTable(t.Name)), strings.Join(pk, ", "))
}
