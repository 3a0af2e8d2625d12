package client_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/patina-db/patina/client"
)

func TestTxStreamManyWriters(t *testing.T) {
	base := startAgent(t, "tok")
	ctx := context.Background()
	c, err := client.New(base, "tok")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := mustClient(t, base, "wrong").OpenTxStream(ctx); err == nil {
		t.Fatal("a stream opened with the wrong token")
	}
	st, err := c.OpenTxStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var last uint64
			for i := 0; i < each; i++ {
				res, err := st.Transact(ctx, client.Statement{Query: "INSERT INTO machines (id, app) VALUES (?, 'stream')", Params: []any{fmt.Sprintf("w%d-%d", w, i)}})
				if err != nil {
					errs <- err
					return
				}
				// One writer's transactions commit in the order it sent them.
				if res.Version == nil || *res.Version <= last {
					errs <- fmt.Errorf("writer %d, write %d: version %v after %d", w, i, res.Version, last)
					return
				}
				last = *res.Version
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	// A client's mistake is its transaction's error; the stream goes on.
	_, err = st.Transact(ctx, client.Statement{Query: "INSERT INTO nosuch (id) VALUES (1)"})
	var ce *client.Error
	if !errors.As(err, &ce) || ce.Status != 400 {
		t.Fatalf("bad statement: %v", err)
	}
	if _, err := st.Transact(ctx, client.Statement{Query: "INSERT INTO machines (id, app) VALUES ('last', 'stream')"}); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if _, err := st.Transact(ctx, client.Statement{Query: "INSERT INTO machines (id) VALUES ('after')"}); !errors.Is(err, client.ErrStreamClosed) {
		t.Fatalf("transact after close: %v", err)
	}
	if n := countApp(t, c, "stream"); n != writers*each+1 {
		t.Fatalf("%d rows, want %d", n, writers*each+1)
	}
}

// A stream whose agent goes away fails what waits on it and what comes
// after, instead of hanging.
func TestTxStreamAgentGoesAway(t *testing.T) {
	base, stop := runAgent(t, "")
	ctx := context.Background()
	st, err := mustClient(t, base, "").OpenTxStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Transact(ctx, client.Statement{Query: "INSERT INTO machines (id) VALUES ('m1')"}); err != nil {
		t.Fatal(err)
	}
	stop()
	deadline, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	for {
		_, err := st.Transact(deadline, client.Statement{Query: "INSERT INTO machines (id) VALUES ('m2')"})
		if errors.Is(err, context.DeadlineExceeded) {
			t.Fatal("a transaction on a stream whose agent stopped waited out its deadline")
		}
		if err != nil {
			break
		}
	}
	if err := st.Close(); err == nil {
		t.Fatal("closing a broken stream reported no error")
	}
}

func mustClient(t *testing.T, base, token string) *client.Client {
	t.Helper()
	c, err := client.New(base, token)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func countApp(t *testing.T, c *client.Client, app string) int64 {
	t.Helper()
	rows, err := c.Query(context.Background(), client.Statement{Query: "SELECT count(*) FROM machines WHERE app = ?", Params: []any{app}})
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	if !rows.Next() {
		t.Fatalf("count: %v", rows.Err())
	}
	n, _ := rows.Row()[0].(int64)
	return n
}

// A Transact called with a context that has already ended sends nothing:
// it returns the context's error, and its transaction does not commit.
func TestTxStreamEndedContextSendsNothing(t *testing.T) {
	base := startAgent(t, "")
	c := mustClient(t, base, "")
	st, err := c.OpenTxStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := st.Transact(ctx, client.Statement{Query: "INSERT INTO machines (id, app) VALUES ('late', 'canceled')"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("transact with a canceled context: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if n := countApp(t, c, "canceled"); n != 0 {
		t.Fatalf("a transaction whose Transact was called with a canceled context committed (%d rows)", n)
	}
}
