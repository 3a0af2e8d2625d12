package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/patina-db/patina/internal/crdt"
)

// backupTo writes a Backup of s to path.
func backupTo(t *testing.T, s *Store, path string) {
	t.Helper()
	snap, err := s.Backup(context.Background())
	if err != nil {
		t.Fatalf("backup: %v", err)
	}
	defer snap.Close()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(f, snap)
	if err != nil || n != snap.Size() {
		t.Fatalf("copy backup: %d of %d bytes: %v", n, snap.Size(), err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBackupUnderWritesIsConsistent(t *testing.T) {
	dir := t.TempDir()
	s := regionalStore(t, dir, "a")
	defer s.Close()
	// One new row per version, so a consistent snapshot holds exactly as
	// many rows as its head version.
	stop, started := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			select {
			case <-started:
			default:
				close(started)
			}
		}()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Transact(context.Background(), []Statement{stmt(`INSERT INTO machines (id, app) VALUES (?, 'web')`, fmt.Sprint("m", i))}); err != nil {
				t.Errorf("write: %v", err)
				return
			}
			if i == 50 {
				close(started) // the backups below run while writes go on
			}
		}
	}()
	<-started
	var copies []string
	for i := 0; i < 3; i++ {
		p := filepath.Join(dir, fmt.Sprintf("backup%d.db", i))
		backupTo(t, s, p)
		copies = append(copies, p)
	}
	close(stop)
	wg.Wait()
	for _, p := range copies {
		info, err := CheckFile(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if info.Actor != s.Actor() || strings.Join(info.Tables, ",") != "hosts,machine_checks,machines" {
			t.Fatalf("%s: %+v", p, info)
		}
		b, err := Open(context.Background(), Config{Path: p})
		if err != nil {
			t.Fatal(err)
		}
		var rows int
		if err := queryRow(context.Background(), b.writer, `SELECT count(*) FROM machines`, nil, &rows); err != nil {
			t.Fatal(err)
		}
		if rows == 0 || uint64(rows) != b.Head() || b.Gaps() != 0 {
			t.Fatalf("%s: %d rows at head %d: not one snapshot", p, rows, b.Head())
		}
		b.Close()
	}
	// Nothing left beside the database but the copies made here.
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".backup-") {
			t.Fatalf("temporary file left behind: %s", e.Name())
		}
	}
}

func TestCheckFileRefusesWhatIsNotAnIntactPatinaDatabase(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 100)), 0o644)
	plain := filepath.Join(dir, "plain.db")
	db, conn, err := openFile(context.Background(), plain)
	if err != nil {
		t.Fatal(err)
	}
	conn.ExecContext(context.Background(), `CREATE TABLE t (a)`)
	conn.Close()
	db.Close()
	s := regionalStore(t, dir, "a")
	exec(t, s, stmt(`INSERT INTO machines (id) VALUES ('m1')`))
	good := filepath.Join(dir, "good.db")
	backupTo(t, s, good)
	s.Close()
	truncated := filepath.Join(dir, "truncated.db")
	data, _ := os.ReadFile(good)
	os.WriteFile(truncated, data[:len(data)/2], 0o644)
	for path, want := range map[string]string{
		garbage:                       "file is not a database",
		plain:                         "not a patina database",
		truncated:                     "",
		filepath.Join(dir, "none.db"): "no such file",
		dir:                           "not a regular file",
	} {
		_, err := CheckFile(context.Background(), path)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error with %q", filepath.Base(path), err, want)
		}
	}
	if _, err := CheckFile(context.Background(), good); err != nil {
		t.Fatal(err)
	}
}

func TestOneStorePerDatabase(t *testing.T) {
	dir := t.TempDir()
	s := regionalStore(t, dir, "a")
	if _, err := Open(context.Background(), Config{Path: s.Path()}); !errors.Is(err, ErrInUse) {
		t.Fatalf("second open: %v, want ErrInUse", err)
	}
	s.Close()
	again, err := Open(context.Background(), Config{Path: s.Path()})
	if err != nil {
		t.Fatalf("open after close: %v", err)
	}
	again.Close()
}

// exportAll reads every version s knows of every actor.
func exportAll(t *testing.T, s *Store) []*crdt.Changeset {
	t.Helper()
	book := s.Bookkeeping()
	var out []*crdt.Changeset
	for _, a := range book.Actors() {
		vcs, err := s.ChangesRange(context.Background(), a, 1, book.Head(a))
		if err != nil {
			t.Fatal(err)
		}
		for _, vc := range vcs {
			out = append(out, vc.Changeset)
		}
	}
	return out
}

