package cluster_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"google.golang.org/protobuf/proto"

	"github.com/patina-db/patina/internal/cluster"
	"github.com/patina-db/patina/internal/store"
	wirev1 "github.com/patina-db/patina/proto/patina/wire/v1"
	"github.com/patina-db/patina/schemas"
)

type testNode struct {
	name string
	path string
	st   *store.Store
	node *cluster.Node
}

type testCluster struct {
	t      *testing.T
	name   string
	ca     *cluster.CA
	faults *cluster.Faults
	nodes  []*testNode
	tweak  func(*cluster.Config)
	dir    string
	logger *slog.Logger
	schema string
}

func newTestCluster(t *testing.T, n int, tweak func(*cluster.Config)) *testCluster {
	t.Helper()
	ca, err := cluster.NewCA("test")
	if err != nil {
		t.Fatal(err)
	}
	c := &testCluster{t: t, name: "ams", ca: ca, faults: &cluster.Faults{}, tweak: tweak, dir: t.TempDir(),
		logger: slog.New(slog.NewTextHandler(io.Discard, nil)), schema: schemas.Regional()}
	for i := 0; i < n; i++ {
		c.add()
	}
	t.Cleanup(c.stop)
	return c
}

// add starts a new node that joins through the first one.
func (c *testCluster) add() *testNode {
	c.t.Helper()
	name := fmt.Sprintf("n%d", len(c.nodes))
	tn := &testNode{name: name, path: filepath.Join(c.dir, name+".db")}
	c.nodes = append(c.nodes, tn)
	c.start(tn)
	return tn
}

func (c *testCluster) start(tn *testNode) {
	c.t.Helper()
	ctx := context.Background()
	st, err := store.Open(ctx, store.Config{Path: tn.path})
	if err != nil {
		c.t.Fatal(err)
	}
	if err := st.ApplySchemaSQL(ctx, c.schema); err != nil {
		c.t.Fatal(err)
	}
	creds, err := cluster.DevCredentials(c.ca, tn.name)
	if err != nil {
		c.t.Fatal(err)
	}
	cfg := cluster.Config{Name: tn.name, Cluster: c.name, Region: "ams", GossipAddr: "127.0.0.1:0", QUICAddr: "127.0.0.1:0",
		Credentials: creds, Local: true, SyncInterval: 300 * time.Millisecond, RetryInterval: 200 * time.Millisecond}
	for _, other := range c.nodes {
		if other != tn && other.node != nil {
			cfg.Bootstrap = append(cfg.Bootstrap, other.node.GossipAddr())
		}
	}
	if c.tweak != nil {
		c.tweak(&cfg)
	}
	node, err := cluster.Start(ctx, cfg, st, c.faults, c.logger)
	if err != nil {
		c.t.Fatal(err)
	}
	st.SetHooks(store.Hooks{Committed: node.Committed})
	tn.st, tn.node = st, node
}

// kill stops a node, keeping its database.
func (c *testCluster) kill(tn *testNode) {
	tn.node.Close()
	tn.st.Close()
	tn.node, tn.st = nil, nil
}

func (c *testCluster) stop() {
	for _, tn := range c.nodes {
		if tn.node != nil {
			c.kill(tn)
		}
	}
}

func (c *testCluster) live() []*testNode {
	var out []*testNode
	for _, tn := range c.nodes {
		if tn.node != nil {
			out = append(out, tn)
		}
	}
	return out
}

// waitMembers waits until every live node sees want alive members.
func (c *testCluster) waitMembers(want int) {
	c.t.Helper()
	waitFor(c.t, 30*time.Second, fmt.Sprintf("%d alive members everywhere", want), func() bool {
		for _, tn := range c.live() {
			if alive, _, _ := tn.node.MemberStates(); alive != want {
				return false
			}
		}
		return true
	})
}

