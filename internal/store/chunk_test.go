package store

import (
	"fmt"
	"strings"
	"testing"

	"github.com/patina-db/patina/internal/crdt"
)

func TestChunkRowsArePowersOfTwoThatFit(t *testing.T) {
	for _, perRow := range []int{1, 2, 5, 9, 19, 450, 900, 2000} {
		limit := rowsPerStmt(perRow)
		for total := 1; total <= 1000; total++ {
			sizes := map[int]bool{}
			for left := total; left > 0; {
				n := chunkRows(left, perRow)
				if n < 1 || n > left || n > limit || n&(n-1) != 0 {
					t.Fatalf("perRow %d, %d rows left: chunk of %d (limit %d)", perRow, left, n, limit)
				}
				sizes[n] = true
				left -= n
			}
			if len(sizes) > 11 {
				t.Fatalf("perRow %d, %d rows: %d distinct chunk sizes", perRow, total, len(sizes))
			}
		}
	}
}

// TestApplyBatchesOfEverySizeKeepFewStatements: versions of 1 to 150 rows
// applied one by one land whole, and the applier prepares a statement per
// power of two, not per batch size (with one per size, 150 sizes times
// the four statements of a fresh row would fill the cache, which then
// starts over and prepares everything again).
func TestApplyBatchesOfEverySizeKeepFewStatements(t *testing.T) {
	a, b := regionalPair(t)
	var css []*crdt.Changeset
	next := 0
	for n := 1; n <= 150; n++ {
		stmts := make([]Statement, n)
		for i := range stmts {
			stmts[i] = stmt("INSERT INTO machines (id, app, port) VALUES (?, ?, ?)", fmt.Sprintf("m%05d", next), fmt.Sprintf("app%d", n), int64(next))
			next++
		}
		res := exec(t, a, stmts...)
		css = append(css, changesetOf(t, a, res.Version))
	}
	for _, cs := range css {
		apply(t, b, cs)
	}
	if got, want := dumpTable(t, b, "machines"), dumpTable(t, a, "machines"); got != want {
		t.Fatalf("b's machines differ from a's")
	}
	if got, want := dumpClock(t, b, "machines"), dumpClock(t, a, "machines"); got != want {
		t.Fatalf("b's clocks differ from a's")
	}
	if got, want := dumpQuery(t, b, "SELECT count(*) FROM machines"), dumpQuery(t, a, "SELECT count(*) FROM machines"); got != want || !strings.Contains(want, fmt.Sprint(next)) {
		t.Fatalf("b holds %s machines, a %s, want %d", got, want, next)
	}
	if n := b.aint.prepared; n > 64 {
		t.Fatalf("the applier prepared %d statements for batches of every size", n)
	}
}
