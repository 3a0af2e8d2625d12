package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/cluster"
	"github.com/patina-db/patina/internal/store"
)

// TestLargeVersionsReplicate: a version whose encoding is larger than
// one message may be (a host forgotten with its tens of thousands of
// machines, a bulk import) reaches the other members by broadcast, and
// a member that was down when it was written gets it by sync. Both carry
// it in parts that the receiver puts back together.
func TestLargeVersionsReplicate(t *testing.T) {
	// n1 does not sync after its first round: what it gets, it gets by
	// broadcast.
	c := newTestCluster(t, 3, func(cfg *cluster.Config) {
		if cfg.Name == "n1" {
			cfg.SyncInterval = time.Hour
		}
	})
	c.waitMembers(3)
	late := c.nodes[2]
	c.kill(late)
	ctx := context.Background()
	// 24,000 rows of about 400 bytes: one version of about 10 MB.
	insert := store.Statement{SQL: `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 24000)
		INSERT INTO machines (id, app, host, image) SELECT printf('m%06d', i), 'big', 'h1', printf('%0400d', i) FROM n`}
	if _, err := c.nodes[0].st.Transact(ctx, []store.Statement{insert}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "the large version on n1 by broadcast", func() bool {
		return c.nodes[1].st.Knows(c.nodes[0].st.Actor(), 1)
	})
	if got := c.nodes[1].node.Stats.Received.Load(); got != 1 {
		t.Fatalf("n1 received %d versions by broadcast, want 1", got)
	}
	// Its deletion, a large version too, written on the other member.
	if _, err := c.nodes[1].st.Transact(ctx, []store.Statement{{SQL: `DELETE FROM machines WHERE id < 'm020000'`}}); err != nil {
		t.Fatal(err)
	}
	c.start(late)
	c.waitConverged(90 * time.Second)
	for _, tn := range c.live() {
		rows, err := tn.st.Query(ctx, store.Statement{SQL: `SELECT count(*) FROM machines`})
		if err != nil {
			t.Fatal(err)
		}
		var n int64
		rows.Next()
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		rows.Close()
		if n != 4001 {
			t.Errorf("%s: %d machines, want 4001", tn.name, n)
		}
	}
}
