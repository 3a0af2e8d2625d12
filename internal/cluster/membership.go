package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
	"google.golang.org/protobuf/proto"

	"github.com/patina-db/patina/internal/crdt"
	wirev1 "github.com/patina-db/patina/proto/patina/wire/v1"
)

// membership wraps memberlist: SWIM failure detection, this member's
// metadata, and the refusal of members of other clusters.
type membership struct {
	ml      *memberlist.Memberlist
	cluster string
	meta    []byte

	// changed is signalled (without blocking) when a member joins,
	// changes or leaves.
	changed chan struct{}

	mu   sync.Mutex
	rtt  map[string]time.Duration // by member name, from SWIM probes
	view map[string]Member        // by name, kept from memberlist's events
}

// metaLimit is memberlist's bound on node metadata.
const metaLimit = memberlist.MetaMaxSize

func newMembership(cfg *Config, meta *wirev1.NodeMeta) (*membership, error) {
	data, err := proto.Marshal(meta)
	if err != nil {
		return nil, err
	}
	if len(data) > metaLimit {
		return nil, fmt.Errorf("member metadata is %d bytes, above memberlist's %d", len(data), metaLimit)
	}
	m := &membership{cluster: cfg.Cluster, meta: data, changed: make(chan struct{}, 1), rtt: map[string]time.Duration{}, view: map[string]Member{}}
	mc := memberlist.DefaultLANConfig()
	if cfg.Local {
		mc = memberlist.DefaultLocalConfig()
		// On one host a missed alive message is repaired by push/pull;
		// make that quick (the default is 15 s).
		mc.PushPullInterval = 2 * time.Second
	}
	host, port, err := net.SplitHostPort(cfg.GossipAddr)
	if err != nil {
		return nil, err
	}
	mc.BindAddr = host
	if mc.BindPort, err = strconv.Atoi(port); err != nil {
		return nil, fmt.Errorf("gossip port %q: %w", port, err)
	}
	mc.AdvertisePort = mc.BindPort
	if cfg.AdvertiseAddr != "" {
		ah, ap, err := net.SplitHostPort(cfg.AdvertiseAddr)
		if err != nil {
			return nil, err
		}
		mc.AdvertiseAddr = ah
		if mc.AdvertisePort, err = strconv.Atoi(ap); err != nil {
			return nil, err
		}
	}
	mc.Name = cfg.Name
	// Gossip carries membership and each member's metadata, a few hundred
	// bytes: LZW saved little on such packets and made a new coder for
	// each one, 1–3% of a busy agent's allocations. A member
	// still reads compressed packets, so older members are understood.
	mc.EnableCompression = false
	// Packets of another cluster carry another label and are dropped
	// before they are parsed.
	mc.Label = "patina/" + cfg.Cluster
	mc.SecretKey = cfg.SecretKey
	if len(cfg.AcceptKeys) > 0 {
		// Every key decrypts; SecretKey (memberlist makes it primary)
		// encrypts.
		kr, err := memberlist.NewKeyring(cfg.AcceptKeys, cfg.AcceptKeys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip keys: %w", err)
		}
		mc.Keyring = kr
	}
	mc.Delegate = m
	mc.Alive = m
	mc.Merge = m
	mc.Ping = m
	mc.Events = m
	mc.Logger = log.New(io.Discard, "", 0)
	if m.ml, err = memberlist.Create(mc); err != nil {
		return nil, fmt.Errorf("gossip: %w", err)
	}
	return m, nil
}

// Delegate: only the metadata is used; data travels over QUIC.
func (m *membership) NodeMeta(limit int) []byte                  { return m.meta }
func (m *membership) NotifyMsg([]byte)                           {}
func (m *membership) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (m *membership) LocalState(join bool) []byte                { return nil }
func (m *membership) MergeRemoteState(buf []byte, join bool)     {}

// AckPayload and NotifyPingComplete record probe round trips.
func (m *membership) AckPayload() []byte { return nil }

