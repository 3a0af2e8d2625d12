package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/api"
	"github.com/patina-db/patina/internal/store"
)

// A stream answers every line in the order sent, with the status a
// request of its own would have had; a bad line does not end it, and the
// body limit applies to each transaction, not to the stream.
func TestTransactionStreamAnswersInOrder(t *testing.T) {
	f := newFixture(t, api.Options{MaxBodyBytes: 2048})
	var body strings.Builder
	type want struct {
		status  int
		version bool // a version expected
		errHas  string
	}
	var wants []want
	line := func(s string, w want) {
		body.WriteString(s + "\n")
		wants = append(wants, w)
	}
	line(`[["INSERT INTO machines (id, app) VALUES (?, ?)", ["m1", "a"]]]`, want{200, true, ""})
	line(`not json`, want{400, false, "not a JSON array of statements"})
	body.WriteString("\n   \n") // blank lines are skipped
	line(`[]`, want{400, false, "no statements"})
	line(`["INSERT INTO nosuch (id) VALUES (1)"]`, want{400, false, "nosuch"})
	line(`["SELECT '`+strings.Repeat("x", 3000)+`'"]`, want{413, false, "larger than 2048 bytes"})
	line(`["UPDATE machines SET app = 'b' WHERE id = 'm1'"]`, want{200, true, ""})
	// More than the body limit in all: 60 transactions of about 100 bytes.
	for i := 0; i < 60; i++ {
		line(fmt.Sprintf(`[["INSERT INTO machines (id, app) VALUES (?, 'bulk')", ["bulk-%03d"]]]`, i), want{200, true, ""})
	}
	resp, err := http.Post(f.srv.URL+"/v1/transactions/stream", "application/x-ndjson", strings.NewReader(body.String()))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	// Transactions commit in the order sent: their versions never go
	// down (transactions committed together share one).
	sc := bufio.NewScanner(resp.Body)
	n := 0
	var last uint64
	for sc.Scan() {
		if n >= len(wants) {
			t.Fatalf("answer %d to no transaction: %s", n, sc.Text())
		}
		var got api.TxStreamResult
		if err := json.Unmarshal(sc.Bytes(), &got); err != nil {
			t.Fatalf("answer %d: %v: %s", n, err, sc.Text())
		}
		w := wants[n]
		var gotVersion uint64
		if got.Version != nil {
			gotVersion = *got.Version
		}
		var errs []string
		for _, r := range got.Results {
			errs = append(errs, r.Error)
		}
		if w.version && gotVersion < last {
			t.Fatalf("answer %d: version %d after %d", n, gotVersion, last)
		}
		if w.version {
			last = gotVersion
		}
		if got.Status != w.status || (gotVersion != 0) != w.version || !strings.Contains(strings.Join(errs, "|"), w.errHas) || got.ActorID != f.st.Actor().String() {
			t.Fatalf("answer %d: %s, want status %d, a version %v, an error with %q", n, sc.Text(), w.status, w.version, w.errHas)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if n != len(wants) {
		t.Fatalf("%d answers, want %d", n, len(wants))
	}
	if got := f.st.Head(); got != last {
		t.Fatalf("head %d after the stream, last answer's version %d", got, last)
	}
	// The update was sent after the insert.
	if n := f.count(`machines WHERE id = 'm1' AND app = 'b'`); n != 1 {
		t.Fatalf("m1 updated: %d rows", n)
	}
	if n := f.count(`machines WHERE app = 'bulk'`); n != 60 {
		t.Fatalf("bulk rows: %d", n)
	}
}

func TestTransactionStreamNeedsTheToken(t *testing.T) {
	f := newFixture(t, api.Options{BearerToken: "tok"})
	code, raw := f.do("POST", "/v1/transactions/stream", `["INSERT INTO machines (id) VALUES ('m1')"]`)
	if code != http.StatusUnauthorized || !strings.Contains(raw, "bearer token") {
		t.Fatalf("%d %s", code, raw)
	}
	// Refused while the client is still sending: the answer carries its
	// length, so the client has all of it without waiting for the
	// server to finish with the request.
	pr, pw := io.Pipe()
	defer pw.Close()
	go fmt.Fprintln(pw, `["INSERT INTO machines (id) VALUES ('m0')"]`)
	resp, err := http.Post(f.srv.URL+"/v1/transactions/stream", "application/x-ndjson", pr)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized || resp.ContentLength != int64(len(data)) || err != nil || !strings.Contains(string(data), "bearer token") {
		t.Fatalf("refusal of an open stream: %d, length %d, %q %v", resp.StatusCode, resp.ContentLength, data, err)
	}
	code, raw = f.do("POST", "/v1/transactions/stream", `["INSERT INTO machines (id) VALUES ('m1')"]`, "Authorization", "Bearer tok")
	if code != 200 || !strings.Contains(raw, `"status":200`) {
		t.Fatalf("%d %s", code, raw)
	}
}

// streamServer is an API server that ends its streams on shutdown, as the
// agent's does.
func streamServer(t *testing.T) (*httptest.Server, *store.Store) {
	t.Helper()
	st := regionalStore(t)
	h := api.NewServer(st, api.Options{})
	srv := httptest.NewUnstartedServer(h)
	srv.Config.RegisterOnShutdown(h.CloseStreams)
	srv.Start()
	t.Cleanup(func() { srv.Close(); st.Close() })
	return srv, st
}

// Shutdown ends every stream once what it had read is answered: one that
// waits for its client, one whose writers keep its window full, and one
// whose client sent far more than the window before reading.
func TestTransactionStreamEndsOnShutdown(t *testing.T) {
	for _, load := range []string{"idle", "busy", "sent ahead"} {
		t.Run(load, func(t *testing.T) {
			srv, db := streamServer(t)
			ctx := context.Background()
			var done func()
			switch load {
			case "idle", "busy":
				c, err := client.New(srv.URL, "")
				if err != nil {
					t.Fatal(err)
				}
				st, err := c.OpenTxStream(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := st.Transact(ctx, client.Statement{Query: "INSERT INTO machines (id) VALUES ('first')"}); err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				var committed atomic.Int64
				committed.Add(1)
				if load == "busy" {
					for w := 0; w < 200; w++ {
						wg.Add(1)
						go func() {
							defer wg.Done()
							for i := 0; ; i++ {
								if _, err := st.Transact(ctx, client.Statement{Query: "INSERT INTO machines (id) VALUES (?)", Params: []any{fmt.Sprintf("w%d-%d", w, i)}}); err != nil {
									return
								}
								committed.Add(1)
							}
						}()
					}
				}
				// A transaction the stream did not answer did not commit.
				done = func() {
					wg.Wait()
					st.Close()
					if n := countMachines(t, db); n != committed.Load() {
						t.Fatalf("%d rows committed, %d answered as committed", n, committed.Load())
					}
				}
			case "sent ahead":
				var body strings.Builder
				for i := 0; i < 100_000; i++ {
					fmt.Fprintf(&body, `[["INSERT INTO machines (id) VALUES ('p%d')"]]`+"\n", i)
				}
				// Every transaction read is answered before the stream
				// ends: as many committed as were answered 200, and the
				// rest, if any, were not run (503).
				answered := make(chan error, 1)
				var ok200 int
				go func() {
					resp, err := http.Post(srv.URL+"/v1/transactions/stream", "application/x-ndjson", strings.NewReader(body.String()))
					if err != nil {
						answered <- err
						return
					}
					defer resp.Body.Close()
					dec := json.NewDecoder(resp.Body)
					for {
						var a api.TxStreamResult
						if err := dec.Decode(&a); err == io.EOF {
							answered <- nil
							return
						} else if err != nil {
							answered <- err
							return
						}
						switch a.Status {
						case 200:
							ok200++
						case 503:
						default:
							answered <- fmt.Errorf("answer %+v", a)
							return
						}
					}
				}()
				done = func() {
					if err := <-answered; err != nil {
						t.Fatalf("stream cut short: %v", err)
					}
					if n := countMachines(t, db); n != int64(ok200) {
						t.Fatalf("%d rows committed, %d answered as committed", n, ok200)
					}
				}
			}
			// Let the stream get going, then shut down with a deadline far
			// longer than answering a window's worth takes.
			for deadline := time.Now().Add(20 * time.Second); load != "idle" && db.Head() < 2; {
				if time.Now().After(deadline) {
					t.Fatal("no transaction of the stream committed")
				}
				time.Sleep(10 * time.Millisecond)
			}
			sctx, cancel := context.WithTimeout(ctx, 20*time.Second)
			defer cancel()
			if err := srv.Config.Shutdown(sctx); err != nil {
				t.Fatalf("shutdown with a %s stream: %v", load, err)
			}
			done()
		})
	}
}

func countMachines(t *testing.T, db *store.Store) int64 {
	t.Helper()
	rows, err := db.Query(context.Background(), store.Statement{SQL: "SELECT count(*) FROM machines"})
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var n int64
	if !rows.Next() {
		t.Fatalf("count: %v", rows.Err())
	}
	if err := rows.Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestTransactionStreamClosesCleanlyAfterIdling: a stream whose last
// answer is older than the write timeout still ends cleanly: the deadline
// set for that answer does not cut off the response's last chunk.
func TestTransactionStreamClosesCleanlyAfterIdling(t *testing.T) {
	st := regionalStore(t)
	srv := httptest.NewServer(api.NewServer(st, api.Options{StreamWriteTimeout: 100 * time.Millisecond}))
	t.Cleanup(func() { srv.Close(); st.Close() })
	c, err := client.New(srv.URL, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	ts, err := c.OpenTxStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.Transact(ctx, client.Statement{Query: "INSERT INTO machines (id) VALUES ('idle')"}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the stream sits idle past the write timeout
	if err := ts.Close(); err != nil {
		t.Fatalf("close after idling: %v", err)
	}
}

// A line exactly max_body_bytes long is not longer than the limit: the
// stream takes it, as /v1/transactions takes a body of that length.
func TestTransactionStreamLineAtTheLimit(t *testing.T) {
	const limit = 2048
	f := newFixture(t, api.Options{MaxBodyBytes: limit})
	prefix, suffix := `["SELECT '`, `'"]`
	tx := prefix + strings.Repeat("x", limit-len(prefix)-len(suffix)) + suffix
	if len(tx) != limit {
		t.Fatalf("length %d", len(tx))
	}
	if code, raw := f.do("POST", "/v1/transactions", tx); code != http.StatusOK {
		t.Fatalf("/v1/transactions: %d %s", code, raw)
	}
	code, raw := f.do("POST", "/v1/transactions/stream", tx+"\n")
	var got api.TxStreamResult
	if err := json.Unmarshal([]byte(raw), &got); code != 200 || err != nil {
		t.Fatalf("stream: %d %s %v", code, raw, err)
	}
	if got.Status != http.StatusOK {
		t.Fatalf("a transaction of %d bytes on a stream limited to %d: %s", len(tx), limit, raw)
	}
}
