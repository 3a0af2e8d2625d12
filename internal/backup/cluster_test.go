package backup_test

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"github.com/patina-db/patina/internal/backup"
	"github.com/patina-db/patina/internal/devcluster"
	"github.com/patina-db/patina/internal/store"
)

// load writes to a region at a paced rate from many writers, spreading
// the transactions over the nodes it is given. It writes through each
// in-process agent's store, as its API would, so that the machine can
// sustain the rate with the race detector on; the transactions replicate
// like any others.
type load struct {
	t       *testing.T
	mu      sync.Mutex
	targets []*store.Store
	done    atomic.Int64
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	start   time.Time
}

// startLoad offers a transaction every 1/rate seconds to writers
// goroutines; a tick that finds every writer busy is dropped, so the rate
// is a ceiling the machine may not reach.
func startLoad(t *testing.T, rate, writers int, nodes ...*devcluster.RegionNode) *load {
	ctx, cancel := context.WithCancel(context.Background())
	l := &load{t: t, cancel: cancel, start: time.Now()}
	for _, n := range nodes {
		l.add(n)
	}
	tokens := make(chan int64)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		defer close(tokens)
		// Every 5 ms, offer what the rate owes since the start; a token
		// that finds every writer busy is dropped.
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		for i := int64(0); ; {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				for owed := int64(now.Sub(start).Seconds() * float64(rate)); i < owed; i++ {
					select {
					case tokens <- i:
					default:
					}
				}
			}
		}
	}()
	for w := 0; w < writers; w++ {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for i := range tokens {
				l.mu.Lock()
				st := l.targets[int(i)%len(l.targets)]
				l.mu.Unlock()
				_, err := st.Transact(ctx, []store.Statement{{
					SQL:  `INSERT INTO machines (id, app, port) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET app = excluded.app, port = excluded.port`,
					Args: []any{fmt.Sprint("m", i%2000), fmt.Sprint("app", i%7), i},
				}})
				if err != nil {
					if ctx.Err() == nil {
						t.Errorf("write %d: %v", i, err)
					}
					continue
				}
				l.done.Add(1)
			}
		}()
	}
	return l
}

func (l *load) add(n *devcluster.RegionNode) {
	l.mu.Lock()
	l.targets = append(l.targets, n.Agent.Store())
	l.mu.Unlock()
}

// waitWrites waits until n more transactions than now have committed.
func (l *load) waitWrites(n int64) {
	l.t.Helper()
	want := l.done.Load() + n
	waitFor(l.t, 30*time.Second, fmt.Sprintf("%d transactions", want), func() bool { return l.done.Load() >= want })
}

func (l *load) stop() {
	l.cancel()
	l.wg.Wait()
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestBackupUnderLoadRestoresIntoANodeThatCatchesUp: a backup taken
// while transactions are offered at 1k a second (in-process agents reach
// what the machine sustains; TestBackupRestoreUnderLoad in cmd/patina
// drives agent processes at the full rate) is intact, and a node restored
// from it joins under its own actor id and catches up with the cluster,
// including the source's versions written after the snapshot.
func TestBackupUnderLoadRestoresIntoANodeThatCatchesUp(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	r, err := devcluster.StartRegion(ctx, devcluster.RegionOptions{Nodes: 3, Dir: filepath.Join(dir, "region"), SchemaPaths: []string{schemaDir()}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	}()
	// Some bulk first, so that taking the snapshot takes a while.
	for i := 0; i < 10; i++ {
		if _, err := r.Nodes[0].Agent.Store().Transact(ctx, []store.Statement{{SQL: `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000)
INSERT INTO machines (id, app, image) SELECT 'seed-' || ? || '-' || i, 'seed', hex(randomblob(200)) FROM n`, Args: []any{i}}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range r.Nodes {
		st := n.Agent.Store()
		waitFor(t, 60*time.Second, n.Name+" holding the bulk rows", func() bool {
			rows, err := st.Query(ctx, store.Statement{SQL: "SELECT count(*) FROM machines"})
			if err != nil {
				return false
			}
			defer rows.Close()
			if !rows.Next() {
				return false
			}
			v, err := rows.Values()
			return err == nil && v[0] == int64(10000)
		})
	}
	l := startLoad(t, 1000, 32, r.Nodes...)
	defer l.stop()
	l.waitWrites(300)

	source := r.Nodes[0]
	out := filepath.Join(dir, "backup.db")
	before, began := l.done.Load(), time.Now()
	fetched, err := backup.Fetch(ctx, source.Client(), out)
	if err != nil {
		t.Fatal(err)
	}
	during, took := l.done.Load()-before, time.Since(began)
	t.Logf("backup of %d bytes in %s while %d transactions committed (%.0f/s)", fetched.Bytes, took.Round(time.Millisecond), during, float64(during)/took.Seconds())
	if during == 0 {
		t.Fatal("no write committed while the backup was taken")
	}
	db, err := sql.Open("sqlite3", "file:"+out+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	var check string
	if err := db.QueryRow(`PRAGMA integrity_check`).Scan(&check); err != nil || check != "ok" {
		t.Fatalf("integrity_check: %q %v", check, err)
	}
	// The source's last version in the snapshot (site 0 is the node itself).
	var snapHead uint64
	if err := db.QueryRow(`SELECT max("end") FROM __patina_bookkeeping WHERE actor = 0 AND cleared = 0`).Scan(&snapHead); err != nil {
		t.Fatal(err)
	}
	db.Close()

	restored, err := r.AddNode(func(n *devcluster.RegionNode) error {
		_, err := backup.Restore(ctx, out, n.DBPath, backup.RestoreOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.WaitMembers(ctx, 4, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	l.add(restored)
	l.waitWrites(500)
	l.stop()
	elapsed := time.Since(l.start)
	t.Logf("%d transactions in %s: %.0f/s", l.done.Load(), elapsed.Round(time.Millisecond), float64(l.done.Load())/elapsed.Seconds())

	src, got := source.Agent.Store(), restored.Agent.Store()
	if got.Actor() == src.Actor() {
		t.Fatal("the restored node kept the source's actor id")
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		same := true
		var states []string
		first := ""
		for _, n := range r.Nodes {
			st := n.Agent.Store()
			d, err := st.Digest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if first == "" {
				first = d
			}
			same = same && d == first && st.Gaps() == 0
			states = append(states, fmt.Sprintf("%s %s gaps %d", n.Name, d[:12], st.Gaps()))
		}
		if same {
			break
		}
		if time.Now().After(deadline) {
			// Say what the lagging nodes miss, and whose.
			for _, n := range r.Nodes {
				book := n.Agent.Store().Bookkeeping()
				for _, a := range book.Actors() {
					if g := book.Gaps(a); len(g) > 0 {
						t.Logf("%s misses %v of %s (head %d; source %s, restored %s)", n.Name, g, a, book.Head(a), src.Actor(), got.Actor())
					}
				}
				t.Logf("%s cluster stats: %v", n.Name, n.Agent.Node().Stats.Snapshot())
			}
			t.Fatalf("the nodes did not converge: %v", states)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if src.Head() <= snapHead {
		t.Fatalf("the source wrote nothing after its snapshot (head %d)", snapHead)
	}
	if h := got.Bookkeeping().Head(src.Actor()); h != src.Head() {
		t.Fatalf("the restored node knows %d versions of the source, which wrote %d (snapshot at %d)", h, src.Head(), snapHead)
	}
	if src.Bookkeeping().Head(got.Actor()) == 0 {
		t.Fatal("the restored node's own writes did not reach the source")
	}
}
