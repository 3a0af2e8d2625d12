package reseed

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/patina-db/patina/client"
)

// source is where the rows come from: it plans ranges over its keys and
// reads a range as batches of ready statements.
type source interface {
	// Identity names the sources (kind, absolute paths, table) for the
	// state file.
	Identity() string
	// CheckTarget verifies that the cluster has the tables and columns
	// the rows go to, naming what is missing.
	CheckTarget(ctx context.Context, cl cluster) error
	// Plan splits the keys into at most n ranges of about equal size.
	Plan(ctx context.Context, n int) ([]Range, error)
	// OpenRange starts reading one range from its first key.
	OpenRange(ctx context.Context, r Range) (rangeReader, error)
	Close() error
}

// rangeReader reads one range, batch after batch.
type rangeReader interface {
	// Next reads the next batch: at most maxRows source rows, fewer when
	// their parameters would weigh more than maxBytes (but at least one).
	// It returns nil at the end of the range.
	Next(ctx context.Context, maxRows, maxBytes int) (*batch, error)
	Close() error
}

// batch is one transaction's worth of rows.
type batch struct {
	// Rows is the number of source rows (machine records, table rows)
	// the statements write.
	Rows  int
	Stmts []client.Statement
	// Corrupt counts the records skipped because they did not decode;
	// Duplicates the ids found in more than one file (the newest record
	// was kept).
	Corrupt, Duplicates int
	// First and Last are the batch's first and last keys, for messages.
	First, Last Key
}

// cluster is what a source asks of the cluster before writing: the
// columns of a table (none: no such table), and whether it would take a
// statement (run in a transaction that changes nothing).
type cluster interface {
	Columns(ctx context.Context, table string) ([]string, error)
	Try(ctx context.Context, st client.Statement) error
}

// clusterAPI asks an agent through its HTTP API.
type clusterAPI struct{ c *client.Client }

func (s clusterAPI) Columns(ctx context.Context, table string) ([]string, error) {
	rows, err := s.c.Query(ctx, client.Statement{Query: "SELECT * FROM " + quoteIdent(table) + " LIMIT 0"})
	var ce *client.Error
	if errors.As(err, &ce) && ce.Status == http.StatusBadRequest && strings.Contains(ce.Message, "no such table") {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reseed: read the cluster's table %s: %w", table, err)
	}
	defer rows.Close()
	return rows.Columns(), nil
}

func (s clusterAPI) Try(ctx context.Context, st client.Statement) error {
	_, err := s.c.Transact(ctx, st)
	return err
}

// requireTable checks that the cluster's table has every column the
// upsert writes, naming those it lacks, and takes the upsert itself (its
// ON CONFLICT target is the table's primary key).
func requireTable(ctx context.Context, cl cluster, u *upsert) error {
	have, err := cl.Columns(ctx, u.table)
	if err != nil {
		return err
	}
	if len(have) == 0 {
		return fmt.Errorf("reseed: the cluster has no table %q", u.table)
	}
	names := map[string]bool{}
	for _, c := range have {
		names[strings.ToLower(c)] = true
	}
	var missing []string
	for _, w := range u.cols {
		if !names[strings.ToLower(w)] {
			missing = append(missing, w)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("reseed: the cluster's table %q has no column %s", u.table, strings.Join(missing, ", "))
	}
	if err := cl.Try(ctx, u.probe()); err != nil {
		var ce *client.Error
		if errors.As(err, &ce) && ce.Status < 500 {
			return fmt.Errorf("reseed: the cluster's table %q does not take upserts on (%s): %w", u.table, strings.Join(u.pk, ", "), err)
		}
		return fmt.Errorf("reseed: table %q: %w", u.table, err)
	}
	return nil
}
