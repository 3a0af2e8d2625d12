package cluster

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	wirev1 "github.com/patina-db/patina/proto/patina/wire/v1"
)

func TestRejoinTargets(t *testing.T) {
	now := time.Now()
	m := &membership{view: map[string]Member{}, down: map[string]time.Time{}, rtt: map[string]time.Duration{}}
	add := func(name, addr, state string, downFor time.Duration) {
		m.view[name] = Member{Name: name, GossipAddr: addr, State: state, Alive: state == "alive"}
		if state != "alive" {
			m.down[name] = now.Add(-downFor)
		}
	}
	add("self", "10.0.0.1:7946", "alive", 0)
	add("a", "10.0.0.2:7946", "alive", 0)
	add("gone", "10.0.0.3:7946", "left", time.Minute)
	add("d1", "10.0.0.4:7946", "dead", time.Minute)
	add("d2", "10.0.0.5:7946", "dead", time.Hour)
	add("old", "10.0.0.6:7946", "dead", reapAfter+time.Minute)
	add("oldleft", "10.0.0.7:7946", "left", reapAfter+time.Minute)
	add("renamed", "10.0.0.2:7946", "dead", time.Minute) // its address is a's now
	first := func(n int) int { return 0 }
	bootstrap := []string{"10.0.0.1:7946", "10.0.0.9:7946"}

	got := m.rejoinTargets(now, "10.0.0.1:7946", bootstrap, first)
	slices.Sort(got)
	if want := []string{"10.0.0.4:7946", "10.0.0.5:7946"}; !slices.Equal(got, want) {
		t.Fatalf("with a member alive: %v, want the dead members %v (not the one that left, the ones reaped, one whose address a live member holds, or bootstrap)", got, want)
	}
	for _, name := range []string{"old", "oldleft"} {
		if _, ok := m.view[name]; ok {
			t.Fatalf("%s, gone for longer than reapAfter, is still in the view", name)
		}
	}
	if _, ok := m.view["gone"]; !ok {
		t.Fatal("a member that left a minute ago was reaped")
	}

	// Alone: the bootstrap members too, but never this member's own address.
	delete(m.view, "renamed")
	add("a", "10.0.0.2:7946", "dead", time.Second)
	for i := 0; i < 3; i++ {
		add(fmt.Sprint("more", i), fmt.Sprintf("10.0.1.%d:7946", i), "dead", time.Second)
	}
	all := map[string]bool{}
	rnd := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 200; i++ {
		got := m.rejoinTargets(now, "10.0.0.1:7946", bootstrap, rnd.IntN)
		if len(got) != rejoinBatch {
			t.Fatalf("a round tries %d members, want %d", len(got), rejoinBatch)
		}
		for _, a := range got {
			all[a] = true
		}
	}
	if !all["10.0.0.9:7946"] || all["10.0.0.1:7946"] || len(all) != 7 {
		t.Fatalf("alone, rounds tried %v: want the six dead members and the other bootstrap member, never self", all)
	}
}

func TestAdvertised(t *testing.T) {
	for _, c := range []struct{ bound, gossip, want string }{
		{"0.0.0.0:7947", "10.0.0.5:7946", "10.0.0.5:7947"},
		{"[::]:7947", "10.0.0.5:7946", "10.0.0.5:7947"},
		{"0.0.0.0:7947", "[fd00::1]:7946", "[fd00::1]:7947"},
		{"10.0.0.9:7947", "10.0.0.5:7946", "10.0.0.9:7947"},
	} {
		if got := advertised(c.bound, c.gossip); got != c.want {
			t.Errorf("advertised(%q, %q) = %q, want %q", c.bound, c.gossip, got, c.want)
		}
	}
}

