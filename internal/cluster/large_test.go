package cluster_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/patina-db/patina/internal/cluster"
	"github.com/patina-db/patina/internal/store"
	wirev1 "github.com/patina-db/patina/proto/patina/wire/v1"
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
	// 9,000 rows of about 1,000 bytes: one version of about 9 MB.
	insert := store.Statement{SQL: `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 9000)
		INSERT INTO machines (id, app, host, image) SELECT printf('m%06d', i), 'big', 'h1', printf('%01000d', i) FROM n`}
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
	if _, err := c.nodes[1].st.Transact(ctx, []store.Statement{{SQL: `DELETE FROM machines WHERE id < 'm007000'`}}); err != nil {
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
		if n != 2001 {
			t.Errorf("%s: %d machines, want 2001", tn.name, n)
		}
	}
}

// rawSync runs one sync exchange with a member as a peer of the given
// hello would, asking for everything, and returns the changesets it got.
func rawSync(t *testing.T, c *testCluster, tn *testNode, parts bool) []*wirev1.Changeset {
	t.Helper()
	tlsConf := c.rawTLS("raw")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, tn.node.QUICAddr(), tlsConf, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	frame := func(m proto.Message) []byte {
		data, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return append(binary.AppendUvarint(nil, uint64(len(data))), data...)
	}
	hs, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	hs.Write(frame(&wirev1.Hello{Cluster: c.name, Name: "raw", Actor: bytes.Repeat([]byte{9}, 16), BroadcastStream: true, VersionParts: parts}))
	r := bufio.NewReader(hs)
	n, err := binary.ReadUvarint(r)
	if err != nil {
		t.Fatal(err)
	}
	io.CopyN(io.Discard, r, int64(n))
	st, err := conn.OpenStreamSync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st.Write(append([]byte{'S'}, frame(&wirev1.SyncState{VersionParts: parts})...))
	st.Close()
	var got []*wirev1.Changeset
	r = bufio.NewReader(st)
	for {
		n, err := binary.ReadUvarint(r)
		if err != nil {
			t.Fatal(err)
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(r, data); err != nil {
			t.Fatal(err)
		}
		var chunk wirev1.SyncChunk
		if err := proto.Unmarshal(data, &chunk); err != nil {
			t.Fatal(err)
		}
		got = append(got, chunk.GetChangesets()...)
		if chunk.GetDone() {
			return got
		}
	}
}

// TestEarlierMembersGetNoParts: a member of an earlier release, which
// would take a part for the whole version, is served no parts by sync
// (nor sent any by broadcast); the versions that fit one message it
// gets. A member that joins parts gets the large version in parts.
func TestEarlierMembersGetNoParts(t *testing.T) {
	c := newTestCluster(t, 1, nil)
	ctx := context.Background()
	big := store.Statement{SQL: `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
		INSERT INTO machines (id, image) SELECT printf('m%06d', i), printf('%01000d', i) FROM n`}
	small := func(id string) store.Statement {
		return store.Statement{SQL: `INSERT INTO machines (id) VALUES (?)`, Args: []any{id}}
	}
	for _, st := range []store.Statement{small("s1"), big, small("s2")} {
		if _, err := c.nodes[0].st.Transact(ctx, []store.Statement{st}); err != nil {
			t.Fatal(err)
		}
	}
	old := rawSync(t, c, c.nodes[0], false)
	var versions []uint64
	for _, w := range old {
		if w.GetParts() > 1 {
			t.Fatalf("an earlier member got part %d of %d of version %d", w.GetPart(), w.GetParts(), w.GetVersion())
		}
		versions = append(versions, w.GetVersion())
	}
	if len(versions) != 2 || versions[0]+versions[1] != 4 {
		t.Fatalf("an earlier member got versions %v, want 1 and 3", versions)
	}
	cur := rawSync(t, c, c.nodes[0], true)
	parts := 0
	for _, w := range cur {
		if w.GetVersion() == 2 {
			parts++
			if w.GetParts() < 2 {
				t.Fatalf("version 2 whole in one message of %d bytes", proto.Size(w))
			}
		}
	}
	if parts < 2 || len(cur) != parts+2 {
		t.Fatalf("got %d changesets, %d of them parts of version 2", len(cur), parts)
	}
}

// TestLargeVersionsThroughLoss: every member writes large versions and
// small ones while a third of the broadcasts are dropped; sync brings
// the large versions that broadcast lost, in parts, and all converge.
func TestLargeVersionsThroughLoss(t *testing.T) {
	if os.Getenv("PATINA_LONG") == "" {
		t.Skip("long: set PATINA_LONG=1")
	}
	c := newTestCluster(t, 3, nil)
	c.waitMembers(3)
	c.faults.DropBroadcasts(0.3)
	var wg sync.WaitGroup
	for i, tn := range c.nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range 3 {
				big := store.Statement{SQL: `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 5000)
					INSERT INTO machines (id, app, image) SELECT printf('%s-%d-%06d', ?1, ?2, i), ?1, printf('%01000d', i) FROM n`, Args: []any{tn.name, k}}
				if _, err := tn.st.Transact(context.Background(), []store.Statement{big}); err != nil {
					t.Error(err)
					return
				}
				writeRandomly(t, tn, uint64(i*10+k), 20)
			}
		}()
	}
	wg.Wait()
	c.waitConverged(5 * time.Minute)
}
