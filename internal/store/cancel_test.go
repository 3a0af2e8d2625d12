package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mattn/go-sqlite3"

	"github.com/patina-db/patina/internal/crdt"
)

// writerIdle reports whether the writer connection is outside any
// transaction.
func writerIdle(t *testing.T, s *Store) bool {
	t.Helper()
	idle := false
	if err := s.writer.Raw(func(c any) error {
		idle = c.(*sqlite3.SQLiteConn).AutoCommit()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return idle
}

// TestCanceledConcurrentWritesLeaveNoLock: many writers queued on the
// store lose their context at once, as when an API server's clients
// disconnect together.
func TestCanceledConcurrentWritesLeaveNoLock(t *testing.T) {
	dir := t.TempDir()
	s := regionalStore(t, dir, "a")
	defer s.Close()
	rnd := rand.New(rand.NewPCG(3, 4))
	for round := 0; round < 60; round++ {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for w := 0; w < 16; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					_, _ = s.Transact(ctx, []Statement{stmt(`INSERT INTO machines (id, app, image) VALUES (?, 'c', hex(randomblob(64))) ON CONFLICT (id) DO UPDATE SET image = excluded.image`, fmt.Sprint("m", w, "-", i%20))})
				}
			}()
		}
		time.Sleep(time.Duration(rnd.IntN(5000)) * time.Microsecond)
		cancel()
		wg.Wait()
		if s.broken != nil || !writerIdle(t, s) {
			t.Fatalf("round %d: writer left in a transaction (broken: %v)", round, s.broken)
		}
		if _, err := s.Transact(context.Background(), []Statement{stmt(`INSERT INTO machines (id, app) VALUES (?, 'ok')`, fmt.Sprint("ok", round))}); err != nil {
			t.Fatalf("write after canceled ones (round %d): %v", round, err)
		}
	}
}

// TestInterruptWithAStatementOpenRollsBack: SQLite keeps a connection
// interrupted for as long as any statement on it is still running, so a
// canceled statement beside one left open makes even ROLLBACK fail. The
// writer must still end the transaction: a transaction left open would
// hold the write lock and shut remote applies out for good.
func TestInterruptWithAStatementOpenRollsBack(t *testing.T) {
	s := regionalStore(t, t.TempDir(), "a")
	defer s.Close()
	const long = `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000000) SELECT count(*) FROM n`
	var open *sql.Rows
	_, err := s.Write(context.Background(), func(tx Tx) error {
		if _, err := tx.ExecContext(context.Background(), `INSERT INTO machines (id) VALUES ('gone')`); err != nil {
			return err
		}
		// A statement of the writer's own left running.
		rows, err := s.wint.QueryContext(context.Background(), `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) SELECT i FROM n`)
		if err != nil {
			return err
		}
		open = rows
		if !rows.Next() {
			return errors.New("no row")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
		defer cancel()
		_, err = tx.ExecContext(ctx, long)
		if err == nil {
			return errors.New("the long statement was not interrupted")
		}
		return err
	})
	if open != nil {
		open.Close()
	}
	if err == nil {
		t.Fatal("the interrupted transaction committed")
	}
	t.Logf("write: %v", err)
	if s.broken != nil || !writerIdle(t, s) {
		t.Fatalf("writer left in a transaction (broken: %v)", s.broken)
	}
	res := exec(t, s, stmt(`INSERT INTO machines (id, app) VALUES ('m1', 'web')`))
	if res.Version != 1 {
		t.Fatalf("version %d, want 1", res.Version)
	}
	if got := dumpTable(t, s, "machines"); strings.Contains(got, "gone") {
		t.Fatalf("interrupted rows were written: %s", got)
	}
}

// TestApplyStopsWhenCanceled: an apply whose context ends applies nothing
// and leaves the applier usable.
func TestApplyStopsWhenCanceled(t *testing.T) {
	a, b := regionalPair(t)
	v := exec(t, a, stmt(`INSERT INTO machines (id, state) VALUES ('m1', 'started')`)).Version
	cs := changesetOf(t, a, v)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Apply(ctx, []*crdt.Changeset{cs}); !errors.Is(err, context.Canceled) {
		t.Fatalf("apply under a canceled context: %v", err)
	}
	if b.Bookkeeping().Knows(a.Actor(), v) || dumpTable(t, b, "machines") != "" {
		t.Fatal("a canceled apply left a trace")
	}
	if res := apply(t, b, cs); res.Applied != 1 {
		t.Fatalf("apply after the canceled one: %+v", res)
	}
}