// TestQUICAddrFollowsGossipAdvertise: a data plane bound to every
// interface is announced on the host gossip advertises, here
// advertise_addr, not the host gossip is bound to.
func TestQUICAddrFollowsGossipAdvertise(t *testing.T) {
	cfg := &Config{Name: "a", Cluster: "c", GossipAddr: "127.0.0.1:0", AdvertiseAddr: "127.0.0.2:7000", Local: true}
	m, err := newMembership(cfg, &wirev1.NodeMeta{Cluster: "c", QuicAddr: "0.0.0.0:7947"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer m.ml.Shutdown()
	meta, err := decodeMeta(m.NodeMeta(metaLimit))
	if err != nil {
		t.Fatal(err)
	}
	if got := meta.GetQuicAddr(); got != "127.0.0.2:7947" {
		t.Fatalf("announced data-plane address %q, want 127.0.0.2:7947", got)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		self := ""
		for _, mem := range m.members() {
			if mem.Name == "a" {
				self = mem.QUICAddr
			}
		}
		if self == "127.0.0.2:7947" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("own member entry has data-plane address %q after 10 s, want 127.0.0.2:7947", self)
		}
	}
}

// TestAliveSince: a member's time alive starts when it shows up alive and
// ends when it goes; sync sends recent versions to one alive only lately.
func TestAliveSince(t *testing.T) {
	m := &membership{view: map[string]Member{}, down: map[string]time.Time{}, up: map[string]time.Time{}, rtt: map[string]time.Duration{}, changed: make(chan struct{}, 1)}
	node := &memberlist.Node{Name: "a", Addr: net.ParseIP("10.0.0.2"), Port: 7946}
	if _, ok := m.aliveSince("a"); ok {
		t.Fatal("alive before it showed up")
	}
	before := time.Now()
	m.record(node, false)
	first, ok := m.aliveSince("a")
	if !ok || first.Before(before) {
		t.Fatalf("after joining: %v %v", first, ok)
	}
	m.record(node, false) // an update: still the same stretch alive
	if again, _ := m.aliveSince("a"); !again.Equal(first) {
		t.Fatal("an update restarted the time alive")
	}
	m.record(node, true)
	if _, ok := m.aliveSince("a"); ok {
		t.Fatal("alive after it went")
	}
	m.record(node, false)
	if back, ok := m.aliveSince("a"); !ok || back.Before(first) {
		t.Fatalf("back: %v %v", back, ok)
	}
}

// TestJoinOnlyWhatAnswers: memberlist's Join cannot be interrupted, so
// both join loops hand it only addresses that accepted a connection
// first, and stop trying once their context ends.
func TestJoinOnlyWhatAnswers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := closed.Addr().String()
	closed.Close() // nothing listens there now: connections are refused

	var joined [][]string
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	m := &membership{join: func(addrs []string) (int, error) {
		joined = append(joined, addrs)
		return len(addrs), nil
	}}
	fmt.Sscan(port, &m.port)
	ctx, cancel := context.WithCancel(context.Background())
	m.joinLoop(ctx, []string{closedAddr, ln.Addr().String()}, t.Logf)
	if len(joined) != 1 || !slices.Equal(joined[0], []string{ln.Addr().String()}) {
		t.Fatalf("joined %v, want only the address that answers", joined)
	}
	// Entries without a port (this member's gossip port) or with a
	// node name are dialed as memberlist would, and handed over as given.
	joined = nil
	m.joinLoop(ctx, []string{"127.0.0.1", "n1/" + ln.Addr().String()}, t.Logf)
	if len(joined) != 1 || !slices.Equal(joined[0], []string{"127.0.0.1", "n1/" + ln.Addr().String()}) {
		t.Fatalf("joined %v, want both entries", joined)
	}

	joined = nil
	cancel()
	m.joinLoop(ctx, []string{ln.Addr().String()}, t.Logf)
	if len(joined) != 0 {
		t.Fatalf("joined %v after the context ended", joined)
	}
}

// TestDialTarget: every form of bootstrap entry memberlist's Join takes
// is dialed where Join would go.
func TestDialTarget(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.5:7946":         "10.0.0.5:7946",
		"10.0.0.5":              "10.0.0.5:7000",
		"node-a/10.0.0.5:7946":  "10.0.0.5:7946",
		"node-a/10.0.0.5":       "10.0.0.5:7000",
		"gossip.example:7946":   "gossip.example:7946",
		"gossip.example":        "gossip.example:7000",
		"[::1]:7946":            "[::1]:7946",
		"[::1]":                 "[::1]:7000",
		"::1":                   "[::1]:7000",
		"node-b/[fd00::5]:7946": "[fd00::5]:7946",
	} {
		if got := dialTarget(in, 7000); got != want {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}
