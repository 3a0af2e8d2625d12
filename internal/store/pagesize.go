package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
)

// pageSize is the page size of the databases the store creates. A commit
// writes every page it changed to the WAL, whole and checksummed, and the
// rows of one commit land on different pages of each index (keys are
// ids, not sequences): a commit of five machine rows changed about a
// dozen pages, and with 4 KiB pages the COMMIT statements were a third of
// SQLite's time in a busy region. With 2 KiB pages a 3-member region took
// about a tenth more writes a second under a closed loop of writers, and
// neither a reseed of a million rows nor the latency at 1,000 writes a
// second moved (docs/performance.md). 1 KiB pages did no better than 2.
const pageSize = 2048

// createDatabase creates the database at path with pageSize pages, in
// WAL mode, unless it already has content. A database's page size is
// fixed by its first write, and in WAL mode it can never change, so this
// runs before any connection that sets the journal mode; an existing
// database keeps the size it has.
func createDatabase(ctx context.Context, path string) error {
	switch fi, err := os.Stat(path); {
	case err == nil && fi.Size() > 0:
		return nil
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("create %s: %w", path, err)
	}
	db, err := sql.Open("sqlite3", dsn(path, url.Values{}))
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer db.Close()
	conn, err := db.Conn(ctx) // one connection: the pragmas are its own
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer conn.Close()
	for _, q := range []string{fmt.Sprintf("PRAGMA page_size = %d", pageSize), "PRAGMA journal_mode = WAL"} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("create %s: %s: %w", path, q, err)
		}
	}
	return nil
}
