package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/agent"
)

func startAgent(t *testing.T, token string) string {
	t.Helper()
	base, _ := runAgent(t, token)
	return base
}

// runAgent starts an agent and returns its API's address and a function
// that stops it (also called at the end of the test).
func runAgent(t *testing.T, token string) (string, func()) {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	cfg, err := agent.ParseConfig(`
[db]
path = "`+filepath.Join(t.TempDir(), "p.db")+`"
schema_paths = ["`+filepath.Join(filepath.Dir(file), "..", "schemas", "regional")+`"]
[api]
addr = "127.0.0.1:0"
bearer_token = "`+token+`"
`, "test")
	if err != nil {
		t.Fatal(err)
	}
	a, err := agent.New(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done }) }
	t.Cleanup(stop)
	return "http://" + a.APIAddr(), stop
}

func TestClientAgainstAnAgent(t *testing.T) {
	base := startAgent(t, "tok")
	ctx := context.Background()
	c, err := client.New(base, "tok")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.New("localhost:1", ""); err == nil {
		t.Fatal("an address without a scheme was accepted")
	}

	follow, err := c.Updates(ctx, "machines")
	if err != nil {
		t.Fatal(err)
	}
	defer follow.Close()

	res, err := c.Transact(ctx,
		client.Statement{Query: "INSERT INTO machines (id, app, port) VALUES (?, ?, ?)", Params: []any{"m1", "web", int64(80)}},
		client.Statement{Query: "UPDATE machines SET image = :img WHERE id = :id", NamedParams: map[string]any{"img": []byte{1, 2}, "id": "m1"}},
	)
	if err != nil || res.Version == nil || *res.Version != 1 || len(res.Results) != 2 {
		t.Fatalf("transact: %+v %v", res, err)
	}
	_, err = c.Transact(ctx, client.Statement{Query: "INSERT INTO machines (id) VALUES ('m1')"})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 400 {
		t.Fatalf("constraint failure: %v", err)
	}

	rows, err := c.Query(ctx, client.Statement{Query: "SELECT id, port, image, 1.5 FROM machines"})
	if err != nil {
		t.Fatal(err)
	}
	if cols := rows.Columns(); len(cols) != 4 || cols[0] != "id" {
		t.Fatalf("columns %v", cols)
	}
	if !rows.Next() {
		t.Fatalf("no row: %v", rows.Err())
	}
	row := rows.Row()
	if row[0] != "m1" || row[1] != int64(80) || string(row[2].([]byte)) != "\x01\x02" || row[3] != 1.5 {
		t.Fatalf("row %#v", row)
	}
	if rows.Next() || rows.Err() != nil {
		t.Fatalf("extra row or error: %v", rows.Err())
	}
	rows.Close()
	if _, err := c.Query(ctx, client.Statement{Query: "DELETE FROM machines"}); !errors.As(err, &ce) || ce.Status != 400 {
		t.Fatalf("write through Query: %v", err)
	}

	if err := c.Migrate(ctx, "ALTER TABLE machines ADD COLUMN cpus INTEGER"); err != nil {
		t.Fatal(err)
	}
	if err := c.Migrate(ctx, "ALTER TABLE machines DROP COLUMN cpus"); !errors.As(err, &ce) || ce.Status != 400 {
		t.Fatalf("destructive migration: %v", err)
	}
	h, err := c.Health(ctx, "gaps=0")
	if err != nil || h.Members != 1 {
		t.Fatalf("health: %+v %v", h, err)
	}
	members, err := c.Members(ctx)
	if err != nil || len(members) != 1 || !members[0].Self {
		t.Fatalf("members: %+v %v", members, err)
	}

	got := make(chan string, 2)
	go func() {
		for follow.Next() {
			n := follow.Notify()
			got <- n.Kind + " " + n.PK[0].(string)
		}
	}()
	// One version touched one row: one notification.
	for _, want := range []string{"update m1"} {
		select {
		case s := <-got:
			if s != want {
				t.Fatalf("notify %q, want %q", s, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no notify")
		}
	}

	bad, _ := client.New(base, "wrong")
	if _, err := bad.Members(ctx); !errors.As(err, &ce) || ce.Status != 401 {
		t.Fatalf("wrong token: %v", err)
	}
	// A transaction refused before it ran carries the agent's reason.
	if _, err := bad.Transact(ctx, client.Statement{Query: "SELECT 1"}); !errors.As(err, &ce) || ce.Status != 401 || ce.Message == "transaction failed" || ce.Message == "" {
		t.Fatalf("transaction with a wrong token: %v", err)
	}
}

func TestClientAdminCalls(t *testing.T) {
	base := startAgent(t, "tok")
	ctx := context.Background()
	c, _ := client.New(base, "tok")
	res, err := c.Reload(ctx)
	if err != nil || res.Changed || strings.Join(res.Tables, ",") != "hosts,machine_checks,machines" {
		t.Fatalf("reload: %+v %v", res, err)
	}
	var buf bytes.Buffer
	info, err := c.Backup(ctx, &buf)
	if err != nil || info.Bytes == 0 || int64(buf.Len()) != info.Bytes || len(info.Actor) != 32 || !bytes.HasPrefix(buf.Bytes(), []byte("SQLite format 3\x00")) {
		t.Fatalf("backup: %+v %v", info, err)
	}
	wrong, _ := client.New(base, "nope")
	var ce *client.Error
	if _, err := wrong.Backup(ctx, &buf); !errors.As(err, &ce) || ce.Status != 401 {
		t.Fatalf("backup with a wrong token: %v", err)
	}
}

// Parameters keep their type and value over the wire: a float32 is a REAL
// (docs/api.md: a REAL keeps its decimal point), and an unsigned integer
// too large for INTEGER is refused rather than bound as another number.
func TestClientParameterTypes(t *testing.T) {
	base := startAgent(t, "")
	c := mustClient(t, base, "")
	ctx := context.Background()
	typeOf := func(v any) ([]any, error) {
		rows, err := c.Query(ctx, client.Statement{Query: "SELECT typeof(?1), ?1", Params: []any{v}})
		if err != nil {
			return nil, err
		}
		defer rows.Close()
		if !rows.Next() {
			t.Fatalf("no row: %v", rows.Err())
		}
		return rows.Row(), nil
	}
	if r, err := typeOf(float32(2)); err != nil || r[0] != "real" || r[1] != 2.0 {
		t.Errorf("float32(2) bound as %#v (%v), want a REAL 2", r, err)
	}
	if r, err := typeOf(uint64(math.MaxUint64)); err == nil {
		t.Errorf("uint64 %d bound as %#v: another number", uint64(math.MaxUint64), r)
	}
}
