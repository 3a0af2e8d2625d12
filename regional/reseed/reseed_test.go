package reseed_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/bench"
	"github.com/patina-db/patina/regional"
	"github.com/patina-db/patina/regional/reseed"
)

// TestReseedBBoltConverges reseeds machine records from hosts' bbolt
// files into a region whose rows are stale (a machine with old values, a
// check the record no longer has) and waits until every agent holds
// exactly the sources' rows.
func TestReseedBBoltConverges(t *testing.T) {
	machines := 20_000 // with one check each: 40,000 rows, quick under -race
	if os.Getenv("PATINA_LONG") != "" {
		machines = 1_000_000
	}
	inDir(t)
	r := startRegion(t)
	o := bench.HostFilesOptions{Dir: t.TempDir(), Hosts: 8, Machines: machines, Checks: 1}
	files, err := bench.WriteHostFiles(o)
	if err != nil {
		t.Fatal(err)
	}
	ms := generated(o)
	// Stale rows the reseed must correct: another app for machine 0, and
	// a check it no longer has.
	_, err = r.Nodes[1].Client().Transact(context.Background(),
		client.Statement{Query: "INSERT INTO machines (id, app, host) VALUES (?, 'stale', 'old-host')", Params: []any{ms[0].ID}},
		client.Statement{Query: "INSERT INTO machine_checks (machine_id, name, status) VALUES (?, 'gone', 'critical')", Params: []any{ms[0].ID}},
		// A host that publishes has its row, which the reseed leaves be.
		// Its stamp stands still here, so its interval is longer than the
		// test: with 30 s, the agents would rightly forget it, and its
		// machines, five minutes into a slow run.
		client.Statement{Query: "INSERT INTO hosts (name, region, seen_at, republish_ms) VALUES ('host-0', 'ams', 12345, 3600000)"})
	if err != nil {
		t.Fatal(err)
	}

	var rec recorder
	before := time.Now().UnixMilli()
	sum, err := reseed.Run(context.Background(), reseed.Options{
		BBolt: files, APIs: apis(r), Ranges: 16, Parallel: 4, OnEvent: rec.record,
	})
	t.Logf("summary:\n%s", sum)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Rows != int64(machines) || sum.RangesDone != 16 || sum.RangesFailed != 0 || sum.RangesSkipped != 0 || sum.Corrupt != 0 {
		t.Fatalf("summary %+v: want %d rows in 16 ranges done", sum, machines)
	}
	if sum.StatePath != "" {
		t.Fatalf("state file %s kept after a complete run", sum.StatePath)
	}
	if left, _ := filepath.Glob("reseed-*.json*"); len(left) > 0 {
		t.Fatalf("state files left: %v", left)
	}
	// The ranges were spread over the agents.
	used := map[string]bool{}
	for _, ev := range rec.events() {
		if ev.Kind == reseed.BatchWritten {
			used[ev.API] = true
		}
	}
	if len(used) != 3 {
		t.Fatalf("batches went to %d agents, want 3: %v", len(used), used)
	}
	after := time.Now().UnixMilli()
	wantM, wantC := expectedTables(ms)
	waitTables(t, r, machinesTable(int64(machines), wantM), checksTable(int64(machines), wantC))
	// Every other host got a row stamped during the run, without an
	// interval: one that never publishes is forgotten like any other.
	var want [][]any
	for h := range o.Hosts {
		want = append(want, []any{fmt.Sprintf("host-%d", h), int64(1)})
	}
	hosts := fmt.Sprintf("SELECT name, CASE WHEN name = 'host-0' THEN seen_at = 12345 AND republish_ms = 3600000 ELSE seen_at BETWEEN %d AND %d AND republish_ms = 0 END FROM hosts ORDER BY name", before, after)
	waitTables(t, r, table{"SELECT count(*) FROM hosts", hosts, int64(o.Hosts), digest(want)})
}

// failingProxy forwards to an agent, but answers 500 to the first
// failures transactions whose body holds id.
type failingProxy struct {
	proxy    *httputil.ReverseProxy
	id       string
	mu       sync.Mutex
	failures int
	failed   int
}

func (p *failingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	if r.URL.Path == "/v1/transactions" && bytes.Contains(body, []byte(`"`+p.id+`"`)) {
		p.mu.Lock()
		fail := p.failed < p.failures
		if fail {
			p.failed++
		}
		p.mu.Unlock()
		if fail {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusInternalServerError)
			w.Write([]byte(`{"results":[{"error":"injected failure"}],"version":null,"actor_id":""}`))
			return
		}
	}
	p.proxy.ServeHTTP(w, r)
}

