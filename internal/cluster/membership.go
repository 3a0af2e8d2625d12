package cluster

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strconv"
	"strings"
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
	self    string // this member's gossip address, as advertised
	metaMu  sync.Mutex
	meta    []byte

	// changed is signalled (without blocking) when a member joins,
	// changes or leaves.
	changed chan struct{}
	// join is memberlist's Join (a field so tests can watch it).
	join func(addrs []string) (int, error)
	port int // the gossip port, for bootstrap entries that name none

	mu   sync.Mutex
	rtt  map[string]time.Duration // by member name, from SWIM probes
	view map[string]Member        // by name, kept from memberlist's events
	down map[string]time.Time     // members the view holds dead or left, since when
	up   map[string]time.Time     // members the view holds alive, since when
}

// metaLimit is memberlist's bound on node metadata.
const metaLimit = memberlist.MetaMaxSize

// newMembership starts gossip. faults, when not nil, cuts gossip
// between the groups of a partition.
func newMembership(cfg *Config, meta *wirev1.NodeMeta, faults *Faults) (*membership, error) {
	data, err := proto.Marshal(meta)
	if err != nil {
		return nil, err
	}
	if len(data) > metaLimit {
		return nil, fmt.Errorf("member metadata is %d bytes, above memberlist's %d", len(data), metaLimit)
	}
	m := &membership{cluster: cfg.Cluster, meta: data, changed: make(chan struct{}, 1), rtt: map[string]time.Duration{}, view: map[string]Member{}, down: map[string]time.Time{}, up: map[string]time.Time{}}
	mc := memberlist.DefaultLANConfig()
	if cfg.Local {
		mc = memberlist.DefaultLocalConfig()
		// On one host a missed alive message is repaired by push/pull;
		// make that quick (the default is 15 s).
		mc.PushPullInterval = 2 * time.Second
		// memberlist forgets a dead member after this (15 s by default)
		// and rejoinLoop brings it back when it answers again; on one
		// host, do both soon.
		mc.GossipToTheDeadTime = 3 * time.Second
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
	if faults != nil {
		// Port 0 binds TCP, then UDP on the same port, which may be
		// taken: memberlist's own transport tries again, and so does
		// this one.
		var nt *memberlist.NetTransport
		for try := 0; ; try++ {
			nt, err = memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger})
			if err == nil || mc.BindPort != 0 || try == 9 {
				break
			}
		}
		if err != nil {
			return nil, fmt.Errorf("gossip: %w", err)
		}
		mc.Transport = &gossipTransport{NetTransport: nt, self: cfg.Name, faults: faults, name: m.nameAt}
	}
	if m.ml, err = memberlist.Create(mc); err != nil {
		if mc.Transport != nil {
			_ = mc.Transport.Shutdown()
		}
		return nil, fmt.Errorf("gossip: %w", err)
	}
	m.join = m.ml.Join
	// memberlist has filled in the port it bound when asked for 0 (on
	// its own transport; on ours, ask it).
	m.port = mc.BindPort
	if gt, ok := mc.Transport.(*gossipTransport); ok && m.port == 0 {
		m.port = gt.GetAutoBindPort()
	}
	// Read once, now: memberlist hands out its own node, whose fields it
	// rewrites (UpdateNode) without a lock the reader could take.
	self := m.ml.LocalNode()
	m.self = net.JoinHostPort(self.Addr.String(), strconv.Itoa(int(self.Port)))
	// Peers dial the data plane where the metadata says. A QUIC socket
	// bound to every interface is announced on the host gossip is
	// announced on: advertise_addr, or the address memberlist chose.
	if q := advertised(meta.GetQuicAddr(), m.self); q != meta.GetQuicAddr() {
		meta.QuicAddr = q
		data, err := proto.Marshal(meta)
		if err == nil && len(data) > metaLimit {
			err = fmt.Errorf("member metadata is %d bytes, above memberlist's %d", len(data), metaLimit)
		}
		if err == nil {
			m.metaMu.Lock()
			m.meta = data
			m.metaMu.Unlock()
			// Nobody has joined yet: this only sets it.
			err = m.ml.UpdateNode(0)
		}
		if err != nil {
			_ = m.ml.Shutdown()
			return nil, fmt.Errorf("gossip: announce data-plane address %s: %w", q, err)
		}
	}
	return m, nil
}