// waitConverged waits until every live node holds the same digest and
// no gaps.
func (c *testCluster) waitConverged(timeout time.Duration) {
	c.t.Helper()
	var last []string
	ok := poll(timeout, func() bool {
		last = last[:0]
		var first string
		same := true
		for i, tn := range c.live() {
			d, err := tn.st.Digest(context.Background())
			if err != nil {
				c.t.Fatal(err)
			}
			last = append(last, fmt.Sprintf("%s=%s gaps=%d", tn.name, d[:12], tn.st.Gaps()))
			if i == 0 {
				first = d
			}
			if d != first || tn.st.Gaps() != 0 {
				same = false
			}
		}
		return same
	})
	if !ok {
		c.t.Fatalf("no convergence within %s: %v", timeout, last)
	}
}

// rawTLS is the TLS configuration of a peer that speaks the wire
// protocol by hand, with a certificate from the cluster's CA.
func (c *testCluster) rawTLS(name string) *tls.Config {
	c.t.Helper()
	creds, err := cluster.DevCredentials(c.ca, name)
	if err != nil {
		c.t.Fatal(err)
	}
	pair, err := tls.X509KeyPair(creds.CertPEM, creds.KeyPEM)
	if err != nil {
		c.t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{pair}, InsecureSkipVerify: true, NextProtos: []string{"patina-wire/1"}, MinVersion: tls.VersionTLS13}
}

func poll(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	if !poll(timeout, cond) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// writeRandomly runs ops random transactions on a node against a few
// shared rows: inserts, updates, deletes and re-inserts.
func writeRandomly(t *testing.T, tn *testNode, seed uint64, ops int) {
	rnd := rand.New(rand.NewPCG(seed, 1))
	ctx := context.Background()
	for i := 0; i < ops; i++ {
		id := fmt.Sprintf("m%d", rnd.IntN(8))
		var q store.Statement
		switch rnd.IntN(4) {
		case 0, 1:
			q = store.Statement{SQL: `INSERT INTO machines (id, app, state, port) VALUES (?, ?, ?, ?)
				ON CONFLICT (id) DO UPDATE SET app = excluded.app, state = excluded.state, port = excluded.port`,
				Args: []any{id, fmt.Sprint("app", rnd.IntN(3)), []string{"started", "stopped"}[rnd.IntN(2)], int64(rnd.IntN(5))}}
		case 2:
			q = store.Statement{SQL: `UPDATE machines SET host = ? WHERE id = ?`, Args: []any{fmt.Sprint("h", rnd.IntN(4)), id}}
		default:
			q = store.Statement{SQL: `DELETE FROM machines WHERE id = ?`, Args: []any{id}}
		}
		if _, err := tn.st.Transact(ctx, []store.Statement{q}); err != nil {
			t.Errorf("%s: %v", tn.name, err)
			return
		}
	}
}

func writeEverywhere(t *testing.T, nodes []*testNode, ops int) {
	var wg sync.WaitGroup
	for i, tn := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			writeRandomly(t, tn, uint64(i)+uint64(time.Now().UnixNano()), ops)
		}()
	}
	wg.Wait()
}

func TestFiveNodesConverge(t *testing.T) {
	c := newTestCluster(t, 5, nil)
	c.waitMembers(5)
	// Members connect to every other before anything is written.
	waitFor(t, 30*time.Second, "every member to connect to every other", func() bool {
		for _, tn := range c.nodes {
			if tn.node.Connections() != 4 {
				return false
			}
		}
		return true
	})
	writeEverywhere(t, c.nodes, 200)
	c.waitConverged(60 * time.Second)
}

func TestConvergeWithBroadcastLoss(t *testing.T) {
	c := newTestCluster(t, 5, nil)
	c.waitMembers(5)
	c.faults.DropBroadcasts(0.3)
	writeEverywhere(t, c.nodes, 200)
	c.waitConverged(60 * time.Second)
	var failures uint64
	for _, tn := range c.nodes {
		failures += tn.node.Stats.BroadcastFailures.Load()
	}
	if failures == 0 {
		t.Fatal("no broadcast was dropped: the fault did not apply")
	}
}

func TestPartitionHeals(t *testing.T) {
	c := newTestCluster(t, 5, nil)
	c.waitMembers(5)
	c.faults.Partition([]string{"n0", "n1"}, []string{"n2", "n3", "n4"})
	writeEverywhere(t, c.nodes, 100)
	// Each side converges on its own, and the sides differ.
	d0, _ := c.nodes[0].st.Digest(context.Background())
	d2, _ := c.nodes[2].st.Digest(context.Background())
	if d0 == d2 {
		t.Fatal("partitioned sides hold the same state: the partition did not apply")
	}
	c.faults.Partition()
	c.waitConverged(60 * time.Second)
}