func (m *membership) NotifyPingComplete(other *memberlist.Node, rtt time.Duration, payload []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.rtt[other.Name] = rtt
}

// NotifyAlive refuses a member of another cluster (or with unreadable
// metadata): memberlist then ignores it.
func (m *membership) NotifyAlive(peer *memberlist.Node) error { return m.check(peer) }

// NotifyMerge refuses to merge with a cluster containing foreign members.
func (m *membership) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if err := m.check(p); err != nil {
			return err
		}
	}
	return nil
}

func (m *membership) check(peer *memberlist.Node) error {
	meta, err := decodeMeta(peer.Meta)
	if err != nil {
		return fmt.Errorf("member %s: %w", peer.Name, err)
	}
	if meta.GetCluster() != m.cluster {
		return fmt.Errorf("member %s is in cluster %q, not %q", peer.Name, meta.GetCluster(), m.cluster)
	}
	return nil
}

func decodeMeta(data []byte) (*wirev1.NodeMeta, error) {
	var meta wirev1.NodeMeta
	if err := proto.Unmarshal(data, &meta); err != nil {
		return nil, fmt.Errorf("unreadable metadata: %w", err)
	}
	return &meta, nil
}

// NotifyJoin, NotifyUpdate and NotifyLeave keep this member's own copy
// of the membership. memberlist calls them with its node lock held, so the
// node's fields can be read here; the pointers Members() returns cannot be
// read safely later.
func (m *membership) NotifyJoin(n *memberlist.Node)   { m.record(n) }
func (m *membership) NotifyUpdate(n *memberlist.Node) { m.record(n) }
func (m *membership) NotifyLeave(n *memberlist.Node)  { m.record(n) }

func (m *membership) record(n *memberlist.Node) {
	mem := Member{
		Name: n.Name, GossipAddr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))),
		State: stateName(n.State), Alive: n.State == memberlist.StateAlive,
	}
	if meta, err := decodeMeta(n.Meta); err == nil {
		mem.Actor, _ = crdt.ActorIDFromBytes(meta.GetActor())
		mem.Region, mem.QUICAddr, mem.APIAddr, mem.GRPCAddr = meta.GetRegion(), meta.GetQuicAddr(), meta.GetApiAddr(), meta.GetGrpcAddr()
	}
	m.mu.Lock()
	m.view[n.Name] = mem
	m.mu.Unlock()
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// members lists the cluster as this member sees it: every member it has
// heard of, with its state (alive, dead or left; memberlist reports no
// event for suspicion, so a suspect member shows alive until declared
// dead).
func (m *membership) members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Member, 0, len(m.view))
	for _, mem := range m.view {
		mem.RTT = m.rtt[mem.Name]
		out = append(out, mem)
	}
	return out
}

// count is how many members the view holds, whatever their state: the n
// the relay rules scale with.
func (m *membership) count() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.view)
}

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "dead"
	}
	return "left"
}

// states counts members by state.
func (m *membership) states() (alive, suspect, dead int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, mem := range m.view {
		switch mem.State {
		case "alive":
			alive++
		case "suspect":
			suspect++
		default:
			dead++
		}
	}
	return
}

// joinLoop joins through the bootstrap members, retrying until one
// answers or ctx ends.
func (m *membership) joinLoop(ctx context.Context, bootstrap []string, logf func(string, ...any)) {
	if len(bootstrap) == 0 {
		return
	}
	for attempt := 0; ; attempt++ {
		n, err := m.ml.Join(bootstrap)
		if n > 0 {
			return
		}
		if attempt%10 == 0 {
			logf("gossip join failed, retrying", "bootstrap", bootstrap, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}

// leave announces departure and stops gossip. A leave nobody heard (the
// other members are gone too) is not an error: they will see this member
// dead instead.
func (m *membership) leave(timeout time.Duration) error {
	_ = m.ml.Leave(timeout)
	return m.ml.Shutdown()
}

func (m *membership) addr() string {
	n := m.ml.LocalNode()
	return net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port)))
}
