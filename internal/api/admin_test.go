package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/api"
	"github.com/patina-db/patina/internal/store"
)

// status sends a request and returns its status once the headers arrive,
// without waiting for a streaming body to end.
func status(t *testing.T, url, method string, header ...string) int {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(`["SELECT 1"]`))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusUnauthorized {
		var e api.ErrorResponse
		if resp.Header.Get("WWW-Authenticate") == "" || json.NewDecoder(resp.Body).Decode(&e) != nil || e.Error == "" {
			t.Fatalf("%s %s: a 401 without WWW-Authenticate or JSON error", method, url)
		}
	}
	return resp.StatusCode
}

// TestEveryRouteChecksItsToken walks every route the server registers,
// so a route added later without a stated access level cannot slip by.
func TestEveryRouteChecksItsToken(t *testing.T) {
	const bearer, admin = "b-s3cret", "a-s3cret"
	type want struct{ none, wrong, bearer, admin bool } // true: let through
	for _, c := range []struct {
		name            string
		opts            api.Options
		open, data, adm want
	}{
		{"no tokens", api.Options{},
			want{true, true, true, true}, want{true, true, true, true}, want{true, true, true, true}},
		{"bearer only", api.Options{BearerToken: bearer},
			want{true, true, true, true}, want{false, false, true, false}, want{false, false, true, false}},
		{"admin only", api.Options{AdminToken: admin},
			want{true, true, true, true}, want{true, true, true, true}, want{false, false, false, true}},
		{"both", api.Options{BearerToken: bearer, AdminToken: admin},
			want{true, true, true, true}, want{false, false, true, false}, want{false, false, false, true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, err := store.Open(context.Background(), store.Config{Path: filepath.Join(t.TempDir(), "p.db")})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if err := st.ApplySchemaSQL(context.Background(), `CREATE TABLE machines (id TEXT NOT NULL PRIMARY KEY)`); err != nil {
				t.Fatal(err)
			}
			server := api.NewServer(st, c.opts)
			srv := httptest.NewServer(server)
			defer srv.Close()
			seen := map[api.Access]bool{}
			for _, r := range server.Routes() {
				seen[r.Access] = true
				w := map[api.Access]want{api.Open: c.open, api.Data: c.data, api.Admin: c.adm}[r.Access]
				url := srv.URL + strings.ReplaceAll(r.Pattern, "{table}", "machines")
				for _, h := range []struct {
					name   string
					header []string
					pass   bool
				}{
					{"no token", nil, w.none},
					{"wrong token", []string{"Authorization", "Bearer nope"}, w.wrong},
					{"token without Bearer", []string{"Authorization", bearer}, w.wrong},
					{"bearer token", []string{"Authorization", "Bearer " + bearer}, w.bearer},
					{"admin token", []string{"Authorization", "Bearer " + admin}, w.admin},
				} {
					got := status(t, url, r.Method, h.header...)
					if (got != http.StatusUnauthorized) != h.pass {
						t.Errorf("%s %s (%s) with %s: %d", r.Method, r.Pattern, r.Access, h.name, got)
					}
				}
			}
			if !seen[api.Open] || !seen[api.Data] || !seen[api.Admin] {
				t.Fatalf("routes %v: want open, data and admin ones", server.Routes())
			}
		})
	}
}