// TestLongPartitionRejoins cuts gossip and data between two halves for
// longer than memberlist keeps gossiping to members it holds dead (after
// which it forgets them and would never contact them again), with writes
// on both sides, then heals: the halves find each other and converge.
func TestLongPartitionRejoins(t *testing.T) {
	c := newTestCluster(t, 4, nil)
	c.waitMembers(4)
	c.faults.Partition([]string{"n0", "n1"}, []string{"n2", "n3"})
	waitFor(t, 30*time.Second, "each half to hold the other dead", func() bool {
		for _, tn := range c.nodes {
			if alive, _, dead := tn.node.MemberStates(); alive != 2 || dead != 2 {
				return false
			}
		}
		return true
	})
	writeEverywhere(t, c.nodes, 50)
	// The partition lasts well past the 3 s a Local member keeps
	// gossiping to the dead.
	time.Sleep(10 * time.Second)
	c.faults.Partition()
	c.waitMembers(4)
	c.waitConverged(60 * time.Second)
}

// TestLeaveIsNotDeath: a member that stops gracefully shows as left to
// the others, not dead (a member cut off shows dead: see
// TestLongPartitionRejoins).
func TestLeaveIsNotDeath(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.waitMembers(3)
	c.kill(c.nodes[2])
	waitFor(t, 30*time.Second, "n2 to show as left", func() bool {
		for _, tn := range c.live() {
			alive, _, dead := tn.node.MemberStates()
			if alive != 2 || dead != 0 {
				return false
			}
			left := false
			for _, m := range tn.node.Members() {
				left = left || (m.Name == "n2" && m.State == "left" && !m.Alive)
			}
			if !left {
				return false
			}
		}
		return true
	})
}

// TestUnreachableMemberIsSuspect: a member whose data plane is gone
// while its gossip goes on (memberlist holds it alive) shows as suspect
// once its connection is lost and a dial fails, and gets no broadcast and
// no sync request from then on; restarted, it is alive again and catches
// up.
func TestUnreachableMemberIsSuspect(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.waitMembers(3)
	n0, n1, n2 := c.nodes[0], c.nodes[1], c.nodes[2]
	n2.node.CrashTransport()
	suspect := func(tn *testNode) bool {
		alive, suspect, dead := tn.node.MemberStates()
		if alive != 2 || suspect != 1 || dead != 0 {
			return false
		}
		for _, m := range tn.node.Members() {
			if m.Name == "n2" {
				return m.State == "suspect" && !m.Alive
			}
		}
		return false
	}
	waitFor(t, 60*time.Second, "n0 and n1 to hold n2 suspect", func() bool { return suspect(n0) && suspect(n1) })

	tried := func() uint64 { return c.faults.Messages("n0", "n2") + c.faults.Messages("n1", "n2") }
	before := tried()
	ctx := context.Background()
	write := func(tn *testNode, id string) uint64 {
		t.Helper()
		res, err := tn.st.Transact(ctx, []store.Statement{{SQL: "INSERT INTO machines (id) VALUES (?)", Args: []any{id}}})
		if err != nil {
			t.Fatal(err)
		}
		return res.Version
	}
	// Held for longer than the test runs, what n0 wrote is left out of
	// its syncs unless its broadcast is marked lost.
	n0.node.HoldRecent(time.Hour)
	var last uint64
	for i := range 50 {
		last = write(n0, fmt.Sprintf("a%d", i))
		write(n1, fmt.Sprintf("b%d", i))
	}
	// What the suspect member was not sent, sync does not leave out as
	// versions on their way.
	waitFor(t, 30*time.Second, fmt.Sprintf("version %d, sent to nobody for the suspect member, not to be left out of sync", last), func() bool {
		return !n0.node.LeftOutOfSync(n0.st.Actor(), last)
	})
	n0.node.HoldRecent(cluster.RecentWindow)
	waitFor(t, 30*time.Second, "n0 and n1 to hold the same rows", func() bool {
		d0, err0 := n0.st.Digest(ctx)
		d1, err1 := n1.st.Digest(ctx)
		return err0 == nil && err1 == nil && d0 == d1 && n0.st.Gaps() == 0 && n1.st.Gaps() == 0 &&
			n0.node.QueueSize() == 0 && n1.node.QueueSize() == 0
	})
	if got := tried() - before; got != 0 {
		t.Fatalf("%d data-plane messages tried towards the suspect member, want none", got)
	}
	if !suspect(n0) || !suspect(n1) {
		t.Fatal("n2 stopped being suspect while its data plane is down")
	}

	// Restarted (a new data-plane address), it is alive again everywhere
	// and catches up.
	c.kill(n2)
	c.start(n2)
	c.waitMembers(3)
	c.waitConverged(60 * time.Second)
}

