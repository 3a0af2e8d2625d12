package subs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/api"
	"github.com/patina-db/patina/internal/devcluster"
)

const joinQuery = `SELECT m.id, m.state, c.status FROM machines m LEFT JOIN machine_checks c ON c.machine_id = m.id WHERE m.app = ?`

func schemaDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "schemas", "regional")
}

func startRegion(t *testing.T, nodes int, extra string) *devcluster.Region {
	t.Helper()
	var logs bytes.Buffer
	r, err := devcluster.StartRegion(context.Background(), devcluster.RegionOptions{
		Nodes: nodes, Dir: t.TempDir(), SchemaPaths: []string{schemaDir()}, SyncInterval: 200 * time.Millisecond, ExtraTOML: extra,
		Log: &lockedWriter{w: &logs},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("agent logs:\n%s", logs.String())
		}
	})
	return r
}

// replay is a client-side copy of a subscription's result, rebuilt from
// its events only.
type replay struct {
	rows map[int64]string
	seen int
}

func (rp *replay) apply(t *testing.T, ev client.SubEvent) {
	t.Helper()
	rp.seen++
	switch {
	case ev.Row != nil:
		rp.rows[ev.Row.RowID] = fmt.Sprint(ev.Row.Cells...)
	case ev.Change != nil:
		c := ev.Change
		_, exists := rp.rows[c.RowID]
		switch c.Kind {
		case "insert":
			if exists {
				t.Fatalf("change %d inserts rowid %d, which exists", c.ChangeID, c.RowID)
			}
			rp.rows[c.RowID] = fmt.Sprint(c.Cells...)
		case "update":
			if !exists {
				t.Fatalf("change %d updates unknown rowid %d", c.ChangeID, c.RowID)
			}
			rp.rows[c.RowID] = fmt.Sprint(c.Cells...)
		case "delete":
			if !exists {
				t.Fatalf("change %d deletes unknown rowid %d", c.ChangeID, c.RowID)
			}
			delete(rp.rows, c.RowID)
		}
	}
}