func TestReloadAppliesTheSchemaFilesAdditively(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "schema.sql")
	write := func(text string) {
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(`CREATE TABLE apps (name TEXT NOT NULL PRIMARY KEY, owner TEXT);`)
	f := newFixture(t, api.Options{SchemaPaths: []string{dir}})
	reload := func() (int, string) { return f.do("POST", "/v1/admin/reload", "") }

	// The fixture starts from the regional schema, which the file lacks.
	if code, raw := reload(); code != 400 || !strings.Contains(raw, `table \"hosts\": the database has it and the schema files do not; dropping a table is refused`) {
		t.Fatalf("reload dropping tables: %d %s", code, raw)
	}
	if len(f.st.Schema().Tables) != 3 {
		t.Fatal("a refused reload changed the schema")
	}
	regional := f.st.Schema()
	var text strings.Builder
	for _, name := range regional.TableNames() {
		text.WriteString(regional.Tables[name].SQL + ";\n")
	}
	write(text.String() + `CREATE TABLE apps (name TEXT NOT NULL PRIMARY KEY, owner TEXT);`)
	code, raw := reload()
	var out api.ReloadResponse
	if code != 200 || json.Unmarshal([]byte(raw), &out) != nil || !out.Changed || strings.Join(out.Tables, ",") != "apps,hosts,machine_checks,machines" {
		t.Fatalf("reload adding a table: %d %s", code, raw)
	}
	write(text.String() + `CREATE TABLE apps (name TEXT NOT NULL PRIMARY KEY, owner TEXT, tier INTEGER NOT NULL DEFAULT 1);`)
	if code, raw := reload(); code != 200 || !strings.Contains(raw, `"changed":true`) {
		t.Fatalf("reload adding a column: %d %s", code, raw)
	}
	if code, raw := reload(); code != 200 || !strings.Contains(raw, `"changed":false`) {
		t.Fatalf("reload without a change: %d %s", code, raw)
	}
	// The new column is captured: a write to it is a version carrying it.
	code, res := f.exec(`["INSERT INTO apps (name, tier) VALUES ('web', 2)", "UPDATE apps SET tier = 3 WHERE name = 'web'"]`)
	if code != 200 || res.Version == nil {
		t.Fatalf("write to the new column: %d %+v", code, res)
	}
	cs, _, err := f.st.Changes(context.Background(), f.st.Actor(), *res.Version)
	if err != nil {
		t.Fatal(err)
	}
	var tier bool
	for _, c := range cs.Changes {
		tier = tier || (c.Column == "tier" && c.Value.Int == 3)
	}
	if !tier {
		t.Fatalf("version %d does not carry the new column: %+v", *res.Version, cs.Changes)
	}

	// Destructive edits: 400 naming the column, nothing applied.
	before := f.st.Schema()
	for edit, msg := range map[string]string{
		`CREATE TABLE apps (name TEXT NOT NULL PRIMARY KEY, tier INTEGER NOT NULL DEFAULT 1);`:                                                        `table \"apps\" column \"owner\": the database has it and the schema files do not; dropping or renaming a column is refused`,
		`CREATE TABLE apps (name TEXT NOT NULL PRIMARY KEY, owner INTEGER, tier INTEGER NOT NULL DEFAULT 1);`:                                         `column \"owner\": changing the type`,
		`CREATE TABLE apps (name TEXT NOT NULL PRIMARY KEY, owner TEXT, tier INTEGER NOT NULL DEFAULT 1, x TEXT, y TEXT); CREATE TABLE bad (a TEXT);`: `table \"bad\": a replicated table needs a PRIMARY KEY`,
	} {
		write(text.String() + edit)
		if code, raw := reload(); code != 400 || !strings.Contains(raw, msg) {
			t.Errorf("%s: %d %s, want 400 with %s", edit, code, raw, msg)
		}
		if f.st.Schema() != before || f.st.Schema().Tables["apps"].Column("x") != nil {
			t.Fatalf("%s: a refused reload changed the schema", edit)
		}
	}
	os.Remove(file)
	if code, raw := reload(); code != 400 || !strings.Contains(raw, "dropping a table is refused") {
		t.Fatalf("reload of an empty directory: %d %s", code, raw)
	}
	os.RemoveAll(dir)
	if code, raw := reload(); code != 500 || !strings.Contains(raw, "read schema files") {
		t.Fatalf("reload of a missing directory: %d %s", code, raw)
	}
}

func TestReloadWithoutSchemaFiles(t *testing.T) {
	f := newFixture(t, api.Options{})
	if code, raw := f.do("POST", "/v1/admin/reload", ""); code != 400 || !strings.Contains(raw, "db.schema_paths is empty") {
		t.Fatalf("%d %s", code, raw)
	}
}

func TestBackupStreamsACheckedSnapshot(t *testing.T) {
	f := newFixture(t, api.Options{})
	f.exec(`["INSERT INTO machines (id, app) VALUES ('m1', 'web')"]`)
	resp, err := http.Get(f.srv.URL + "/v1/admin/backup")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength <= 0 || resp.Header.Get(api.BackupActorHeader) != f.st.Actor().String() {
		t.Fatalf("%d length %d headers %v", resp.StatusCode, resp.ContentLength, resp.Header)
	}
	path := filepath.Join(t.TempDir(), "b.db")
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	out.Close()
	info, err := store.CheckFile(context.Background(), path)
	if err != nil || info.Actor != f.st.Actor() {
		t.Fatalf("%+v %v", info, err)
	}
}

// openVacuumCopies counts the backup copies of the database this process
// holds open.
func openVacuumCopies(t *testing.T) int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	n := 0
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err == nil && strings.Contains(target, ".patina-vacuum-") {
			n++
		}
	}
	return n
}

// TestBackupClientThatStopsReadingLetsGo: a backup whose client stops
// reading is cut off after the stream write timeout, as every stream is,
// and the copy of the database it holds open goes with it.
func TestBackupClientThatStopsReadingLetsGo(t *testing.T) {
	f := newFixture(t, api.Options{StreamWriteTimeout: 200 * time.Millisecond})
	for i := 0; i < 6; i++ { // about 28 MB: far more than socket buffers hold
		if _, err := f.st.Transact(context.Background(), []store.Statement{{
			SQL:  "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000) INSERT INTO machines (id, app) SELECT ? || i, hex(randomblob(1024)) FROM n",
			Args: []any{fmt.Sprintf("m%02d-", i)},
		}}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/v1/admin/backup", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.ContentLength < 16<<20 {
		t.Fatalf("backup: %d, %d bytes", resp.StatusCode, resp.ContentLength)
	}
	if _, err := resp.Body.Read(make([]byte, 1024)); err != nil {
		t.Fatal(err)
	}
	// The client reads no further, and keeps its connection.
	deadline := time.Now().Add(30 * time.Second)
	for openVacuumCopies(t) > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("30s after its client stopped reading, the backup still holds its %d-byte copy of the database", resp.ContentLength)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
