package api_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/patina-db/patina/internal/api"
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
	code, raw = f.do("POST", "/v1/transactions/stream", `["INSERT INTO machines (id) VALUES ('m1')"]`, "Authorization", "Bearer tok")
	if code != 200 || !strings.Contains(raw, `"status":200`) {
		t.Fatalf("%d %s", code, raw)
	}
}
