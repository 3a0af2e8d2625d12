package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/bench"
	"github.com/patina-db/patina/internal/devcluster"
	"github.com/patina-db/patina/internal/store"
)

// TestBackupRestoreUnderLoad runs a region of agent processes, writes
// 1,000 transactions a second through their APIs, takes `patina backup`
// from one of them meanwhile, checks the file with integrity_check, puts
// it in place with `patina restore` for a new agent, and waits until that
// agent holds exactly what the others hold.
func TestBackupRestoreUnderLoad(t *testing.T) {
	wd, _ := os.Getwd()
	dir := t.TempDir()
	ctx := context.Background()
	r, err := devcluster.StartRegion(ctx, devcluster.RegionOptions{
		Nodes: 3, Dir: filepath.Join(dir, "region"), Binary: patinaBin,
		SchemaPaths: []string{filepath.Join(wd, "..", "..", "schemas", "regional")}, SyncInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Stop()

	var targets atomic.Pointer[[]*client.Client]
	setTargets := func() {
		var cs []*client.Client
		for _, n := range r.Nodes {
			cs = append(cs, n.Client())
		}
		targets.Store(&cs)
	}
	setTargets()
	var committed atomic.Int64
	const rate, seconds = 1000, 4
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	type result struct {
		elapsed time.Duration
		err     error
	}
	loaded := make(chan result, 1)
	go func() {
		elapsed, err := bench.Pace(loadCtx, rate, rate*seconds, func(seq int, _ time.Time) error {
			cs := *targets.Load()
			_, err := cs[seq%len(cs)].Transact(loadCtx, client.Statement{
				Query:  `INSERT INTO machines (id, app, port) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET app = excluded.app, port = excluded.port`,
				Params: []any{fmt.Sprint("m", seq%3000), fmt.Sprint("app", seq%7), seq},
			})
			if err == nil {
				committed.Add(1)
			}
			return err
		})
		loaded <- result{elapsed, err}
	}()
	waitUntil(t, "writes under way", func() bool { return committed.Load() >= 1000 })

	out := filepath.Join(dir, "backup.db")
	before, began := committed.Load(), time.Now()
	if _, errOut, code := patina(t, r.Nodes[0].API, "backup", out); code != 0 {
		t.Fatalf("backup: %s", errOut)
	}
	during, took := committed.Load()-before, time.Since(began)
	t.Logf("backup taken in %s while %d transactions committed (%.0f/s)", took.Round(time.Millisecond), during, float64(during)/took.Seconds())
	// PRAGMA integrity_check, and the file is a patina database.
	if _, err := store.CheckFile(ctx, out); err != nil {
		t.Fatal(err)
	}

	restored, err := r.AddNode(func(n *devcluster.RegionNode) error {
		if _, errOut, code := patina(t, "", "restore", out, "--config", n.ConfigPath()); code != 0 {
			return fmt.Errorf("restore: %s", errOut)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "the restored agent serving", func() bool {
		_, err := restored.Client().Health(ctx, "")
		return err == nil
	})
	setTargets() // the restored agent takes writes too
	res := <-loaded
	if res.err != nil {
		t.Fatal(res.err)
	}
	t.Logf("%d transactions in %s: %.0f/s", committed.Load(), res.elapsed.Round(time.Millisecond), float64(committed.Load())/res.elapsed.Seconds())

	src, err := r.Nodes[0].Client().Transact(ctx, client.Statement{Query: "UPDATE machines SET port = port WHERE id = 'none'"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := restored.Client().Transact(ctx, client.Statement{Query: "UPDATE machines SET port = port WHERE id = 'none'"})
	if err != nil {
		t.Fatal(err)
	}
	if got.ActorID == src.ActorID {
		t.Fatalf("the restored agent kept the source's actor id %s", src.ActorID)
	}
	waitUntil(t, "every agent holding the same rows", func() bool {
		var first string
		for _, n := range r.Nodes {
			h, err := contentHash(ctx, n.Client())
			if err != nil {
				return false
			}
			if first == "" {
				first = h
			} else if h != first {
				return false
			}
		}
		health, err := restored.Client().Health(ctx, "gaps=0")
		return err == nil && health.Gaps == 0
	})
}

// contentHash digests every row of machines as an agent returns it.
func contentHash(ctx context.Context, c *client.Client) (string, error) {
	rows, err := c.Query(ctx, client.Statement{Query: "SELECT id, app, port FROM machines ORDER BY id"})
	if err != nil {
		return "", err
	}
	defer rows.Close()
	h := sha256.New()
	for rows.Next() {
		fmt.Fprintln(h, rows.Row()...)
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", strings.TrimSpace(what))
		}
		time.Sleep(50 * time.Millisecond)
	}
}