func (rp *replay) result() string {
	var out []string
	for _, r := range rp.rows {
		out = append(out, r)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

func queryResult(t *testing.T, c *client.Client, q string, args ...any) string {
	t.Helper()
	rows, err := c.Query(context.Background(), client.Statement{Query: q, Params: args})
	if err != nil {
		t.Fatalf("query: %v", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		out = append(out, fmt.Sprint(rows.Row()...))
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("query: %v", err)
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}

// pump forwards a subscription's events to a channel.
func pump(sub *client.Subscription) <-chan client.SubEvent {
	ch := make(chan client.SubEvent, 1024)
	go func() {
		defer close(ch)
		for sub.Next() {
			ch <- sub.Event()
		}
	}()
	return ch
}

// converge applies events until the replayed result equals the query's
// result on every node.
func converge(t *testing.T, r *devcluster.Region, rp *replay, events <-chan client.SubEvent, sub *client.Subscription) {
	t.Helper()
	deadline := time.After(60 * time.Second)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatalf("subscription ended: %v", sub.Err())
			}
			rp.apply(t, ev)
		case <-tick.C:
			want := queryResult(t, r.Nodes[1].Client(), joinQuery, "a")
			same := true
			for _, n := range r.Nodes {
				if n.Agent != nil && queryResult(t, n.Client(), joinQuery, "a") != want {
					same = false
				}
			}
			if same && rp.result() == want && len(events) == 0 {
				return
			}
		case <-deadline:
			t.Fatalf("the subscription never matched the query:\nreplayed:\n%s\nquery:\n%s", rp.result(), queryResult(t, r.Nodes[1].Client(), joinQuery, "a"))
		}
	}
}

// writeRandom makes n random writes to both tables of the join through
// one node: inserts, updates, deletes and re-inserts, across two apps.
func writeRandom(t *testing.T, c *client.Client, rng *rand.Rand, n int) {
	t.Helper()
	ids := []string{"m1", "m2", "m3", "m4", "m5"}
	for i := 0; i < n; i++ {
		id := ids[rng.Intn(len(ids))]
		var st client.Statement
		switch rng.Intn(5) {
		case 0:
			st = client.Statement{Query: `INSERT INTO machines (id, app, state) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET app = excluded.app, state = excluded.state`,
				Params: []any{id, []string{"a", "a", "b"}[rng.Intn(3)], []string{"started", "stopped"}[rng.Intn(2)]}}
		case 1:
			st = client.Statement{Query: `DELETE FROM machines WHERE id = ?`, Params: []any{id}}
		case 2:
			st = client.Statement{Query: `INSERT OR REPLACE INTO machine_checks (machine_id, name, status) VALUES (?, ?, ?)`,
				Params: []any{id, []string{"http", "tcp"}[rng.Intn(2)], []string{"passing", "critical"}[rng.Intn(2)]}}
		case 3:
			st = client.Statement{Query: `DELETE FROM machine_checks WHERE machine_id = ?`, Params: []any{id}}
		case 4:
			st = client.Statement{Query: `UPDATE machines SET state = ? WHERE id = ?`, Params: []any{[]string{"started", "stopped"}[rng.Intn(2)], id}}
		}
		if _, err := c.Transact(context.Background(), st); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
}

// TestSubscriptionAcrossCluster follows the join query on one node while
// another node writes; then resumes explicitly after a disconnect, and
// automatically across a restart of the subscribed node. Replaying the
// events must give exactly the query's result each time; the client
// checks that change ids are contiguous, so nothing is missed or repeated.
func TestSubscriptionAcrossCluster(t *testing.T) {
	r := startRegion(t, 3, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rng := rand.New(rand.NewSource(1))
	writer := r.Nodes[1].Client()
	writeRandom(t, writer, rng, 20)

	sub, err := r.Nodes[0].Client().Subscribe(ctx, client.Statement{Query: joinQuery, Params: []any{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	rp := &replay{rows: map[int64]string{}}
	events := pump(sub)
	writeRandom(t, writer, rng, 60)
	converge(t, r, rp, events, sub)
	if sub.LastChange() == 0 {
		t.Fatal("no changes were delivered")
	}

	// Disconnect, write, resume from the last change seen.
	sub.Close()
	for range events {
	}
	from, id := sub.LastChange(), sub.ID()
	writeRandom(t, writer, rng, 40)
	sub, err = r.Nodes[0].Client().Resume(ctx, id, from)
	if err != nil {
		t.Fatal(err)
	}
	events = pump(sub)
	writeRandom(t, writer, rng, 20)
	converge(t, r, rp, events, sub)

	// Restart the subscribed node while following: the subscription
	// survives, the client resumes by itself.
	if err := r.Nodes[0].Stop(); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, writer, rng, 40)
	if err := r.Nodes[0].Start(); err != nil {
		t.Fatal(err)
	}
	writeRandom(t, writer, rng, 20)
	converge(t, r, rp, events, sub)
	if sub.Reconnects() == 0 {
		t.Fatal("the client never reconnected across the restart")
	}
	if sub.ID() != id {
		t.Fatalf("subscription id changed across the restart: %s → %s", id, sub.ID())
	}
}

// TestSlowSubscriberCutOff: a client that stops reading is cut off once a
// write to it blocks longer than the stream write timeout, while the node
// keeps applying changes.
func TestSlowSubscriberCutOff(t *testing.T) {
	r := startRegion(t, 2, `stream_write_timeout = "300ms"`)
	body, _ := json.Marshal(api.Statement{Query: "SELECT id, image FROM machines"})
	req, _ := http.NewRequest(http.MethodPost, r.Nodes[0].API+"/v1/subscriptions", bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	id := resp.Header.Get(api.QueryIDHeader)
	sub := r.Nodes[0].Agent.Subscriptions().Get(id)
	if resp.StatusCode != http.StatusOK || sub == nil {
		t.Fatalf("subscribe: %s, id %q", resp.Status, id)
	}
	// Never read the body. Write far more than the socket buffers hold.
	image := strings.Repeat("x", 128<<10)
	const writes = 150
	writer := r.Nodes[1].Client()
	for i := 0; i < writes; i++ {
		if _, err := writer.Transact(context.Background(), client.Statement{Query: "INSERT INTO machines (id, image) VALUES (?, ?)", Params: []any{fmt.Sprintf("m%03d", i), image}}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(60 * time.Second)
	for sub.Listeners() != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the client that stopped reading was never cut off")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for queryResult(t, r.Nodes[0].Client(), "SELECT count(*) FROM machines") != fmt.Sprint(writes) {
		if time.Now().After(deadline) {
			t.Fatal("the subscribed node stopped applying changes")
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The stream ends: what was buffered, then EOF or a reset.
	_, _ = io.Copy(io.Discard, resp.Body)
	for sub.Last() < writes {
		if time.Now().After(deadline) {
			t.Fatalf("the subscription recorded %d changes, want %d", sub.Last(), writes)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
