package host

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/devcluster"
)

func schemaDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "schemas", "regional")
}

// startRegion starts a regional cluster of n real agents.
func startRegion(t testing.TB, n int) *devcluster.Region {
	t.Helper()
	r, err := devcluster.StartRegion(context.Background(), devcluster.RegionOptions{Nodes: n, Dir: t.TempDir(), SchemaPaths: []string{schemaDir()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	})
	return r
}

// syncBuffer is a log sink tests read while the host writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testHost is a running host and what stops it.
type testHost struct {
	*Host
	cfg    Config
	log    *syncBuffer
	cancel context.CancelFunc
	done   chan error
}

// hostConfig is a host configuration for tests, publishing to agents.
// The full re-publish runs only when a test asks; tests change the rest
// in place.
func hostConfig(t testing.TB, db string, agents []string) Config {
	t.Helper()
	var quoted []string
	for _, a := range agents {
		quoted = append(quoted, fmt.Sprintf("%q", a))
	}
	text := fmt.Sprintf(`[host]
name = "h1"
region = "ams"
db = %q
[agent]
api = [%s]
republish_interval = "1h"
[api]
addr = "127.0.0.1:0"
[log]
level = "debug"
`, db, strings.Join(quoted, ", "))
	cfg, err := ParseConfig(text, "test")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// startHost runs a host until the test ends (or stop is called).
func startHost(t testing.TB, cfg Config) *testHost {
	t.Helper()
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	h, err := New(ctx, cfg, logger)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	th := &testHost{Host: h, cfg: cfg, log: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { th.done <- h.Run(ctx) }()
	t.Cleanup(th.stop)
	return th
}

// stop stops the host and waits for it; a second call does nothing.
func (th *testHost) stop() {
	if th.cancel == nil {
		return
	}
	th.cancel()
	th.cancel = nil
	select {
	case err := <-th.done:
		if err != nil {
			panic(fmt.Sprintf("host run: %v", err))
		}
	case <-time.After(30 * time.Second):
		panic("host did not stop")
	}
}

func (th *testHost) client(t testing.TB) *Client {
	t.Helper()
	c, err := NewClient("http://"+th.APIAddr(), th.cfg.API.Token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// waitFor polls cond until it holds, failing with what was not reached.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not reached within 30s: %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

// rows runs a query on an agent and returns its rows as strings joined
// by '|', or nil with the error.
func rows(ctx context.Context, c *client.Client, q string, args ...any) ([]string, error) {
	rs, err := c.Query(ctx, client.Statement{Query: q, Params: args})
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var cells []string
		for _, v := range rs.Row() {
			cells = append(cells, fmt.Sprint(v))
		}
		out = append(out, strings.Join(cells, "|"))
	}
	return out, rs.Err()
}

// agentHas waits until the query's rows on the agent are exactly want.
func agentHas(t testing.TB, c *client.Client, want []string, q string, args ...any) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := rows(context.Background(), c, q, args...)
		if err == nil && strings.Join(got, "\n") == strings.Join(want, "\n") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent rows of %q not %q within 30s: last %q, %v", q, want, got, err)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