// TestReseedRetriesAFailingRange: the agent (through a proxy) fails the
// first two transactions of one range; the range is retried and
// completes, and the other ranges go on meanwhile: with one worker, they
// all finish between the range's first failure and its completion.
func TestReseedRetriesAFailingRange(t *testing.T) {
	inDir(t)
	r := startRegion(t)
	o := bench.HostFilesOptions{Dir: t.TempDir(), Hosts: 3, Machines: 2000, Checks: 1}
	files, err := bench.WriteHostFiles(o)
	if err != nil {
		t.Fatal(err)
	}
	ms := generated(o)
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	slices.Sort(ids)
	target, _ := url.Parse(r.Nodes[0].API)
	fp := &failingProxy{proxy: httputil.NewSingleHostReverseProxy(target), id: ids[0], failures: 2}
	srv := httptest.NewServer(fp)
	defer srv.Close()

	var rec recorder
	sum, err := reseed.Run(context.Background(), reseed.Options{
		BBolt: files, APIs: []string{srv.URL}, Ranges: 8, Parallel: 1, Batch: 100,
		RetryBase: 20 * time.Millisecond, RetryMax: 50 * time.Millisecond, MaxAttempts: 3, OnEvent: rec.record,
	})
	t.Logf("summary:\n%s", sum)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Retries != 2 || sum.RangesDone != 8 || sum.RangesFailed != 0 || sum.Rows != 2000 {
		t.Fatalf("summary %+v: want 2 retries, 8 ranges done, 2000 rows", sum)
	}
	var order []string
	firstFailure, doneAt := -1, -1
	othersDone := 0
	for i, ev := range rec.events() {
		if ev.Kind == reseed.RangeRetry || ev.Kind == reseed.RangeDone {
			order = append(order, ev.Kind.String()+" "+string(rune('0'+ev.Range)))
		}
		switch {
		case ev.Kind == reseed.RangeRetry && ev.Range == 0 && firstFailure < 0:
			firstFailure = i
			if ev.Err == nil || !strings.Contains(ev.Err.Error(), "HTTP 500") {
				t.Fatalf("retry event's error %v: want the agent's 500", ev.Err)
			}
		case ev.Kind == reseed.RangeDone && ev.Range == 0:
			doneAt = i
		case ev.Kind == reseed.RangeDone && firstFailure >= 0 && doneAt < 0:
			othersDone++
		}
	}
	if firstFailure < 0 || doneAt < 0 || othersDone != 7 {
		t.Fatalf("events %v: want range 0 to fail, the 7 others to finish, then range 0", order)
	}
	wantM, wantC := expectedTables(ms)
	waitTables(t, r, machinesTable(2000, wantM), checksTable(2000, wantC))
}

// TestReseedGivesUpARangeAndFailsOver: with one agent address dead,
// every range fails over to a live one and completes; a range whose
// batch the agent refuses every time gives up after its attempts while
// the others complete, and the run fails naming it.
func TestReseedGivesUpARangeAndFailsOver(t *testing.T) {
	inDir(t)
	r := startRegion(t)
	o := bench.HostFilesOptions{Dir: t.TempDir(), Hosts: 2, Machines: 1000}
	files, err := bench.WriteHostFiles(o)
	if err != nil {
		t.Fatal(err)
	}
	ms := generated(o)
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	slices.Sort(ids)
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close() // nothing listens there any more
	target, _ := url.Parse(r.Nodes[1].API)
	fp := &failingProxy{proxy: httputil.NewSingleHostReverseProxy(target), id: ids[len(ids)-1], failures: 1000}
	srv := httptest.NewServer(fp)
	defer srv.Close()

	sum, err := reseed.Run(context.Background(), reseed.Options{
		BBolt: files, APIs: []string{dead.URL, srv.URL}, Ranges: 4, Parallel: 2,
		RetryBase: time.Millisecond, RetryMax: 5 * time.Millisecond, MaxAttempts: 4,
	})
	t.Logf("summary:\n%s", sum)
	if err == nil || !strings.Contains(err.Error(), "1 of 4 ranges failed") || !strings.Contains(err.Error(), "range 3") {
		t.Fatalf("error %v: want range 3 named as failed", err)
	}
	if sum.RangesDone != 3 || sum.RangesFailed != 1 || len(sum.Failures) != 1 || sum.Failures[0].Range != 3 || sum.Failures[0].Attempts != 4 {
		t.Fatalf("summary %+v: want 3 done, range 3 failed after 4 attempts", sum)
	}
	// Ranges 0 and 2 started on the dead address and failed over.
	if sum.Retries < 2 {
		t.Fatalf("retries %d: want the dead agent's failures retried", sum.Retries)
	}
	// The state file keeps the three finished ranges for a re-run.
	var st struct{ Done []int }
	data, err := os.ReadFile(sum.StatePath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &st); err != nil || !slices.Equal(st.Done, []int{0, 1, 2}) {
		t.Fatalf("state file %s: %s (%v): want ranges 0-2 done", sum.StatePath, data, err)
	}
}

