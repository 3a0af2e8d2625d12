package store

import (
	"context"
	"path/filepath"
	"testing"
)

// abandon closes a store's connections the way a crash would: its run
// record stays.
func abandon(t *testing.T, s *Store) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if err := s.closeConns(); err != nil {
		t.Fatal(err)
	}
}

func withBoot(t *testing.T, id string) {
	t.Helper()
	was := bootID
	bootID = func() string { return id }
	t.Cleanup(func() { bootID = was })
}

// TestUncleanRebootReidentifies: a store whose last run ended with its
// host (its record names another boot) opens under a new actor id, and
// its versions become the old actor's; one that only crashed, or closed,
// keeps its id.
func TestUncleanRebootReidentifies(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.db")
	schema := `CREATE TABLE t (id TEXT NOT NULL PRIMARY KEY, v TEXT)`
	withBoot(t, "boot-1")
	s := openTestStore(t, dir, "a", schema)
	first := s.Actor()
	exec(t, s, stmt(`INSERT INTO t VALUES ('x', '1')`))
	exec(t, s, stmt(`INSERT INTO t VALUES ('y', '2')`))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	reopen := func() *Store {
		t.Helper()
		s, err := Open(context.Background(), Config{Path: path})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	// Closed cleanly, then opened in another boot: nothing was lost.
	withBoot(t, "boot-2")
	s = reopen()
	if s.Actor() != first {
		t.Fatal("a store closed cleanly changed its actor id")
	}
	// The process dies, the host does not.
	abandon(t, s)
	s = reopen()
	if _, ok := s.Reidentified(); ok || s.Actor() != first {
		t.Fatal("a store reopened in the same boot changed its actor id")
	}
	// The host goes down with the store open.
	abandon(t, s)
	withBoot(t, "boot-3")
	s = reopen()
	defer s.Close()
	old, ok := s.Reidentified()
	if !ok || old != first || s.Actor() == first {
		t.Fatalf("after an unclean reboot: actor %s (was %s), reidentified %v from %s", s.Actor(), first, ok, old)
	}
	if s.Head() != 0 || s.Bookkeeping().Head(first) != 2 {
		t.Fatalf("own head %d, the old actor's %d: want 0 and 2", s.Head(), s.Bookkeeping().Head(first))
	}
	if got := dumpTable(t, s, "t"); got != "text:'x' text:'1'\ntext:'y' text:'2'\n" {
		t.Fatalf("table after the new id: %q", got)
	}
	cs, _, err := s.Changes(context.Background(), first, 2)
	if err != nil || cs == nil || len(cs.Changes) == 0 {
		t.Fatalf("the old actor's version 2: %+v %v", cs, err)
	}
	if v := exec(t, s, stmt(`INSERT INTO t VALUES ('z', '3')`)).Version; v != 1 {
		t.Fatalf("first write under the new id: version %d, want 1", v)
	}
}