func TestReidentifyKeepsTheOldVersionsAsARemoteActors(t *testing.T) {
	dir := t.TempDir()
	a, b := regionalStore(t, dir, "a"), regionalStore(t, dir, "b")
	defer a.Close()
	defer b.Close()
	// Local writes on a, remote versions from b applied on a, rows that
	// both wrote (ties broken by actor id), deletes and resurrections.
	for i := 0; i < 6; i++ {
		exec(t, a, stmt(`INSERT INTO machines (id, app, port) VALUES (?, 'web', ?) ON CONFLICT (id) DO UPDATE SET port = excluded.port`, fmt.Sprint("m", i%4), int64(i)))
		exec(t, b, stmt(`INSERT INTO machines (id, app, state) VALUES (?, 'db', 'started') ON CONFLICT (id) DO UPDATE SET state = 'stopped'`, fmt.Sprint("m", i%3)))
	}
	exec(t, a, stmt(`DELETE FROM machines WHERE id = 'm3'`))
	exec(t, a, stmt(`INSERT INTO machine_checks (machine_id, name, status) VALUES ('m1', 'http', 'passing')`))
	exec(t, b, stmt(`DELETE FROM machines WHERE id = 'm0'`))
	exec(t, b, stmt(`INSERT INTO machines (id, app) VALUES ('m0', 'again')`))
	replicate(t, b, a)
	exec(t, a, stmt(`UPDATE machines SET host = 'h1' WHERE id = 'm0'`))
	// A version with nothing left: overwritten by a later one.
	exec(t, a, stmt(`UPDATE machine_checks SET output = 'x' WHERE machine_id = 'm1'`))
	exec(t, a, stmt(`UPDATE machine_checks SET output = 'y' WHERE machine_id = 'm1'`))

	orig, re := filepath.Join(dir, "orig.db"), filepath.Join(dir, "re.db")
	backupTo(t, a, orig)
	backupTo(t, a, re)
	old, fresh, err := Reidentify(context.Background(), re)
	if err != nil {
		t.Fatal(err)
	}
	if old != a.Actor() || fresh == old || fresh.IsZero() || fresh == b.Actor() {
		t.Fatalf("old %s fresh %s, a is %s", old, fresh, a.Actor())
	}
	o := openTestStore(t, dir, "orig", "")
	r := openTestStore(t, dir, "re", "")
	defer o.Close()
	defer r.Close()
	if r.Actor() != fresh || r.Head() != 0 {
		t.Fatalf("reidentified store: actor %s head %d", r.Actor(), r.Head())
	}
	// Same rows, same clocks (by actor id), same versions known.
	for _, table := range []string{"machines", "machine_checks"} {
		if dumpTable(t, r, table) != dumpTable(t, o, table) {
			t.Fatalf("%s changed:\n%s\nvs\n%s", table, dumpTable(t, o, table), dumpTable(t, r, table))
		}
		if dumpClock(t, r, table) != dumpClock(t, o, table) {
			t.Fatalf("clock of %s changed:\n%s\nvs\n%s", table, dumpClock(t, o, table), dumpClock(t, r, table))
		}
	}
	if dumpBook(r) != dumpBook(o) {
		t.Fatalf("bookkeeping changed:\n%s\nvs\n%s", dumpBook(o), dumpBook(r))
	}
	for v := uint64(1); v <= a.Head(); v++ {
		if !r.Knows(old, v) {
			t.Fatalf("version %d of the old actor unknown", v)
		}
	}
	dr, _ := r.Digest(context.Background())
	do, _ := o.Digest(context.Background())
	if dr != do {
		t.Fatal("digests differ")
	}

	// Exported and replayed elsewhere, both give the same state.
	f1, f2 := regionalStore(t, dir, "f1"), regionalStore(t, dir, "f2")
	defer f1.Close()
	defer f2.Close()
	apply(t, f1, exportAll(t, r)...)
	apply(t, f2, exportAll(t, o)...)
	d1, _ := f1.Digest(context.Background())
	d2, _ := f2.Digest(context.Background())
	if d1 != d2 || d1 != dr {
		t.Fatalf("replayed exports differ: %s %s (reidentified %s)", d1[:12], d2[:12], dr[:12])
	}

	// The old actor writes on after the snapshot: the reidentified node
	// takes those versions, the copy that kept the old id refuses them.
	later := exec(t, a, stmt(`UPDATE machines SET port = 99 WHERE id = 'm1'`)).Version
	cs := changesetOf(t, a, later)
	apply(t, r, cs)
	if res, err := o.Apply(context.Background(), []*crdt.Changeset{cs}); err != nil || len(res.Failed) != 1 || !strings.Contains(res.Failed[0].Error(), "never wrote") {
		t.Fatalf("the copy with the old id: %+v %v", res, err)
	}
	// Its own first write is version 1 of the new actor, and replicates.
	if v := exec(t, r, stmt(`UPDATE machines SET image = 'img:2' WHERE id = 'm2'`)).Version; v != 1 {
		t.Fatalf("first write after reidentify: version %d", v)
	}
	if !r.Knows(fresh, 1) || r.Knows(old, later+1) {
		t.Fatal("bookkeeping of the new actor")
	}
	mine := changesetOf(t, r, 1)
	if len(mine.Changes) != 1 || mine.Changes[0].Column != "image" {
		t.Fatalf("version 1 of the new actor: %+v", mine.Changes)
	}
	apply(t, a, mine)
	replicate(t, a, r) // known versions are no-ops
	da, _ := a.Digest(context.Background())
	dr, _ = r.Digest(context.Background())
	if da != dr {
		t.Fatalf("a and the reidentified node differ:\n%s\n%s", dumpTable(t, a, "machines"), dumpTable(t, r, "machines"))
	}
}

// TestBackupLeftoversRemovedAtOpen: a process that died during a
// backup left its copy beside the database; the next open removes it,
// and only it.
func TestBackupLeftoversRemovedAtOpen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "node.db")
	st, err := Open(context.Background(), Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	left := []string{filepath.Join(dir, ".node.db.patina-vacuum-1234"), filepath.Join(dir, ".node.db.patina-vacuum-x")}
	kept := []string{path + ".backup-before-upgrade", filepath.Join(dir, ".other.db.patina-vacuum-1"), filepath.Join(dir, ".node.db.patina-vacuum")}
	for _, n := range append(append([]string{}, left...), kept...) {
		if err := os.WriteFile(n, []byte("partial copy"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	st, err = Open(context.Background(), Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, n := range left {
		if _, err := os.Stat(n); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v, want it removed", n, err)
		}
	}
	for _, n := range kept {
		if _, err := os.Stat(n); err != nil {
			t.Errorf("%s: %v, want it kept", n, err)
		}
	}
}