func TestRestartedAndNewNodesCatchUp(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.waitMembers(3)
	down := c.nodes[2]
	c.kill(down)
	ctx := context.Background()
	const versions = 10_000
	for i := 0; i < versions; i++ {
		if _, err := c.nodes[0].st.Transact(ctx, []store.Statement{{SQL: `INSERT INTO machines (id, port) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET port = excluded.port`, Args: []any{fmt.Sprint("m", i%500), int64(i)}}}); err != nil {
			t.Fatal(err)
		}
	}
	if c.nodes[0].st.Head() != versions {
		t.Fatalf("head %d", c.nodes[0].st.Head())
	}
	c.start(down) // same database, behind by 10k versions
	late := c.add()
	c.waitConverged(90 * time.Second)
	if late.st.Bookkeeping().Head(c.nodes[0].st.Actor()) != versions {
		t.Fatal("the late node does not know every version")
	}
}

func TestOtherCAAndOtherClusterAreRefused(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.waitMembers(3)
	ctx := context.Background()
	open := func(name string) *store.Store {
		st, err := store.Open(ctx, store.Config{Path: filepath.Join(c.dir, name+".db")})
		if err != nil {
			t.Fatal(err)
		}
		if err := st.ApplySchemaSQL(ctx, c.schema); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	otherCA, _ := cluster.NewCA("other")
	badCreds, _ := cluster.DevCredentials(otherCA, "intruder")
	goodCreds, _ := cluster.DevCredentials(c.ca, "foreigner")
	var outsiders []*store.Store
	var intruder *cluster.Node
	for _, o := range []struct {
		name, cluster string
		creds         *cluster.Credentials
	}{{"intruder", "ams", badCreds}, {"foreigner", "iad", goodCreds}} {
		st := open(o.name)
		node, err := cluster.Start(ctx, cluster.Config{Name: o.name, Cluster: o.cluster, GossipAddr: "127.0.0.1:0", QUICAddr: "127.0.0.1:0",
			Credentials: o.creds, Local: true, SyncInterval: 200 * time.Millisecond, Bootstrap: []string{c.nodes[0].node.GossipAddr()}}, st, nil, c.logger)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { node.Close() })
		if o.name == "intruder" {
			intruder = node
		}
		st.SetHooks(store.Hooks{Committed: node.Committed})
		if _, err := st.Transact(ctx, []store.Statement{{SQL: `INSERT INTO machines (id) VALUES (?)`, Args: []any{o.name}}}); err != nil {
			t.Fatal(err)
		}
		outsiders = append(outsiders, st)
	}
	writeEverywhere(t, c.nodes, 50)
	c.waitConverged(30 * time.Second)
	// The intruder shares the gossip label, so it sees the members and
	// dials them, and they dial it: every dial is refused, so each side
	// holds the other suspect and sends it nothing more.
	waitFor(t, 30*time.Second, "the intruder and the members to refuse each other", func() bool {
		if _, suspect, _ := intruder.MemberStates(); suspect != 3 {
			return false
		}
		for _, tn := range c.nodes {
			if _, suspect, _ := tn.node.MemberStates(); suspect != 1 {
				return false
			}
		}
		return true
	})
	for i, st := range outsiders {
		if st.Head() != 1 || len(st.Bookkeeping().Actors()) != 1 {
			t.Errorf("outsider %d received data: it knows %d actors", i, len(st.Bookkeeping().Actors()))
		}
	}
	for _, tn := range c.nodes {
		if n := len(tn.st.Bookkeeping().Actors()); n != 3 {
			t.Errorf("%s knows %d actors, want the 3 members only", tn.name, n)
		}
		for _, m := range tn.node.Members() {
			if m.Name == "foreigner" {
				t.Errorf("%s lists the other cluster's node as a member", tn.name)
			}
		}
	}
}