// TestReseedResumesAfterInterrupt cancels a run after three ranges
// finished; the state file records them, and a second run skips them and
// completes the rest.
func TestReseedResumesAfterInterrupt(t *testing.T) {
	dir := inDir(t)
	r := startRegion(t)
	o := bench.HostFilesOptions{Dir: t.TempDir(), Hosts: 4, Machines: 5000, Checks: 2}
	files, err := bench.WriteHostFiles(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rec := recorder{}
	done := 0
	rec.on = func(ev reseed.Event) {
		if ev.Kind == reseed.RangeDone {
			if done++; done == 3 {
				cancel()
			}
		}
	}
	opts := reseed.Options{BBolt: files, APIs: apis(r), Ranges: 10, Parallel: 1, Batch: 200}
	opts.OnEvent = rec.record
	sum, err := reseed.Run(ctx, opts)
	t.Logf("interrupted:\n%s", sum)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v: want the cancellation", err)
	}
	if sum.RangesDone != 3 || sum.StatePath == "" {
		t.Fatalf("summary %+v: want 3 ranges done and the state kept", sum)
	}
	if filepath.Dir(mustAbs(t, sum.StatePath)) != mustAbs(t, dir) {
		t.Fatalf("state file %s: want it in the current directory %s", sum.StatePath, dir)
	}
	var st struct{ Done []int }
	data, _ := os.ReadFile(sum.StatePath)
	if err := json.Unmarshal(data, &st); err != nil || len(st.Done) != 3 {
		t.Fatalf("state file %s: %s: want 3 ranges recorded", sum.StatePath, data)
	}

	rec2 := recorder{}
	opts.OnEvent = rec2.record
	sum2, err := reseed.Run(context.Background(), opts)
	t.Logf("resumed:\n%s", sum2)
	if err != nil {
		t.Fatal(err)
	}
	if sum2.RangesSkipped != 3 || sum2.RangesDone != 7 || sum2.StatePath != "" {
		t.Fatalf("summary %+v: want 3 skipped, 7 done, the state removed", sum2)
	}
	for _, ev := range rec2.events() {
		if ev.Kind == reseed.RangeStarted && slices.Contains(st.Done, ev.Range) {
			t.Fatalf("range %d was finished before but started again", ev.Range)
		}
	}
	ms := generated(o)
	wantM, wantC := expectedTables(ms)
	waitTables(t, r, machinesTable(5000, wantM), checksTable(10000, wantC))
}

