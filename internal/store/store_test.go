package store

import (
	"context"
	"strings"
	"testing"
)

func TestTransactVersionsAndCapture(t *testing.T) {
	dir := t.TempDir()
	s := regionalStore(t, dir, "a")
	defer s.Close()
	ins := `INSERT INTO machines (id, app, region, host, address, port, state, image, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT (id) DO UPDATE SET app = excluded.app, region = excluded.region, host = excluded.host, address = excluded.address,
		port = excluded.port, state = excluded.state, image = excluded.image, updated_at = excluded.updated_at`
	row := []any{"m1", "web", "ams", "h1", "fdaa::1", int64(8080), "started", "img:1", int64(1000)}
	res := exec(t, s, stmt(ins, row...))
	if res.Version != 1 {
		t.Fatalf("first write: version %d, want 1", res.Version)
	}
	clockBefore := dumpClock(t, s, "machines")

	// Re-publishing identical values consumes no version and leaves the clock.
	res = exec(t, s, stmt(ins, row...))
	if res.Version != 0 {
		t.Fatalf("identical re-publish: version %d, want none", res.Version)
	}
	if got := dumpClock(t, s, "machines"); got != clockBefore {
		t.Fatalf("identical re-publish changed the clock:\n%s\nvs\n%s", clockBefore, got)
	}

	// Changing one column bumps that column only.
	row[6] = "stopped"
	res = exec(t, s, stmt(ins, row...))
	if res.Version != 2 {
		t.Fatalf("state change: version %d, want 2", res.Version)
	}
	cs := changesetOf(t, s, 2)
	if len(cs.Changes) != 1 || cs.Changes[0].Column != "state" || cs.Changes[0].ColVersion != 2 {
		t.Fatalf("state change: changeset %+v, want one change of state at col_version 2", cs.Changes)
	}
	cs1 := changesetOf(t, s, 1)
	// Version 1 keeps the sentinel and every column but state.
	if len(cs1.Changes) != 8 {
		t.Fatalf("version 1 survivors: %d changes, want 8 (sentinel + 7 cells): %+v", len(cs1.Changes), cs1.Changes)
	}
	for _, c := range cs1.Changes {
		if c.Column == "state" {
			t.Fatal("version 1 still reports the overwritten state cell")
		}
	}
	if s.Head() != 2 {
		t.Fatalf("head %d, want 2", s.Head())
	}
}

func TestTransactRollsBackOnFailure(t *testing.T) {
	dir := t.TempDir()
	s := regionalStore(t, dir, "a")
	defer s.Close()
	_, err := s.Transact(context.Background(), []Statement{
		stmt(`INSERT INTO machines (id, app) VALUES ('m1', 'web')`),
		stmt(`INSERT INTO machine_checks (machine_id, name) VALUES ('m1', 'http')`),
		stmt(`INSERT INTO machines (id, app) VALUES ('m1', 'dup')`),
	})
	var se *StatementError
	if !errorsAs(err, &se) || se.Index != 2 || !se.Client || !strings.Contains(se.Error(), "UNIQUE constraint failed") {
		t.Fatalf("want client error for statement 2 with SQLite's message, got %v", err)
	}
	if got := dumpTable(t, s, "machines") + dumpTable(t, s, "machine_checks") + dumpClock(t, s, "machines"); got != "" {
		t.Fatalf("failed transaction left a trace:\n%s", got)
	}
	if s.Head() != 0 {
		t.Fatalf("failed transaction consumed version %d", s.Head())
	}
}

// TestCanceledTransactionKeepsTheWriter: a client that goes away in the
// middle of a transaction rolls it back, and the writer (with its capture
// triggers) keeps working.
func TestCanceledTransactionKeepsTheWriter(t *testing.T) {
	s := regionalStore(t, t.TempDir(), "a")
	defer s.Close()
	ctx, cancel := context.WithCancel(context.Background())
	_, err := s.Write(ctx, func(tx Tx) error {
		if _, err := tx.ExecContext(ctx, `INSERT INTO machines (id) VALUES ('gone')`); err != nil {
			return err
		}
		cancel()
		_, err := tx.ExecContext(ctx, `INSERT INTO machines (id) VALUES ('gone2')`)
		return err
	})
	if err == nil {
		t.Fatal("a canceled transaction committed")
	}
	res := exec(t, s, stmt(`INSERT INTO machines (id, app) VALUES ('m1', 'web')`))
	if res.Version != 1 {
		t.Fatalf("after the canceled transaction: version %d, want 1", res.Version)
	}
	cs := changesetOf(t, s, 1)
	if len(cs.Changes) != 9 {
		t.Fatalf("capture lost after the canceled transaction: %d changes", len(cs.Changes))
	}
	if got := dumpTable(t, s, "machines"); strings.Contains(got, "gone") {
		t.Fatalf("canceled rows were written: %s", got)
	}
}

func TestOpenRefusesOtherFormats(t *testing.T) {
	dir := t.TempDir()
	s := regionalStore(t, dir, "a")
	if _, err := s.writer.ExecContext(context.Background(), `UPDATE __patina_meta SET value = 99 WHERE key = 'format'`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open(context.Background(), Config{Path: s.Path()})
	if err == nil || !strings.Contains(err.Error(), "database format 99; this patina reads format 1") {
		t.Fatalf("opening format 99: %v", err)
	}
}
