package devcluster_test

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/devcluster"
)

func schemaDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "schemas", "regional")
}

// TestRegionOverHTTP: three in-process agents; a write through one
// agent's API shows up in another's update stream and query results.
func TestRegionOverHTTP(t *testing.T) {
	ctx := context.Background()
	r, err := devcluster.StartRegion(ctx, devcluster.RegionOptions{Nodes: 3, Dir: t.TempDir(), SchemaPaths: []string{schemaDir()}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	}()
	follow, err := r.Nodes[2].Client().Updates(ctx, "machines")
	if err != nil {
		t.Fatal(err)
	}
	defer follow.Close()
	got := make(chan string, 1)
	go func() {
		for follow.Next() {
			n := follow.Notify()
			got <- n.Kind + " " + n.PK[0].(string)
		}
	}()
	res, err := r.Nodes[0].Client().Transact(ctx, client.Statement{Query: "INSERT INTO machines (id, app) VALUES (?, ?)", Params: []any{"m1", "web"}})
	if err != nil || res.Version == nil {
		t.Fatalf("write: %v %+v", err, res)
	}
	select {
	case s := <-got:
		if s != "update m1" {
			t.Fatalf("notified %q", s)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the write never reached the third agent")
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rows, err := r.Nodes[1].Client().Query(ctx, client.Statement{Query: "SELECT app FROM machines WHERE id = 'm1'"})
		if err != nil {
			t.Fatal(err)
		}
		found := rows.Next() && rows.Row()[0] == "web"
		rows.Close()
		if found {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the write never reached the second agent")
		}
		time.Sleep(20 * time.Millisecond)
	}
	members, err := r.Nodes[1].Client().Members(ctx)
	if err != nil || len(members) != 3 {
		t.Fatalf("members: %v %v", members, err)
	}
}
