package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/schemas"
)

// queued runs each transaction in a goroutine while the store's lock is
// held, waits until all but the first are queued behind it, then lets the
// group commit: the first leads and the rest form one group.
func queued(t *testing.T, s *Store, ctxs []context.Context, txs [][]Statement) ([]*TxResult, []error) {
	t.Helper()
	res := make([]*TxResult, len(txs))
	errs := make([]error, len(txs))
	s.mu.Lock()
	var wg sync.WaitGroup
	for i := range txs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			if ctxs != nil && ctxs[i] != nil {
				ctx = ctxs[i]
			}
			res[i], errs[i] = s.Transact(ctx, txs[i])
		}()
		if i == 0 {
			// The first leads and waits for the lock.
			waitQueue(t, s, func(q int) bool { return s.group.leading && q == 0 })
		} else {
			waitQueue(t, s, func(q int) bool { return q == i })
		}
	}
	s.mu.Unlock()
	wg.Wait()
	return res, errs
}

func waitQueue(t *testing.T, s *Store, cond func(queued int) bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.group.mu.Lock()
		ok := cond(len(s.group.queue))
		s.group.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("transactions did not queue")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestGroupCommitSharesAVersion: transactions queued behind a commit
// commit together as one version, which replicates like any other.
func TestGroupCommitSharesAVersion(t *testing.T) {
	dir := t.TempDir()
	s := regionalStore(t, dir, "a")
	defer s.Close()
	var txs [][]Statement
	for i := 0; i < 6; i++ {
		txs = append(txs, []Statement{stmt(`INSERT INTO machines (id, app) VALUES (?, 'g')`, fmt.Sprint("m", i))})
	}
	before := time.Now()
	res, errs := queued(t, s, nil, txs)
	after := time.Now()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("tx %d: %v", i, err)
		}
	}
	// The leader alone, then the five behind it together, with the
	// group's commit time.
	if res[0].Version != 1 || res[0].Committed.Before(before) || res[0].Committed.After(after) {
		t.Fatalf("leader: version %d committed %v, want 1 between %v and %v", res[0].Version, res[0].Committed, before, after)
	}
	for i := 1; i < 6; i++ {
		if res[i].Version != 2 || len(res[i].Results) != 1 || res[i].Results[0].RowsAffected != 1 {
			t.Fatalf("tx %d: %+v, want version 2 and one row", i, res[i])
		}
		if !res[i].Committed.Equal(res[1].Committed) || !res[i].Committed.After(res[0].Committed) || res[i].Committed.After(after) {
			t.Fatalf("tx %d committed %v: want the group's %v, after the leader's %v", i, res[i].Committed, res[1].Committed, res[0].Committed)
		}
	}
	if s.Head() != 2 {
		t.Fatalf("head %d, want 2", s.Head())
	}
	b := regionalStore(t, dir, "b")
	defer b.Close()
	for v := uint64(1); v <= 2; v++ {
		if _, err := b.Apply(context.Background(), []*crdt.Changeset{changesetOf(t, s, v)}); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := dumpTable(t, b, "machines"), dumpTable(t, s, "machines"); got != want || want == "" {
		t.Fatalf("replica differs:\n%s\nwant\n%s", got, want)
	}
}

// TestGroupCommitFailureIsItsOwn: a transaction that fails inside a group
// leaves nothing behind and takes no other transaction with it, whether
// SQLite rolled back only its statement or (OR ROLLBACK) the whole
// transaction, or its client went away, and whether it was the group's
// first failure (run without savepoints) or a later one.
func TestGroupCommitFailureIsItsOwn(t *testing.T) {
	s := regionalStore(t, t.TempDir(), "a")
	defer s.Close()
	exec(t, s, stmt(`INSERT INTO machines (id, app) VALUES ('taken', 'x')`))
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	txs := [][]Statement{
		{stmt(`INSERT INTO machines (id, app) VALUES ('lead', 'g')`)},
		{stmt(`INSERT INTO machines (id, app) VALUES ('a', 'g')`)},
		// Its first statement is undone with the failing second.
		{stmt(`INSERT INTO machines (id, app) VALUES ('half', 'g')`), stmt(`INSERT INTO machines (id, app) VALUES ('taken', 'g')`)},
		{stmt(`INSERT INTO machines (id, app) VALUES ('b', 'g')`)},
		// Ends the whole SQLite transaction: the others run again.
		{stmt(`INSERT INTO machines (id, app) VALUES ('half2', 'g')`), stmt(`INSERT OR ROLLBACK INTO machines (id, app) VALUES ('taken', 'g')`)},
		{stmt(`INSERT INTO machines (id, app) VALUES ('c', 'g')`)},
		{stmt(`INSERT INTO machines (id, app) VALUES ('canceled', 'g')`)},
		{stmt(`UPDATE machines SET app = 'g' WHERE id = 'nothing'`)},
		// A second failure of the first kind: the group runs under
		// savepoints since the first, and this one is undone alone.
		{stmt(`INSERT INTO machines (id, app) VALUES ('half3', 'g')`), stmt(`INSERT INTO machines (id, app) VALUES ('taken', 'g')`)},
	}
	ctxs := make([]context.Context, len(txs))
	ctxs[6] = gone
	res, errs := queued(t, s, ctxs, txs)
	for _, i := range []int{2, 4, 6, 8} {
		if errs[i] == nil {
			t.Fatalf("tx %d committed: %+v", i, res[i])
		}
	}
	for _, i := range []int{0, 1, 3, 5, 7} {
		if errs[i] != nil {
			t.Fatalf("tx %d: %v", i, errs[i])
		}
	}
	if res[1].Version != 3 || res[3].Version != 3 || res[5].Version != 3 {
		t.Fatalf("group versions %d %d %d, want 3", res[1].Version, res[3].Version, res[5].Version)
	}
	got := dumpQuery(t, s, `SELECT group_concat(id, ' ') FROM (SELECT id FROM machines ORDER BY id)`)
	if want := "a b c lead taken\n"; got != want {
		t.Fatalf("rows %q, want %q", got, want)
	}
	// The version holds exactly the group's surviving rows.
	cs := changesetOf(t, s, 3)
	keys := map[string]bool{}
	for _, c := range cs.Changes {
		keys[string(c.PK)] = true
	}
	if len(keys) != 3 {
		t.Fatalf("version 3 touches %d rows, want 3", len(keys))
	}
}