// Delegate: only the metadata is used; data travels over QUIC.
func (m *membership) NodeMeta(limit int) []byte {
	m.metaMu.Lock()
	defer m.metaMu.Unlock()
	return m.meta
}
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
// read safely later. The state comes from the event: memberlist does not
// keep Node.State up to date (it is alive in every event), and it calls
// NotifyLeave for a member that failed and one that left alike; a member
// that leaves gracefully says so in its metadata first (see leave).
func (m *membership) NotifyJoin(n *memberlist.Node)   { m.record(n, false) }
func (m *membership) NotifyUpdate(n *memberlist.Node) { m.record(n, false) }
func (m *membership) NotifyLeave(n *memberlist.Node)  { m.record(n, true) }

func (m *membership) record(n *memberlist.Node, gone bool) {
	mem := Member{
		Name: n.Name, GossipAddr: net.JoinHostPort(n.Addr.String(), strconv.Itoa(int(n.Port))),
		State: "alive", Alive: !gone,
	}
	meta, err := decodeMeta(n.Meta)
	if err == nil {
		mem.Actor, _ = crdt.ActorIDFromBytes(meta.GetActor())
		mem.Region, mem.QUICAddr, mem.APIAddr, mem.GRPCAddr = meta.GetRegion(), meta.GetQuicAddr(), meta.GetApiAddr(), meta.GetGrpcAddr()
	}
	if gone {
		mem.State = "dead"
		if meta.GetLeaving() {
			mem.State = "left"
		}
	}
	m.mu.Lock()
	m.view[n.Name] = mem
	if gone {
		if _, ok := m.down[n.Name]; !ok {
			m.down[n.Name] = time.Now()
		}
		delete(m.up, n.Name)
	} else {
		delete(m.down, n.Name)
		if _, ok := m.up[n.Name]; !ok {
			m.up[n.Name] = time.Now()
		}
	}
	m.mu.Unlock()
	select {
	case m.changed <- struct{}{}:
	default:
	}
}

// aliveSince is when this member last saw the named member come alive;
// false if it does not hold it alive.
func (m *membership) aliveSince(name string) (time.Time, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.up[name]
	return t, ok
}

// nameAt is the name of the member whose gossip address is addr, "" if
// none is known.
func (m *membership) nameAt(addr string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, mem := range m.view {
		if mem.GossipAddr == addr {
			return name
		}
	}
	return ""
}

// members lists the cluster as memberlist sees it: every member it has
// heard of, with its state (alive, dead or left; memberlist reports no
// event for suspicion, so a suspect member shows alive until declared
// dead: Node.members adds the data plane's own).
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