func mustAbs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	a, err = filepath.Abs(a)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestReseedSkipsCorruptRecords: records that do not decode are skipped,
// logged and counted; an id in two files keeps its newest record, unless
// that is another host's tombstone; a destroyed machine's rows are
// deleted, but not another host's.
func TestReseedSkipsCorruptRecords(t *testing.T) {
	inDir(t)
	r := startRegion(t)
	o := bench.HostFilesOptions{Dir: t.TempDir(), Hosts: 2, Machines: 300, Checks: 1}
	files, err := bench.WriteHostFiles(o)
	if err != nil {
		t.Fatal(err)
	}
	ms := generated(o)
	// Machine 1 is also on host 0's file (it lives on host 1), newer and
	// stopped; machine 2 was destroyed (its rows exist in the cluster).
	newer := ms[1]
	newer.State, newer.UpdatedAt = regional.StateStopped, newer.UpdatedAt+1
	destroyed := ms[2]
	destroyed.State = regional.StateDestroyed
	_, err = r.Nodes[0].Client().Transact(context.Background(), regional.Publish(&ms[2])...)
	if err != nil {
		t.Fatal(err)
	}
	wrongID := ms[3]
	wrongID.ID = "other-id"
	// Machine 5 moved from host 0 to host 1: host 0's tombstone is newer
	// than host 1's live record, and says only that host 0 has it no
	// more. Machine "elsewhere" moved from host 0 to a host whose file is
	// not reseeded: host 0's tombstone leaves that host's row be.
	movedOut := ms[5]
	movedOut.Host, movedOut.State, movedOut.UpdatedAt = "host-0", regional.StateDestroyed, movedOut.UpdatedAt+1
	elsewhere := regional.Machine{V: regional.RecordVersion, ID: "elsewhere", App: "web", Region: ms[0].Region, Host: "host-9",
		Address: "127.0.0.1", Port: 9000, State: regional.StateStarted, UpdatedAt: 1}
	if _, err := r.Nodes[0].Client().Transact(context.Background(), regional.Publish(&elsewhere)...); err != nil {
		t.Fatal(err)
	}
	elsewhereGone := elsewhere
	elsewhereGone.Host, elsewhereGone.State, elsewhereGone.UpdatedAt = "host-0", regional.StateDestroyed, 2
	put := map[string][]byte{
		"zz-not-json": []byte("{not json"),
		"aa-wrong-id": mustJSON(t, wrongID),
		"mm-future":   []byte(`{"v":2,"id":"mm-future"}`),
		newer.ID:      mustEncode(t, &newer),
		destroyed.ID:  mustEncode(t, &destroyed),
		movedOut.ID:   mustEncode(t, &movedOut),
		"elsewhere":   mustEncode(t, &elsewhereGone),
	}
	db, err := bolt.Open(files[0], 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for k, v := range put {
			if err := tx.Bucket(regional.BucketMachines).Put([]byte(k), v); err != nil {
				return err
			}
		}
		return nil
	})
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	sum, err := reseed.Run(context.Background(), reseed.Options{BBolt: files, APIs: apis(r), Ranges: 4})
	t.Logf("summary:\n%s", sum)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Corrupt != 3 || sum.Duplicates != 2 || sum.Rows != 301 {
		t.Fatalf("summary %+v: want 3 corrupt, 2 duplicates, 301 rows", sum)
	}
	ms[1], ms[2] = newer, destroyed
	wantM, wantC := expectedTables(append(ms, elsewhere))
	waitTables(t, r, machinesTable(300, wantM), checksTable(299, wantC))
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustEncode(t *testing.T, m *regional.Machine) []byte {
	t.Helper()
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReseedRefusesBadSources: sources and options that cannot work are
// refused before anything is written, with an error naming the problem.
func TestReseedRefusesBadSources(t *testing.T) {
	inDir(t)
	dir := t.TempDir()
	cases := []struct {
		name string
		opts reseed.Options
		want string
	}{
		{"no source", reseed.Options{APIs: []string{"http://127.0.0.1:1"}}, "no source"},
		{"no api", reseed.Options{BBolt: []string{"x.db"}}, "no agent API address"},
		{"both", reseed.Options{BBolt: []string{"x.db"}, SQLite: "y.db", Table: "t", APIs: []string{"http://127.0.0.1:1"}}, "not both"},
		{"no table", reseed.Options{SQLite: "y.db", APIs: []string{"http://127.0.0.1:1"}}, "needs --table"},
		{"missing file", reseed.Options{BBolt: []string{filepath.Join(dir, "missing.db")}, APIs: []string{"http://127.0.0.1:1"}}, "missing.db"},
		{"bad api", reseed.Options{BBolt: []string{"x.db"}, APIs: []string{"127.0.0.1:1"}}, "want http://host:port"},
		{"bad batch", reseed.Options{BBolt: []string{"x.db"}, APIs: []string{"http://127.0.0.1:1"}, Batch: -1}, "batch -1"},
	}
	for _, c := range cases {
		_, err := reseed.Run(context.Background(), c.opts)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v: want it to say %q", c.name, err, c.want)
		}
	}
	// A bbolt file that is not a host's.
	path := filepath.Join(dir, "empty.db")
	db, err := bolt.Open(path, 0o644, nil)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = reseed.Run(context.Background(), reseed.Options{BBolt: []string{path}, APIs: []string{"http://127.0.0.1:1"}})
	if err == nil || !strings.Contains(err.Error(), `no bucket "machines"`) {
		t.Errorf("file without the bucket: error %v", err)
	}
}