// TestGarbageDoesNotHurt sends random bytes to every QUIC and gossip port
// (UDP and TCP); the cluster keeps converging.
func TestGarbageDoesNotHurt(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.waitMembers(3)
	rnd := rand.New(rand.NewPCG(7, 7))
	junk := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rnd.IntN(256))
		}
		return b
	}
	for _, tn := range c.nodes {
		for _, addr := range []string{tn.node.QUICAddr(), tn.node.GossipAddr()} {
			u, err := net.Dial("udp", addr)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 200; i++ {
				u.Write(junk(1 + rnd.IntN(1400)))
			}
			u.Close()
		}
		for i := 0; i < 20; i++ {
			conn, err := net.DialTimeout("tcp", tn.node.GossipAddr(), time.Second)
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(time.Second))
			conn.Write(junk(1 + rnd.IntN(4096)))
			conn.Close()
		}
	}
	writeEverywhere(t, c.nodes, 50)
	c.waitConverged(30 * time.Second)
	c.waitMembers(3)
}

// TestFailedApplyDoesNotStorm: a version one node cannot apply (it lacks
// a column) is retried there, never relayed; the broadcast messages that
// carry it stay within fanout × max_transmissions × n, and once the node
// has the column, the version applies.
func TestFailedApplyDoesNotStorm(t *testing.T) {
	// Eight members with direct sending off, so that the effective
	// fanout (6) leaves members to relays and the bound is tested with
	// relays at work.
	const n = 8
	c := newTestCluster(t, n, func(cfg *cluster.Config) { cfg.DirectLimit = -1 })
	c.waitMembers(n)
	ctx := context.Background()
	for _, tn := range c.nodes[:n-1] {
		if err := tn.st.Migrate(ctx, []string{`ALTER TABLE machines ADD COLUMN cpus INTEGER`}); err != nil {
			t.Fatal(err)
		}
	}
	lacking := c.nodes[n-1]
	if _, err := c.nodes[0].st.Transact(ctx, []store.Statement{{SQL: `INSERT INTO machines (id, cpus) VALUES ('m1', 4)`}}); err != nil {
		t.Fatal(err)
	}
	sent := func() (total uint64) {
		for _, tn := range c.nodes {
			total += tn.node.Stats.ChangesetsSent.Load()
		}
		return total
	}
	waitFor(t, 30*time.Second, "the lacking node to fail the version", func() bool { return lacking.node.Stats.ApplyFailures.Load() > 0 })
	// Wait for broadcasting to settle: nothing queued and the count still.
	var last uint64
	stable := 0
	waitFor(t, 30*time.Second, "broadcasts to settle", func() bool {
		got := sent()
		queued := 0
		for _, tn := range c.nodes {
			queued += tn.node.QueueSize()
		}
		if got == last && queued == 0 {
			stable++
		} else {
			stable = 0
		}
		last = got
		return stable >= 10
	})
	fanout := cluster.EffectiveFanout(3, -1, n)
	limit := uint64(fanout * cluster.MaxTransmissions(2, n) * n)
	got := sent()
	if got > limit {
		t.Fatalf("the version was sent %d times, above fanout × max_transmissions × n = %d", got, limit)
	}
	if got <= uint64(fanout) {
		t.Fatalf("the version was sent %d times: no member relayed it", got)
	}
	if lacking.st.Knows(c.nodes[0].st.Actor(), 1) {
		t.Fatal("the version applied without the column")
	}
	if err := lacking.st.Migrate(ctx, []string{`ALTER TABLE machines ADD COLUMN cpus INTEGER`}); err != nil {
		t.Fatal(err)
	}
	c.waitConverged(30 * time.Second)
}

