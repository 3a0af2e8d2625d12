package agent_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/api"
	"github.com/patina-db/patina/internal/store"
)

func TestConfigErrorsNameTheKey(t *testing.T) {
	_, err := agent.ParseConfig("[db]\npath = \"x.db\"\nschema_path = [\"a\"]\n", "agent.toml")
	if err == nil || !strings.Contains(err.Error(), "unknown key db.schema_path") {
		t.Fatalf("unknown key: %v", err)
	}
	_, err = agent.ParseConfig("[api]\naddr = \"127.0.0.1:0\"\n", "agent.toml")
	if err == nil || !strings.Contains(err.Error(), "db.path is required") {
		t.Fatalf("missing path: %v", err)
	}
	_, err = agent.ParseConfig("[db]\npath = \"x.db\"\n[log]\nlevel = \"loud\"\n", "agent.toml")
	if err == nil || !strings.Contains(err.Error(), `log.level "loud"`) {
		t.Fatalf("bad level: %v", err)
	}
	_, err = agent.ParseConfig("[db]\npath = \"x.db\"\n[runtime]\ngc_percent = 5\n", "agent.toml")
	if err == nil || !strings.Contains(err.Error(), "runtime.gc_percent is 5") {
		t.Fatalf("bad gc_percent: %v", err)
	}
	_, err = agent.ParseConfig("[db]\npath = \"data/x.db\"\n[subscriptions]\npath = \"./data/../data/x.db\"\n", "agent.toml")
	if err == nil || !strings.Contains(err.Error(), "is the database itself") {
		t.Fatalf("subscriptions in the database: %v", err)
	}
	cfg, err := agent.ParseConfig("[db]\npath = \"x.db\"\n", "agent.toml")
	if err != nil || cfg.API.Addr != "127.0.0.1:8080" || cfg.API.MaxBodyBytes != 8<<20 || cfg.Runtime.GCPercent != 400 || !cfg.Runtime.SysmonBatch {
		t.Fatalf("defaults: %+v %v", cfg, err)
	}
}

func startAgent(t *testing.T) (*agent.Agent, string, context.CancelFunc, chan error) {
	t.Helper()
	dir := t.TempDir()
	wd, _ := os.Getwd()
	cfg, err := agent.ParseConfig(`
[db]
path = "`+filepath.Join(dir, "patina.db")+`"
schema_paths = ["`+filepath.Join(wd, "..", "..", "schemas", "regional")+`"]
[api]
addr = "127.0.0.1:0"
shutdown_timeout = "30s"
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
	t.Cleanup(func() { cancel(); <-done })
	return a, "http://" + a.APIAddr(), cancel, done
}

func post(t *testing.T, url, body string) *http.Response {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestGracefulShutdown: a query in flight when the agent is told to stop
// runs to its end, then the database closes cleanly (its WAL checkpointed
// and removed).
func TestGracefulShutdown(t *testing.T) {
	a, base, cancel, done := startAgent(t)
	resp := post(t, base+"/v1/transactions", `["INSERT INTO machines (id) VALUES ('m1')"]`)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("write: %d", resp.StatusCode)
	}
	const n = 200_000
	resp = post(t, base+"/v1/queries", `"WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c WHERE i < 200000) SELECT i, printf('%050d', i) FROM c"`)
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	if !sc.Scan() || !strings.HasPrefix(sc.Text(), `{"columns"`) {
		t.Fatalf("stream did not start: %q", sc.Text())
	}
	cancel() // SIGINT/SIGTERM cancel this context in cmd/patina
	rows, eoq := 0, false
	for sc.Scan() {
		var ev api.QueryEvent
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if ev.Row != nil {
			rows++
		}
		eoq = eoq || ev.EOQ != nil
	}
	if rows != n || !eoq {
		t.Fatalf("in-flight query got %d rows (eoq %v), want all %d", rows, eoq, n)
	}
	select {
	case err := <-done:
		done <- err // for the cleanup
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("agent did not stop")
	}
	if _, err := os.Stat(a.Store().Path() + "-wal"); !os.IsNotExist(err) {
		t.Fatalf("WAL still present after shutdown (%v): the database was not closed cleanly", err)
	}
	// New connections are refused once stopped.
	if _, err := http.Get(base + "/v1/health"); err == nil {
		t.Fatal("agent still accepting connections after shutdown")
	}
}

// TestSQLiteCLIReadsWhileRunning: the data file is plain SQLite in WAL
// mode; another process can read it while the agent writes.
func TestSQLiteCLIReadsWhileRunning(t *testing.T) {
	a, base, _, _ := startAgent(t)
	for i := 0; i < 3; i++ {
		resp := post(t, base+"/v1/transactions", `[["INSERT INTO machines (id, app) VALUES (?, 'web')", ["m`+string(rune('0'+i))+`"]]]`)
		resp.Body.Close()
	}
	out, err := exec.Command("sqlite3", a.Store().Path(), "select count(*) from machines").CombinedOutput()
	if err != nil {
		t.Fatalf("sqlite3: %v: %s", err, out)
	}
	if strings.TrimSpace(string(out)) != "3" {
		t.Fatalf("sqlite3 counted %q, want 3", out)
	}
	// And the agent keeps writing while the CLI holds the file open.
	resp := post(t, base+"/v1/transactions", `["INSERT INTO machines (id) VALUES ('m9')"]`)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("write after CLI read: %d", resp.StatusCode)
	}
}

// TestValuesNoMessageCarriesAreRefused: a write making a cell larger
// than one message between agents carries gets 400 and changes nothing;
// a megabyte is taken.
func TestValuesNoMessageCarriesAreRefused(t *testing.T) {
	a := startConfigured(t, "[api]\naddr = \"127.0.0.1:0\"\n", agent.Options{})
	c, err := client.New("http://"+a.APIAddr(), "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, err = c.Transact(ctx, client.Statement{Query: "INSERT INTO machines (id, image) VALUES ('big', zeroblob(5 * 1024 * 1024))"})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != http.StatusBadRequest || !strings.Contains(err.Error(), "too big") {
		t.Fatalf("a 5 MiB cell: %v, want 400 saying it is too big", err)
	}
	if _, err := c.Transact(ctx, client.Statement{Query: "INSERT INTO machines (id, image) VALUES ('fits', zeroblob(1024 * 1024))"}); err != nil {
		t.Fatal(err)
	}
	rows, err := a.Store().Query(ctx, store.Statement{SQL: "SELECT group_concat(id) FROM machines"})
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var ids string
	if !rows.Next() || rows.Scan(&ids) != nil || ids != "fits" {
		t.Fatalf("machines %q, want only the one that fits", ids)
	}
}