// joinLoop joins through the bootstrap members, retrying until one
// answers or ctx ends.
func (m *membership) joinLoop(ctx context.Context, bootstrap []string, logf func(string, ...any)) {
	if len(bootstrap) == 0 {
		return
	}
	for attempt := 0; ; attempt++ {
		n, err := m.joinAnswering(ctx, bootstrap)
		if n > 0 || ctx.Err() != nil {
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

// Rejoining. memberlist stops gossiping to a dead member after a while
// (GossipToTheDeadTime) and forgets it, and it never contacts a member it
// has forgotten. Without more, two sides of a partition that lasted
// longer than that would never hear from each other again after it
// heals, each running as a cluster of its own. So every interval this
// member tries to join a few of the members it holds dead (not those
// that left), and the bootstrap members while it sees nobody alive; a
// member that answers is alive again on both sides, and everything it
// missed comes by sync. A member dead, or gone, for longer than
// reapAfter is dropped from the view (and no longer tried).

// rejoinBatch is how many members one round tries.
const rejoinBatch = 3

// reapAfter is how long a member dead or left stays in the view.
const reapAfter = 24 * time.Hour

// rejoinLoop runs rejoin rounds every interval (±25%) until ctx ends.
func (m *membership) rejoinLoop(ctx context.Context, interval time.Duration, bootstrap []string, rnd func(n int) int, log *slog.Logger) {
	for {
		d := interval*3/4 + time.Duration(rnd(int(interval/2)+1))
		select {
		case <-ctx.Done():
			return
		case <-time.After(d):
		}
		addrs := m.rejoinTargets(time.Now(), m.addr(), bootstrap, rnd)
		if len(addrs) == 0 {
			continue
		}
		// A member whose host answers but which stays gone fails this
		// every round: not worth more than a debug line.
		if n, err := m.joinAnswering(ctx, addrs); n > 0 {
			log.Info("gossip rejoined", "contacted", n, "tried", addrs)
		} else if err != nil && ctx.Err() == nil {
			log.Debug("gossip rejoin failed", "tried", addrs, "err", err)
		}
	}
}

// joinAnswering joins through those of addrs that answer. memberlist's
// Join cannot be interrupted, and on a host that drops packets it waits
// out its TCP timeout (10 s) per address. So each address is first
// dialed under ctx, and Join gets only those that answered: stopping
// never waits on a dead host.
func (m *membership) joinAnswering(ctx context.Context, addrs []string) (int, error) {
	var live []string
	for _, a := range addrs {
		if answers(ctx, dialTarget(a, m.port)) {
			live = append(live, a)
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(live) == 0 {
		return 0, fmt.Errorf("none of %v answers", addrs)
	}
	return m.join(live)
}

// dialTarget is the TCP address memberlist's Join would contact for a
// bootstrap entry: it takes "host", "host:port" and "name/host:port",
// and a host without a port means this member's own gossip port.
func dialTarget(entry string, port int) string {
	if i := strings.Index(entry, "/"); i >= 0 {
		entry = entry[i+1:]
	}
	if hasPort(entry) {
		return entry
	}
	return net.JoinHostPort(strings.Trim(entry, "[]"), strconv.Itoa(port))
}

// hasPort reports whether s names a port, as memberlist reads it: after
// a bracketed IPv6 address, or after the single colon of anything else.
func hasPort(s string) bool {
	if strings.LastIndex(s, "[") >= 0 {
		return strings.LastIndex(s, "]:") >= 0
	}
	return strings.Count(s, ":") == 1
}

// answers reports whether a TCP connection to addr opens within 2 s,
// before ctx ends.
func answers(ctx context.Context, addr string) bool {
	d := net.Dialer{Timeout: 2 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// rejoinTargets reaps members dead or left for longer than reapAfter, and picks
// up to rejoinBatch gossip addresses to try: members held dead, and the
// bootstrap members when no other member is alive. self is this member's
// gossip address.
func (m *membership) rejoinTargets(now time.Time, self string, bootstrap []string, rnd func(n int) int) []string {
	m.mu.Lock()
	var dead []string
	taken := map[string]bool{} // addresses of members alive now
	for name, mem := range m.view {
		if mem.Alive {
			taken[mem.GossipAddr] = true
			continue
		}
		since, gone := m.down[name]
		if !gone {
			continue
		}
		if now.Sub(since) > reapAfter {
			delete(m.view, name)
			delete(m.down, name)
			delete(m.rtt, name)
			continue
		}
		if mem.State == "dead" {
			dead = append(dead, mem.GossipAddr)
		}
	}
	m.mu.Unlock()
	alive := len(taken)
	if taken[self] {
		alive--
	}
	// Not this member, and not an address another member, alive, now
	// holds (one restarted under a new name): joining it again would
	// find someone, and never bring back the name held dead.
	var pool []string
	for _, a := range dead {
		if a != self && !taken[a] {
			pool = append(pool, a)
		}
	}
	if alive == 0 {
		for _, b := range bootstrap {
			if b != self {
				pool = append(pool, b)
			}
		}
	}
	for i := len(pool) - 1; i > 0; i-- {
		j := rnd(i + 1)
		pool[i], pool[j] = pool[j], pool[i]
	}
	return pool[:min(len(pool), rejoinBatch)]
}

// leave marks this member as leaving in its metadata, announces its
// departure and stops gossip. A leave nobody heard (the other members are
// gone too) is not an error: they will see this member dead instead.
func (m *membership) leave(timeout time.Duration) error {
	var meta wirev1.NodeMeta
	if err := proto.Unmarshal(m.NodeMeta(metaLimit), &meta); err == nil {
		meta.Leaving = true
		if data, err := proto.Marshal(&meta); err == nil && len(data) <= metaLimit {
			m.metaMu.Lock()
			m.meta = data
			m.metaMu.Unlock()
			_ = m.ml.UpdateNode(timeout)
		}
	}
	_ = m.ml.Leave(timeout)
	return m.ml.Shutdown()
}

// addr is this member's gossip address, as advertised.
func (m *membership) addr() string { return m.self }
