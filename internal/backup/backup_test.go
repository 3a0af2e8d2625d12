package backup_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/backup"
	"github.com/patina-db/patina/internal/store"
)

func schemaDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "schemas", "regional")
}

// startAgent runs an agent alone with the regional schema, a bearer
// token "data" and an admin token "admin", and returns it with a client
// holding each token.
func startAgent(t *testing.T) (a *agent.Agent, adminClient, dataClient *client.Client) {
	t.Helper()
	cfg, err := agent.ParseConfig(`
[db]
path = "`+filepath.Join(t.TempDir(), "p.db")+`"
schema_paths = ["`+schemaDir()+`"]
[api]
addr = "127.0.0.1:0"
bearer_token = "data"
admin_token = "admin"
`, "test")
	if err != nil {
		t.Fatal(err)
	}
	a, err = agent.New(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	adminClient, _ = client.New("http://"+a.APIAddr(), "admin")
	dataClient, _ = client.New("http://"+a.APIAddr(), "data")
	return a, adminClient, dataClient
}

func write(t *testing.T, c *client.Client, q string, args ...any) {
	t.Helper()
	if _, err := c.Transact(context.Background(), client.Statement{Query: q, Params: args}); err != nil {
		t.Fatal(err)
	}
}

func TestFetchWritesACheckedFileOrNothing(t *testing.T) {
	a, c, data := startAgent(t)
	write(t, data, `INSERT INTO machines (id, app) VALUES ('m1', 'web')`)
	dir := t.TempDir()
	out := filepath.Join(dir, "b.db")
	ctx := context.Background()

	if _, err := backup.Fetch(ctx, data, out); err == nil || !strings.Contains(err.Error(), "401") {
		t.Fatalf("with the data token: %v, want a 401", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("a failed fetch left %v", entries)
	}
	got, err := backup.Fetch(ctx, c, out)
	if err != nil {
		t.Fatal(err)
	}
	if got.Actor != a.Store().Actor() || got.Bytes == 0 || strings.Join(got.Tables, ",") != "hosts,machine_checks,machines" {
		t.Fatalf("%+v", got)
	}
	if _, err := store.CheckFile(ctx, out); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Fetch(ctx, c, out); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("over an existing file: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Fatalf("left %v", entries)
	}

	// Another fetch's file in progress (or one left by a fetch that
	// died) is neither overwritten nor removed.
	other := filepath.Join(dir, "c.db")
	if err := os.WriteFile(other+".tmp", []byte("another fetch"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Fetch(ctx, c, other); err == nil || !strings.Contains(err.Error(), "under way") {
		t.Fatalf("beside another fetch's file: %v", err)
	}
	if b, err := os.ReadFile(other + ".tmp"); err != nil || string(b) != "another fetch" {
		t.Fatalf("the other fetch's file: %q, %v", b, err)
	}
}

func TestRestore(t *testing.T) {
	a, c, data := startAgent(t)
	write(t, data, `INSERT INTO machines (id, app) VALUES ('m1', 'web')`)
	write(t, data, `UPDATE machines SET state = 'started' WHERE id = 'm1'`)
	ctx := context.Background()
	dir, in := takeBackup(t, c)
	db := filepath.Join(dir, "node", "patina.db")
	os.Mkdir(filepath.Dir(db), 0o755)

	got, err := backup.Restore(ctx, in, db, backup.RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	source := a.Store().Actor()
	if got.From != source || got.Actor == source || got.Actor.IsZero() {
		t.Fatalf("restored %+v from %s", got, source)
	}
	st, err := store.Open(ctx, store.Config{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	if st.Actor() != got.Actor || st.Head() != 0 || !st.Knows(source, 2) || st.Knows(source, 3) {
		t.Fatalf("restored store: actor %s head %d", st.Actor(), st.Head())
	}
	want, _ := a.Store().Digest(ctx)
	if d, _ := st.Digest(ctx); d != want {
		t.Fatal("the restored database holds other data than the source")
	}

	// While a store has it open, a restore is refused and changes nothing.
	if _, err := backup.Restore(ctx, in, db, backup.RestoreOptions{Force: true}); err == nil || !strings.Contains(err.Error(), "stop the agent first") {
		t.Fatalf("restore over an open database: %v", err)
	}
	if _, err := st.Transact(ctx, []store.Statement{{SQL: `INSERT INTO machines (id) VALUES ('local')`}}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	before, _ := os.ReadFile(db)
	if _, err := backup.Restore(ctx, in, db, backup.RestoreOptions{}); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("restore over an existing database without force: %v", err)
	}
	garbage := filepath.Join(dir, "garbage.db")
	os.WriteFile(garbage, bytes.Repeat([]byte("garbage "), 1000), 0o644)
	for _, bad := range []string{garbage, filepath.Join(dir, "none.db"), db} {
		if _, err := backup.Restore(ctx, bad, db, backup.RestoreOptions{Force: true}); err == nil {
			t.Fatalf("restore of %s: no error", bad)
		}
	}
	if after, _ := os.ReadFile(db); !bytes.Equal(before, after) {
		t.Fatal("a refused restore changed the database")
	}

	// With force, the old database goes, and a WAL it left behind with it.
	os.WriteFile(db+"-wal", []byte("stale"), 0o644)
	again, err := backup.Restore(ctx, in, db, backup.RestoreOptions{Force: true})
	if err != nil {
		t.Fatal(err)
	}
	if again.Actor == got.Actor || again.Actor == source {
		t.Fatal("a second restore reused an actor id")
	}
	if _, err := os.Stat(db + "-wal"); !os.IsNotExist(err) {
		t.Fatal("the old WAL is still there")
	}
	entries, _ := os.ReadDir(filepath.Dir(db))
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "patina.db,patina.db.lock" {
		t.Fatalf("left beside the database: %v", names)
	}
	st, err = store.Open(ctx, store.Config{Path: db})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if d, _ := st.Digest(ctx); d != want {
		t.Fatal("the forced restore holds other data than the source")
	}
}

// TestRestoreRefusesATruncatedBackup: a backup file that lost its last
// bytes (a copy cut short by a full disk, an interrupted scp) is refused,
// not restored with the end of its last page read as zeros: SQLite's
// integrity check does not see those bytes go, and the restored node
// would serve, and replicate from, other data and clocks than the
// source's.
func TestRestoreRefusesATruncatedBackup(t *testing.T) {
	_, c, data := startAgent(t)
	for i := 0; i < 50; i++ {
		write(t, data, `INSERT INTO machines (id, app) VALUES (?, 'web')`, "m"+strings.Repeat("x", i))
	}
	ctx := context.Background()
	dir, in := takeBackup(t, c)
	b, err := os.ReadFile(in)
	if err != nil {
		t.Fatal(err)
	}
	for _, cut := range []int{1, 2} {
		short := filepath.Join(dir, "short.db")
		if err := os.WriteFile(short, b[:len(b)-cut], 0o644); err != nil {
			t.Fatal(err)
		}
		node := filepath.Join(dir, "node")
		os.RemoveAll(node)
		os.Mkdir(node, 0o755)
		db := filepath.Join(node, "patina.db")
		if _, err := backup.Restore(ctx, short, db, backup.RestoreOptions{}); err == nil {
			t.Fatalf("a backup missing its last %d bytes was restored", cut)
		}
		if _, err := os.Stat(db); !os.IsNotExist(err) {
			t.Fatalf("a refused restore left %s: %v", db, err)
		}
	}
}

// TestRestoreRefusesABackupTheSchemaFilesDoNotFit: a backup the agent
// would refuse to start on (one of the other tier, or holding a column
// its schema files lack) is refused before the database is replaced;
// one to which the files only add is restored.
func TestRestoreRefusesABackupTheSchemaFilesDoNotFit(t *testing.T) {
	_, c, data := startAgent(t)
	write(t, data, `INSERT INTO machines (id, app) VALUES ('m1', 'web')`)
	ctx := context.Background()
	dir, in := takeBackup(t, c)
	db := filepath.Join(dir, "node", "patina.db")
	if err := os.Mkdir(filepath.Dir(db), 0o755); err != nil {
		t.Fatal(err)
	}
	// The files add a table: the agent adds it when it starts.
	extra := filepath.Join(dir, "extra.sql")
	if err := os.WriteFile(extra, []byte(`CREATE TABLE notes (id TEXT PRIMARY KEY NOT NULL, body TEXT);`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Restore(ctx, in, db, backup.RestoreOptions{SchemaPaths: []string{schemaDir(), extra}}); err != nil {
		t.Fatalf("a backup the schema files only add to: %v", err)
	}
	before, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}

	lacking := filepath.Join(dir, "lacking")
	if err := os.Mkdir(lacking, 0o755); err != nil {
		t.Fatal(err)
	}
	// The regional files without the image column.
	for _, f := range []string{"hosts.sql", "machines.sql"} {
		b, err := os.ReadFile(filepath.Join(schemaDir(), f))
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.Replace(b, []byte("image      TEXT NOT NULL DEFAULT '',"), nil, 1)
		if err := os.WriteFile(filepath.Join(lacking, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for name, tc := range map[string]struct {
		paths []string
		want  string
	}{
		"global tier":     {[]string{filepath.Join(schemaDir(), "..", "global")}, `table "hosts"`},
		"a column lacked": {[]string{lacking}, `table "machines" column "image"`},
	} {
		_, err := backup.Restore(ctx, in, db, backup.RestoreOptions{Force: true, SchemaPaths: tc.paths})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "the database has it and the schema files do not") {
			t.Fatalf("%s: restore: %v, want a refusal naming %s", name, err, tc.want)
		}
		after, rerr := os.ReadFile(db)
		if rerr != nil || !bytes.Equal(before, after) {
			t.Fatalf("%s: a refused restore changed the database (%v)", name, rerr)
		}
		if left, _ := filepath.Glob(db + ".restore.tmp*"); len(left) > 0 {
			t.Fatalf("%s: a refused restore left %v", name, left)
		}
	}
}

// TestRestoreThroughASymlink: db.path may be a symbolic link to the file
// on another volume (the store supports it: SQLite keeps the WAL beside
// the file the link names). A forced restore replaces that file, and the
// WAL beside it, not the link: otherwise the restored database lands on
// the link's volume and the old one, with its WAL, stays behind on the
// data volume.
func TestRestoreThroughASymlink(t *testing.T) {
	a, c, data := startAgent(t)
	write(t, data, `INSERT INTO machines (id, app) VALUES ('m1', 'web')`)
	ctx := context.Background()
	dir, in := takeBackup(t, c)
	volume := filepath.Join(dir, "volume")
	os.Mkdir(volume, 0o755)
	real := filepath.Join(volume, "patina.db")
	st, err := store.Open(ctx, store.Config{Path: real})
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	os.WriteFile(real+"-wal", []byte("stale"), 0o644)
	etc := filepath.Join(dir, "etc")
	os.Mkdir(etc, 0o755)
	link := filepath.Join(etc, "patina.db")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	if _, err := backup.Restore(ctx, in, link, backup.RestoreOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the symbolic link %s was replaced: %v %v", link, fi.Mode(), err)
	}
	if _, err := os.Stat(real + "-wal"); !os.IsNotExist(err) {
		t.Fatal("the old WAL beside the database is still there")
	}
	st, err = store.Open(ctx, store.Config{Path: real})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	want, _ := a.Store().Digest(ctx)
	if d, _ := st.Digest(ctx); d != want {
		t.Fatal("the file the link names does not hold the restored data")
	}
}

// TestFetchNeverOverwritesAFileThatAppearsMeanwhile: "an existing OUT is
// never overwritten" holds for an OUT that appears while the snapshot
// streams (another job's file, a backup moved into place), not only for
// one there when Fetch began: the final step must not replace it.
func TestFetchNeverOverwritesAFileThatAppearsMeanwhile(t *testing.T) {
	_, c, data := startAgent(t)
	write(t, data, `INSERT INTO machines (id, app) VALUES ('m1', 'web')`)
	ctx := context.Background()
	dir := t.TempDir()
	first := filepath.Join(dir, "first.db")
	if _, err := backup.Fetch(ctx, c, first); err != nil {
		t.Fatal(err)
	}
	snap, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "b.db")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Someone else's file lands at out while the snapshot streams.
		if err := os.WriteFile(out, []byte("precious"), 0o600); err != nil {
			t.Error(err)
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(snap)))
		w.Write(snap)
	}))
	defer srv.Close()
	cl, _ := client.New(srv.URL, "admin")
	_, err = backup.Fetch(ctx, cl, out)
	if b, _ := os.ReadFile(out); string(b) != "precious" {
		t.Fatalf("fetch (err %v) overwrote a file that appeared at %s meanwhile", err, out)
	}
	if err == nil || !strings.Contains(err.Error(), "exists") {
		t.Fatalf("fetch onto a file that appeared meanwhile: %v", err)
	}
	if _, err := os.Stat(out + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("left %s.tmp: %v", out, err)
	}
}

// TestRestoreRefusesADatabaseWithItsWAL: pointed at another agent's
// live database file instead of a backup (or at a copy of a data
// directory whose agent crashed), restore must not copy the main file
// alone: the commits in the WAL beside it, and any checkpoint it was in
// the middle of, would be silently left out, and the restored node would
// believe in bookkeeping its rows do not match.
func TestRestoreRefusesADatabaseWithItsWAL(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	live := filepath.Join(dir, "live", "patina.db")
	os.Mkdir(filepath.Dir(live), 0o755)
	st, err := store.Open(ctx, store.Config{Path: live, ManualCheckpoint: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.ApplySchemaSQL(ctx, "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL DEFAULT '')"); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if _, err := st.Transact(ctx, []store.Statement{{SQL: "INSERT INTO t (id) VALUES (?)", Args: []any{i}}}); err != nil {
			t.Fatal(err)
		}
	}
	db := filepath.Join(dir, "node", "patina.db")
	os.Mkdir(filepath.Dir(db), 0o755)
	got, err := backup.Restore(ctx, live, db, backup.RestoreOptions{})
	if err == nil {
		restored, oerr := store.Open(ctx, store.Config{Path: db})
		if oerr != nil {
			t.Fatal(oerr)
		}
		defer restored.Close()
		t.Fatalf("restored %+v from a database whose WAL holds %d versions: it knows %d of them", got, st.Head(), restored.Bookkeeping().Head(st.Actor()))
	}
	if _, err := os.Stat(db); !os.IsNotExist(err) {
		t.Fatalf("a refused restore left %s", db)
	}
}

// TestRestoreLeavesFilesTheAgentsUserOwns: run as root (as an operator
// with sudo does), a restore gives the database, and the lock file it
// created, the owner of the directory they are in: the agent's user,
// which could not otherwise open them.
func TestRestoreLeavesFilesTheAgentsUserOwns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give files away")
	}
	_, c, data := startAgent(t)
	write(t, data, `INSERT INTO machines (id, app) VALUES ('m1', 'web')`)
	ctx := context.Background()
	dir, in := takeBackup(t, c)
	node := filepath.Join(dir, "node")
	if err := os.Mkdir(node, 0o755); err != nil {
		t.Fatal(err)
	}
	const uid, gid = 4242, 4343
	if err := os.Chown(node, uid, gid); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(node, "patina.db")
	if _, err := backup.Restore(ctx, in, db, backup.RestoreOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{db, store.LockPath(db)} {
		fi, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != uid || st.Gid != gid {
			t.Fatalf("%s belongs to %d:%d, want the directory's %d:%d", f, st.Uid, st.Gid, uid, gid)
		}
	}
}

// takeBackup fetches a backup of c's agent into a new temporary
// directory, as dir/b.db.
func takeBackup(t *testing.T, c *client.Client) (dir, in string) {
	t.Helper()
	dir = t.TempDir()
	in = filepath.Join(dir, "b.db")
	if _, err := backup.Fetch(context.Background(), c, in); err != nil {
		t.Fatal(err)
	}
	return dir, in
}