// TestMisbehavingMemberDoesNotStall: a peer with a valid certificate that
// opens streams and then stalls (a one-byte hello, broadcasts announcing
// 16 MiB and sending nothing) neither blocks the members nor costs them
// the memory it announced.
func TestMisbehavingMemberDoesNotStall(t *testing.T) {
	c := newTestCluster(t, 3, nil)
	c.waitMembers(3)
	tlsConf := c.rawTLS("staller")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, tn := range c.nodes {
		// A connection whose hello never completes.
		conn, err := quic.DialAddr(ctx, tn.node.QUICAddr(), tlsConf, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.CloseWithError(0, "")
		st, err := conn.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		st.Write([]byte{0x80})
		// A connection that completes the hello, then announces huge
		// broadcasts and sends nothing more.
		conn2, err := quic.DialAddr(ctx, tn.node.QUICAddr(), tlsConf, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn2.CloseWithError(0, "")
		hs, err := conn2.OpenStreamSync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		hello, _ := proto.Marshal(&wirev1.Hello{Cluster: c.name, Name: "staller", Actor: make([]byte, 16)})
		hs.Write(append(binary.AppendUvarint(nil, uint64(len(hello))), hello...))
		for i := 0; i < 50; i++ {
			us, err := conn2.OpenUniStreamSync(ctx)
			if err != nil {
				break
			}
			kind := byte('B') // one message per stream
			if i%2 == 1 {
				kind = 'b' // messages one after another
			}
			us.Write(append([]byte{kind}, binary.AppendUvarint(nil, 16<<20)...))
		}
	}
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	writeEverywhere(t, c.nodes, 50)
	c.waitConverged(30 * time.Second)
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	// 150 announced 16 MiB frames would be 2.4 GiB.
	if grew := int64(after.HeapAlloc) - int64(before.HeapAlloc); grew > 512<<20 {
		t.Fatalf("heap grew by %d MiB", grew>>20)
	}
}

// TestGossipKeyRotation: during a rotation members send with different
// keys and accept each other's; a member whose key nobody accepts never
// joins.
func TestGossipKeyRotation(t *testing.T) {
	k1, k2, k3 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 32)
	c := newTestCluster(t, 0, func(cfg *cluster.Config) {
		switch cfg.Name {
		case "n0":
			cfg.SecretKey, cfg.AcceptKeys = k1, [][]byte{k2}
		case "n1":
			cfg.SecretKey, cfg.AcceptKeys = k2, [][]byte{k1}
		default:
			cfg.SecretKey = k3
		}
	})
	c.add()
	c.add()
	c.waitMembers(2)
	writeEverywhere(t, c.live(), 20)
	c.waitConverged(30 * time.Second)
	stranger := c.add()
	// The stranger stays alone, and the others never count it.
	if poll(3*time.Second, func() bool {
		for _, m := range c.nodes[0].node.Members() {
			if m.Name == stranger.name {
				return true
			}
		}
		return false
	}) {
		t.Fatal("a member with a key nobody accepts joined")
	}
}

// TestPartitionDataLeavesGossip: Partition cuts data and gossip between
// groups, PartitionData data alone, and no partition cuts nothing.
func TestPartitionDataLeavesGossip(t *testing.T) {
	f := &cluster.Faults{}
	check := func(what string, from, to string, wantData, wantGossip bool) {
		t.Helper()
		if data, gossip := f.Cuts(from, to); data != wantData || gossip != wantGossip {
			t.Fatalf("%s, %s to %s: data cut %v, gossip cut %v; want %v, %v", what, from, to, data, gossip, wantData, wantGossip)
		}
	}
	f.Partition([]string{"n0", "n1"}, []string{"n2"})
	check("Partition", "n0", "n2", true, true)
	check("Partition", "n2", "n1", true, true)
	check("Partition", "n0", "n1", false, false)
	f.PartitionData([]string{"n0", "n1"}, []string{"n2"})
	check("PartitionData", "n0", "n2", true, false)
	check("PartitionData", "n2", "n1", true, false)
	check("PartitionData", "n0", "n1", false, false)
	f.Partition([]string{"n0"}, []string{"n2"})
	check("Partition after PartitionData", "n0", "n2", true, true)
	f.Partition()
	check("healed", "n0", "n2", false, false)
}
