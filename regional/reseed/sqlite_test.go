package reseed_test

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/mattn/go-sqlite3"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/regional/reseed"
)

const clusterExtraSchema = `
CREATE TABLE apps (
    name     TEXT NOT NULL PRIMARY KEY,
    owner    TEXT,
    machines INTEGER NOT NULL DEFAULT 0,
    weight   REAL,
    logo     BLOB,
    created  TEXT,
    note     TEXT NOT NULL DEFAULT 'from the cluster'
);
CREATE TABLE app_owners (
    app   TEXT NOT NULL,
    owner TEXT NOT NULL,
    since INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app, owner)
);
CREATE TABLE thin (name TEXT NOT NULL PRIMARY KEY);
CREATE TABLE keyed (a TEXT NOT NULL, b TEXT NOT NULL, PRIMARY KEY (a, b));
`

const sourceSchema = `
CREATE TABLE apps (name TEXT PRIMARY KEY, owner TEXT, machines INTEGER, weight REAL, logo BLOB, created DATETIME);
CREATE TABLE app_owners (app TEXT NOT NULL, owner TEXT NOT NULL, since INTEGER, PRIMARY KEY (app, owner)) WITHOUT ROWID;
CREATE TABLE extra (id INTEGER PRIMARY KEY);
CREATE TABLE thin (name TEXT PRIMARY KEY, color TEXT, size INTEGER);
CREATE TABLE keyed (a TEXT PRIMARY KEY, b TEXT);
CREATE TABLE nokey (a TEXT, b TEXT);
`

// TestReseedSQLiteTable copies named tables of a SQLite database into
// the cluster's tables of the same names — a rowid table and a WITHOUT
// ROWID one with a two-column key, values of every type — and refuses
// tables that cannot be copied, naming what is missing.
func TestReseedSQLiteTable(t *testing.T) {
	inDir(t)
	dir := t.TempDir()
	schema := filepath.Join(dir, "extra.sql")
	if err := os.WriteFile(schema, []byte(clusterExtraSchema), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startRegion(t, schema)

	srcPath := filepath.Join(dir, "source.db")
	src, err := sql.Open("sqlite3", srcPath)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := src.Exec(sourceSchema); err != nil {
		t.Fatal(err)
	}
	tx, _ := src.Begin()
	for i := 0; i < 3000; i++ {
		var owner, weight, logo any
		if i%7 != 0 {
			owner = fmt.Sprintf("team-%d", i%13)
		}
		if i%5 != 0 {
			weight = float64(i) / 4 // 0.25 steps; whole numbers stay REAL
		}
		if i%3 == 0 {
			logo = []byte{0, byte(i), 0xff, '"', '<'}
		}
		_, err := tx.Exec("INSERT INTO apps VALUES (?, ?, ?, ?, ?, ?)", fmt.Sprintf("app-%05d", i), owner, i, weight, logo, fmt.Sprintf("2024-01-%02d 10:00:00", i%28+1))
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 1000; i++ {
		if _, err := tx.Exec("INSERT INTO app_owners VALUES (?, ?, ?)", fmt.Sprintf("app-%d", i%97), fmt.Sprintf("owner-%d", i), i); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	// A stale row the reseed overwrites; note, which the source lacks,
	// keeps the cluster's value.
	_, err = r.Nodes[2].Client().Transact(context.Background(),
		client.Statement{Query: "INSERT INTO apps (name, owner, machines, note) VALUES ('app-00001', 'stale', -1, 'kept')"})
	if err != nil {
		t.Fatal(err)
	}

	sum, err := reseed.Run(context.Background(), reseed.Options{SQLite: srcPath, Table: "apps", APIs: apis(r), Ranges: 7, Batch: 128})
	t.Logf("apps:\n%s", sum)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != 3000 || sum.RangesDone != 7 {
		t.Fatalf("summary %+v: want 3000 rows in 7 ranges", sum)
	}
	appsQuery := "SELECT name, owner, typeof(owner), machines, weight, typeof(weight), hex(logo), typeof(logo), created || '', typeof(created) FROM apps ORDER BY name"
	sum, err = reseed.Run(context.Background(), reseed.Options{SQLite: srcPath, Table: "APP_OWNERS", APIs: apis(r), Ranges: 5, Batch: 64})
	t.Logf("app_owners:\n%s", sum)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != 1000 || sum.RangesDone != 5 {
		t.Fatalf("summary %+v: want 1000 rows in 5 ranges", sum)
	}
	ownersQuery := "SELECT app, owner, since FROM app_owners ORDER BY app, owner"
	waitTables(t, r,
		table{"SELECT count(*) FROM apps", appsQuery, 3000, sourceDigest(t, src, appsQuery)},
		table{"SELECT count(*) FROM app_owners", ownersQuery, 1000, sourceDigest(t, src, ownersQuery)})
	if n := count(t, r.Nodes[0].Client(), "SELECT count(*) FROM apps WHERE note = 'kept'"); n != 1 {
		t.Fatalf("%d rows kept the cluster's own column, want 1", n)
	}

	for _, c := range []struct{ table, want string }{
		{"nope", `has no table "nope"`},
		{"extra", `the cluster has no table "extra"`},
		{"thin", `table "thin" has no column color, size`},
		{"keyed", `does not take upserts on (a)`},
		{"nokey", "has no primary key"},
	} {
		_, err := reseed.Run(context.Background(), reseed.Options{SQLite: srcPath, Table: c.table, APIs: apis(r)})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("table %s: error %v: want it to say %q", c.table, err, c.want)
		}
	}
}

// sourceDigest hashes a query's rows in the source database.
func sourceDigest(t *testing.T, db *sql.DB, q string) string {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	var all [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		all = append(all, vals)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return digest(all)
}