// Transactions submitted one after another commit in that order, whether
// or not they share a commit, each with its own outcome.
func TestSubmitKeepsOrder(t *testing.T) {
	s := regionalStore(t, t.TempDir(), "s")
	defer s.Close()
	ctx := context.Background()
	type outcome struct {
		res *TxResult
		err error
	}
	txs := [][]Statement{
		{stmt(`INSERT INTO machines (id, app) VALUES ('m1', 'a')`)},
		{stmt(`UPDATE machines SET app = 'b' WHERE id = 'm1'`)},
		{stmt(`INSERT INTO nosuch (id) VALUES (1)`)},
		nil,
		{stmt(`UPDATE machines SET app = 'c' WHERE id = 'm1' AND app = 'b'`)},
	}
	for round := 0; round < 20; round++ {
		outs := make([]chan outcome, len(txs))
		for i, stmts := range txs {
			outs[i] = make(chan outcome, 1)
			s.Submit(ctx, stmts, func(res *TxResult, err error) { outs[i] <- outcome{res, err} })
		}
		var last uint64
		for i, ch := range outs {
			o := <-ch
			switch i {
			case 2, 3:
				var se *StatementError
				if !errors.As(o.err, &se) || !se.Client {
					t.Fatalf("round %d, transaction %d: %v, want a client's error", round, i, o.err)
				}
			default:
				if o.err != nil || o.res.Version < last || len(o.res.Results) != 1 || o.res.Results[0].RowsAffected != 1 {
					t.Fatalf("round %d, transaction %d: %+v %v after version %d", round, i, o.res, o.err, last)
				}
				last = o.res.Version
			}
		}
		var app string
		if err := s.readers.QueryRowContext(ctx, `SELECT app FROM machines WHERE id = 'm1'`).Scan(&app); err != nil || app != "c" {
			t.Fatalf("round %d: m1 app %q %v, want c", round, app, err)
		}
		exec(t, s, stmt(`DELETE FROM machines`))
	}
}

// TestValuesAboveTheLimitFailAlone: with MaxValueBytes set, a write that
// makes a larger string or blob, given as a parameter or made in SQL,
// fails as the client's error and is rolled back alone; the transactions
// grouped with it commit, and values up to the limit are taken.
func TestValuesAboveTheLimitFailAlone(t *testing.T) {
	s, err := Open(context.Background(), Config{Path: filepath.Join(t.TempDir(), "a.db"), MaxValueBytes: 10_000})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.ApplySchemaSQL(context.Background(), schemas.Regional()); err != nil {
		t.Fatal(err)
	}
	exec(t, s, stmt(`INSERT INTO machines (id, image) VALUES ('fits', ?)`, strings.Repeat("x", 9_000)))
	txs := [][]Statement{
		{stmt(`INSERT INTO machines (id, app) VALUES ('lead', 'g')`)},
		{stmt(`INSERT INTO machines (id, app) VALUES ('half', 'g')`), stmt(`INSERT INTO machines (id, image) VALUES ('param', ?)`, strings.Repeat("x", 10_001))},
		{stmt(`INSERT INTO machines (id, app) VALUES ('a', 'g')`)},
		{stmt(`UPDATE machines SET image = image || image WHERE id = 'fits'`)},
		{stmt(`INSERT INTO machines (id, image) VALUES ('blob', zeroblob(20000))`)},
		{stmt(`INSERT INTO machines (id, app) VALUES ('b', 'g')`)},
	}
	_, errs := queued(t, s, make([]context.Context, len(txs)), txs)
	for _, i := range []int{1, 3, 4} {
		var se *StatementError
		if !errors.As(errs[i], &se) || !se.Client || !strings.Contains(se.Error(), "too big") {
			t.Fatalf("tx %d: %v, want a client error saying the value is too big", i, errs[i])
		}
	}
	for _, i := range []int{0, 2, 5} {
		if errs[i] != nil {
			t.Fatalf("tx %d: %v", i, errs[i])
		}
	}
	got := dumpQuery(t, s, `SELECT group_concat(id || ':' || length(image), ' ') FROM (SELECT id, image FROM machines ORDER BY id)`)
	if want := "a:0 b:0 fits:9000 lead:0\n"; got != want {
		t.Fatalf("rows %q, want %q", got, want)
	}
}
