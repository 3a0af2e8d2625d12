package backup_test

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
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
	dir := t.TempDir()
	in := filepath.Join(dir, "b.db")
	if _, err := backup.Fetch(ctx, c, in); err != nil {
		t.Fatal(err)
	}
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
