package store

import (
	"context"
	"crypto/rand"
	"fmt"
	"strings"

	"github.com/patina-db/patina/internal/crdt"
)

// Reidentify gives the database at path a new actor id, for a node
// restored from a backup. The node the backup came from may still be
// running, or may have written versions after the snapshot: writing on
// under its actor id would give two different writes the same (actor,
// version), and the cluster would diverge for good. It would also keep
// this node from ever catching up on those later versions, since a node
// refuses versions of its own actor that it never wrote.
//
// So the versions in the file stay the old actor's, exactly as if they had
// arrived by replication: in one transaction, every reference to site 0
// (this node) in the clocks, the version indexes and the bookkeeping moves
// to a new site registered for the old actor id, and site 0 becomes a
// fresh random actor id with no versions. The data is not touched.
//
// The file is checked first like CheckFile. No store may have it open.
func Reidentify(ctx context.Context, path string) (old, fresh crdt.ActorID, err error) {
	db, conn, err := openFile(ctx, path)
	if err != nil {
		return old, fresh, err
	}
	defer db.Close()
	defer conn.Close()
	info, err := checkConn(ctx, conn, path)
	if err != nil {
		return old, fresh, err
	}
	old = info.Actor
	if _, err := rand.Read(fresh[:]); err != nil {
		return old, fresh, fmt.Errorf("reidentify %s: create actor id: %w", path, err)
	}
	schema, err := readSchema(ctx, conn)
	if err != nil {
		return old, fresh, fmt.Errorf("reidentify %s: %w", path, err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		return old, fresh, fmt.Errorf("reidentify %s: begin: %w", path, err)
	}
	if err := reidentifyTx(ctx, conn, schema, old, fresh); err != nil {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return old, fresh, fmt.Errorf("reidentify %s: %w", path, err)
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		_, _ = conn.ExecContext(context.WithoutCancel(ctx), "ROLLBACK")
		return old, fresh, fmt.Errorf("reidentify %s: commit: %w", path, err)
	}
	return old, fresh, nil
}

func reidentifyTx(ctx context.Context, ex execer, schema *Schema, old, fresh crdt.ActorID) error {
	var site int64
	if err := queryRow(ctx, ex, `SELECT coalesce(max(ordinal), 0) + 1 FROM __patina_sites`, nil, &site); err != nil {
		return fmt.Errorf("next site: %w", err)
	}
	if site >= maxSites {
		return fmt.Errorf("this node already records %d actors", maxSites-1)
	}
	// Site 0 takes the fresh id first: actor ids are unique.
	if _, err := ex.ExecContext(ctx, `UPDATE __patina_sites SET actor = ? WHERE ordinal = 0`, fresh[:]); err != nil {
		return fmt.Errorf("new actor id: %w", err)
	}
	if _, err := ex.ExecContext(ctx, `INSERT INTO __patina_sites (ordinal, actor) VALUES (?, ?)`, site, old[:]); err != nil {
		return fmt.Errorf("register actor %s: %w", old, err)
	}
	if _, err := ex.ExecContext(ctx, `UPDATE __patina_bookkeeping SET actor = ? WHERE actor = 0`, site); err != nil {
		return fmt.Errorf("bookkeeping: %w", err)
	}
	// The copy has no run in progress (a backup carries its source's).
	if _, err := ex.ExecContext(ctx, `DELETE FROM __patina_meta WHERE key = ?`, openBootKey); err != nil {
		return fmt.Errorf("run record: %w", err)
	}
	// A local clock entry is the bare version (site 0): 1..versionMask.
	// 0 (a cell never written) and unattributed (-1) name no version.
	shift := packSD(site, 0)
	local := func(col string) string { return fmt.Sprintf("%s BETWEEN 1 AND %d", col, versionMask) }
	for _, name := range schema.TableNames() {
		t := schema.Tables[name]
		if _, err := ex.ExecContext(ctx, fmt.Sprintf(`UPDATE %s SET __patina_site = ? WHERE __patina_site = 0`, quoteIdent(vxTable(name))), site); err != nil {
			return fmt.Errorf("version index of %q: %w", name, err)
		}
		cols := []string{quoteIdent(colCLSD)}
		for _, c := range t.Values {
			cols = append(cols, quoteIdent(colSD(c.Name)))
		}
		var set, where []string
		for _, c := range cols {
			set = append(set, fmt.Sprintf("%[1]s = iif(%[2]s, %[1]s + %[3]d, %[1]s)", c, local(c), shift))
			where = append(where, local(c))
		}
		q := fmt.Sprintf(`UPDATE %s SET %s WHERE %s`, quoteIdent(clockTable(name)), strings.Join(set, ", "), strings.Join(where, " OR "))
		if _, err := ex.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("clock of %q: %w", name, err)
		}
	}
	return nil
}
