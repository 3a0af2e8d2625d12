package cluster

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"

	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/internal/watchdog"
	wirev1 "github.com/patina-db/patina/proto/patina/wire/v1"
)

// Store is what a cluster member needs of its database.
type Store interface {
	Actor() crdt.ActorID
	Knows(a crdt.ActorID, v uint64) bool
	KnownPrefix(a crdt.ActorID) uint64
	Bookkeeping() *crdt.Bookkeeping
	ChangesRange(ctx context.Context, a crdt.ActorID, from, to uint64) ([]store.VersionChanges, error)
	Apply(ctx context.Context, changesets []*crdt.Changeset) (store.ApplyResult, error)
}

// Stats are a member's data-plane counters.
type Stats struct {
	BroadcastsSent    atomic.Uint64 // messages
	BroadcastFailures atomic.Uint64 // sends that failed (or a fault dropped)
	ChangesetsSent    atomic.Uint64 // changesets inside those messages
	Received          atomic.Uint64 // changesets received by broadcast
	Duplicates        atomic.Uint64 // received ones already seen or known
	Invalid           atomic.Uint64 // received ones that failed validation
	Applied           atomic.Uint64 // remote versions newly applied here (broadcast, sync or retry)
	ApplyFailures     atomic.Uint64 // versions that could not be applied (retried locally)
	Refused           atomic.Uint64 // of those, versions the store refuses for good (not retried)
	QueueDropped      atomic.Uint64
	SyncRounds        atomic.Uint64
	SyncPulled        atomic.Uint64 // versions received by sync
	SyncServed        atomic.Uint64 // versions sent by sync
	SyncRefused       atomic.Uint64 // exchanges refused at the serve limit
	BytesSent         atomic.Uint64 // data-plane payload written (frames; QUIC framing excluded)
}

// Snapshot reads every counter.
func (s *Stats) Snapshot() map[string]uint64 {
	return map[string]uint64{
		"broadcasts_sent": s.BroadcastsSent.Load(), "broadcast_failures": s.BroadcastFailures.Load(),
		"changesets_sent": s.ChangesetsSent.Load(), "received": s.Received.Load(), "duplicates": s.Duplicates.Load(),
		"invalid": s.Invalid.Load(), "applied": s.Applied.Load(), "apply_failures": s.ApplyFailures.Load(), "refused": s.Refused.Load(), "queue_dropped": s.QueueDropped.Load(),
		"sync_rounds": s.SyncRounds.Load(), "sync_pulled": s.SyncPulled.Load(), "sync_served": s.SyncServed.Load(),
		"sync_refused": s.SyncRefused.Load(), "bytes_sent": s.BytesSent.Load(),
	}
}

// versionKey names a version.
type versionKey struct {
	actor   crdt.ActorID
	version uint64
}

// maxFailed bounds the versions kept for local retry; beyond it, sync
// brings them again.
const maxFailed = 10_000

// Node is one member of a cluster.
type Node struct {
	cfg    Config
	st     Store
	log    *slog.Logger
	faults *Faults
	tr     *transport
	ms     *membership
	Stats  Stats

	mu      sync.Mutex
	lag     lagWindow
	queue   *sendQueue
	seen    *seenSet
	failed  map[versionKey]*crdt.Changeset
	rnd     *rand.Rand
	serving chan struct{} // sync serve slots

	inbox []queued // received, waiting to be applied
	// pending are the versions in the inbox or being applied from it:
	// a sync round counts them as known, so a peer does not send again
	// what is about to apply here (see syncWith).
	pending map[versionKey]struct{}
	// recent are the versions written here or received by broadcast
	// lately, which sync leaves out (see recentVersions).
	recent    *recentVersions
	applyWake chan struct{}
	inFlight  map[string]int // broadcast messages on their way, per member

	// parts are versions coming by broadcast in parts (see splitWire).
	partsMu sync.Mutex
	parts   *assembler
	sends   sync.WaitGroup

	// refusedLog lets through one warning a minute about refused versions.
	refusedLog *rate.Limiter

	wake   chan struct{}
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Start joins (or starts) the cluster. faults may be nil.
func Start(ctx context.Context, cfg Config, st Store, faults *Faults, log *slog.Logger) (*Node, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if log == nil {
		log = slog.Default()
	}
	n := &Node{
		cfg: cfg, st: st, log: log, faults: faults,
		queue: newSendQueue(cfg.QueueLimit), seen: newSeenSet(), failed: map[versionKey]*crdt.Changeset{},
		rnd:        rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(st.Actor()[0]))),
		serving:    make(chan struct{}, cfg.SyncServeLimit),
		wake:       make(chan struct{}, 1),
		applyWake:  make(chan struct{}, 1),
		inFlight:   map[string]int{},
		pending:    map[versionKey]struct{}{},
		recent:     newRecentVersions(recentWindow),
		parts:      newAssembler(maxVersionBytes),
		refusedLog: rate.NewLimiter(rate.Every(time.Minute), 1),
	}
	actor := st.Actor()
	var err error
	if n.tr, err = newTransport(cfg.QUICAddr, cfg.Cluster, cfg.Name, actor, cfg.Credentials, n, log); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	n.tr.sent = &n.Stats.BytesSent
	if n.cfg.Name == "" {
		host, _ := os.Hostname()
		n.cfg.Name = host + "/" + actor.String()[:8]
	}
	n.tr.self.Name = n.cfg.Name
	meta := &wirev1.NodeMeta{Actor: actor[:], Cluster: cfg.Cluster, Region: cfg.Region, QuicAddr: n.tr.addr(), ApiAddr: cfg.APIAddr, GrpcAddr: cfg.GRPCAddr}
	if n.ms, err = newMembership(&n.cfg, meta, faults); err != nil {
		n.tr.close()
		return nil, fmt.Errorf("cluster: %w", err)
	}
	ctx, n.cancel = context.WithCancel(context.WithoutCancel(ctx))
	n.spawn(func() { n.tr.run(ctx) })
	n.spawn(func() { n.ms.joinLoop(ctx, cfg.Bootstrap, n.log.Warn) })
	rejoinRnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(actor[1])))
	n.spawn(func() { n.ms.rejoinLoop(ctx, n.cfg.RejoinInterval, cfg.Bootstrap, rejoinRnd.IntN, n.log) })
	n.spawn(func() { n.broadcastLoop(ctx) })
	n.spawn(func() { n.applyLoop(ctx) })
	n.spawn(func() { n.syncLoop(ctx) })
	n.spawn(func() { n.retryLoop(ctx) })
	n.spawn(func() { n.connectLoop(ctx) })
	log.Info("cluster member started", "name", n.cfg.Name, "cluster", cfg.Cluster, "gossip", n.ms.addr(), "quic", n.tr.addr())
	return n, nil
}

// advertised replaces an unspecified host in a bound address (0.0.0.0,
// ::) with the host of the gossip address this member advertises.
func advertised(bound, gossip string) string {
	host, port, err := net.SplitHostPort(bound)
	if err != nil {
		return bound
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		if gh, _, err := net.SplitHostPort(gossip); err == nil {
			host = gh
		}
	}
	return net.JoinHostPort(host, port)
}

func (n *Node) spawn(fn func()) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		fn()
	}()
}

// Connections counts the data-plane connections this member dialed that
// are open (see connectLoop).
func (n *Node) Connections() int { return n.tr.open() }

// Name is this member's name.
func (n *Node) Name() string { return n.cfg.Name }

// GossipAddr is the address other members join through.
func (n *Node) GossipAddr() string { return n.ms.addr() }

// QUICAddr is the data plane's address.
func (n *Node) QUICAddr() string { return n.tr.addr() }

// Members lists the cluster as this member sees it, itself included.
func (n *Node) Members() []Member { return n.members() }

// members is memberlist's view with the data plane's evidence folded in.
// memberlist keeps its own suspicion to itself: it reports a member alive
// until it declares it dead, which takes seconds to a minute (longer in
// large clusters, and while too few others confirm the suspicion). So a member memberlist
// holds alive is suspect here while this member cannot reach it: its
// connection was lost and the last dial failed (connectLoop dials again
// every connectEvery, and a dial that succeeds clears it). Nothing is
// broadcast to a suspect member, and no sync is started with it.
func (n *Node) members() []Member {
	ms := n.ms.members()
	for i, m := range ms {
		if m.State == "alive" && m.Name != n.cfg.Name && m.QUICAddr != "" && n.tr.unreachable(m.QUICAddr) {
			ms[i].State, ms[i].Alive = "suspect", false
		}
	}
	return ms
}

// MemberStates counts members by state (members that left gracefully are
// in none).
func (n *Node) MemberStates() (alive, suspect, dead int) {
	for _, m := range n.members() {
		switch m.State {
		case "alive":
			alive++
		case "suspect":
			suspect++
		case "dead":
			dead++
		}
	}
	return alive, suspect, dead
}

// QueueSize is the number of changesets waiting to be broadcast.
func (n *Node) QueueSize() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.queue.len()
}

// P99Lag is the 99th percentile of the last replication lags measured
// here: the writer's commit to this member's apply, for versions that came
// by broadcast. It compares two hosts' wall clocks, so it is only as
// good as their synchronization.
func (n *Node) P99Lag() time.Duration {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lag.p99()
}

// Close leaves the cluster and stops every goroutine.
func (n *Node) Close() error {
	n.cancel()
	err := n.ms.leave(time.Second)
	n.tr.close()
	n.wg.Wait()
	n.sends.Wait()
	return err
}

// Committed announces a local version: it goes out with the next batch.
func (n *Node) Committed(cs *crdt.Changeset) {
	n.recent.saw(cs.Actor, cs.Version, time.Now())
	n.mu.Lock()
	n.seen.see(cs.Actor, cs.Version)
	if !n.queue.push(queued{cs: cs, committed: time.Now().UnixNano()}) {
		n.Stats.QueueDropped.Add(1)
	}
	n.mu.Unlock()
	n.poke()
}

func (n *Node) poke() {
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// maxBatch is how many changesets one broadcast message carries at most.
const maxBatch = 128

func (n *Node) broadcastLoop(ctx context.Context) {
	beat := n.cfg.Watchdog.Register("cluster.broadcast")
	defer beat.Stop()
	for watchdog.Wait(ctx, beat, n.wake) {
		// No fixed wait when idle: what committed while the previous batch
		// was on the wire forms the next batch. Under load a short wait
		// lets more join.
		if n.QueueSize() > 1 && n.cfg.BatchDelay > 0 {
			select {
			case <-ctx.Done():
				return
			case <-time.After(n.cfg.BatchDelay):
			}
		}
		for {
			n.mu.Lock()
			batch := n.queue.pop(maxBatch)
			n.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			n.send(ctx, batch)
			beat.Tick()
		}
	}
}

// send gives every changeset of the batch to Fanout random alive members,
// one message per member.
func (n *Node) send(ctx context.Context, batch []queued) {
	members := n.members()
	fanout := EffectiveFanout(n.cfg.Fanout, n.cfg.DirectLimit, len(members))
	// Encode each changeset once, in parts if it is larger than a
	// message (see splitWire).
	wires := map[*crdt.Changeset][]*wirev1.Changeset{}
	kept := batch[:0]
	for _, q := range batch {
		parts, _, err := splitWire(toWire(q.cs, q.hops, false, q.committed), partBudget)
		if err != nil {
			n.log.Error("version not broadcast", "actor", q.cs.Actor, "version", q.cs.Version, "err", err)
			continue
		}
		wires[q.cs] = parts
		kept = append(kept, q)
	}
	batch = kept
	perTarget := map[string]*wirev1.Broadcast{}
	targets := map[string]Member{}
	n.mu.Lock()
	for _, q := range batch {
		skip := func(m Member) bool { return q.from != "" && (m.Name == q.from || m.Actor == q.cs.Actor) }
		for _, m := range pickTargets(members, n.cfg.Name, fanout, n.rnd, skip) {
			b := perTarget[m.Name]
			if b == nil {
				b = &wirev1.Broadcast{}
				perTarget[m.Name] = b
				targets[m.Name] = m
			}
			b.Changesets = append(b.Changesets, wires[q.cs]...)
		}
	}
	n.mu.Unlock()
	// lost marks a message's versions as not delivered, so that sync
	// does not leave them out (see recentVersions).
	lost := func(b *wirev1.Broadcast) {
		now := time.Now()
		for _, w := range b.Changesets {
			if a, err := crdt.ActorIDFromBytes(w.GetActor()); err == nil {
				n.recent.lost(a, w.GetVersion(), now)
			}
		}
	}
	// A suspect member gets none of the batch: sync is not to leave the
	// batch out for it as versions on their way (see recentVersions).
	for _, m := range members {
		if m.State == "suspect" {
			now := time.Now()
			for _, q := range batch {
				n.recent.lost(q.cs.Actor, q.cs.Version, now)
			}
			break
		}
	}
	for name, b := range perTarget {
		m := targets[name]
		n.faults.tried(n.cfg.Name, m.Name)
		ok, delay := n.faults.allow(n.cfg.Name, m.Name, true)
		if !ok {
			n.Stats.BroadcastFailures.Add(1)
			lost(b)
			continue
		}
		// A message QUIC can queue at once goes from here: most do, and
		// a goroutine per member and message costs more than the send.
		if delay == 0 && n.tr.tryBroadcast(m.QUICAddr, b) {
			n.Stats.BroadcastsSent.Add(1)
			n.Stats.ChangesetsSent.Add(versionsIn(b.Changesets))
			continue
		}
		// Other sends run on their own: a slow or unreachable member
		// delays only its own messages. It gets a few in flight at most;
		// beyond that its share is dropped and sync repairs it.
		if !n.acquireSend(m.Name) {
			n.Stats.BroadcastFailures.Add(1)
			lost(b)
			continue
		}
		n.sends.Add(1)
		go func() {
			defer n.sends.Done()
			defer n.releaseSend(m.Name)
			if delay > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(delay):
				}
			}
			for _, part := range splitBroadcast(b, maxPart) {
				if err := n.tr.sendBroadcast(ctx, m.QUICAddr, part); err != nil {
					n.Stats.BroadcastFailures.Add(1)
					lost(b)
					n.log.Debug("broadcast failed", "to", m.Name, "err", err)
					return
				}
				n.Stats.BroadcastsSent.Add(1)
				n.Stats.ChangesetsSent.Add(versionsIn(part.Changesets))
			}
		}()
	}
}

// joinPart keeps one part of a version that came by broadcast and
// returns the whole version once its last part is here, else nil.
func (n *Node) joinPart(from string, w *wirev1.Changeset) *wirev1.Changeset {
	if a, err := crdt.ActorIDFromBytes(w.GetActor()); err == nil && n.st.Knows(a, w.GetVersion()) {
		if w.GetPart() == 0 {
			n.Stats.Duplicates.Add(1)
		}
		return nil
	}
	n.partsMu.Lock()
	whole, err := n.parts.add(from, w, time.Now())
	n.partsMu.Unlock()
	if err != nil {
		n.Stats.Invalid.Add(1)
		n.log.Debug("invalid part of a version", "from", from, "err", err)
	}
	return whole
}

// versionsIn counts the versions among changesets, a version sent in
// parts once.
func versionsIn(ws []*wirev1.Changeset) uint64 {
	var k uint64
	for _, w := range ws {
		if wholeVersion(w) {
			k++
		}
	}
	return k
}

// maxInFlight bounds the broadcast messages on their way to one member.
const maxInFlight = 8

func (n *Node) acquireSend(member string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.inFlight[member] >= maxInFlight {
		return false
	}
	n.inFlight[member]++
	return true
}

func (n *Node) releaseSend(member string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.inFlight[member]--
}

// inboxLimit bounds received changesets waiting to be applied; beyond
// it they are dropped and sync brings them.
const inboxLimit = 50_000

// handleBroadcast keeps what is new in a broadcast for the apply loop,
// which applies everything waiting in one transaction.
func (n *Node) handleBroadcast(ctx context.Context, from string, b *wirev1.Broadcast) {
	var fresh []queued
	for _, w := range b.GetChangesets() {
		if w.GetParts() > 1 {
			if w = n.joinPart(from, w); w == nil {
				continue
			}
		}
		n.Stats.Received.Add(1)
		cs, err := fromWire(w)
		if err != nil {
			n.Stats.Invalid.Add(1)
			n.log.Debug("invalid changeset", "from", from, "err", err)
			continue
		}
		if n.st.Knows(cs.Actor, cs.Version) {
			n.Stats.Duplicates.Add(1)
			continue
		}
		fresh = append(fresh, queued{cs: cs, hops: w.GetHops(), committed: w.GetCommittedUnixNano(), from: from})
		n.recent.saw(cs.Actor, cs.Version, time.Now())
	}
	if len(fresh) == 0 {
		return
	}
	n.mu.Lock()
	for _, f := range fresh {
		if n.seen.has(f.cs.Actor, f.cs.Version) {
			n.Stats.Duplicates.Add(1)
			continue
		}
		// Dropped, it is not seen: a later copy is taken, and relayed.
		if len(n.inbox) >= inboxLimit {
			n.Stats.QueueDropped.Add(1)
			continue
		}
		n.seen.see(f.cs.Actor, f.cs.Version)
		n.inbox = append(n.inbox, f)
		n.pending[versionKey{f.cs.Actor, f.cs.Version}] = struct{}{}
	}
	n.mu.Unlock()
	select {
	case n.applyWake <- struct{}{}:
	default:
	}
}

// applyLoop applies received changesets, as many as are waiting at once,
// and queues for relay those that applied, once, while their hop count
// allows.
func (n *Node) applyLoop(ctx context.Context) {
	beat := n.cfg.Watchdog.Register("cluster.apply")
	defer beat.Stop()
	for watchdog.Wait(ctx, beat, n.applyWake) {
		for {
			beat.Tick()
			n.faults.stallApply(ctx)
			// Yield once before taking the inbox. The receiver that woke
			// this loop handed it the processor next, so without this it
			// would apply that one changeset while other receivers sit
			// runnable with theirs: a transaction each. After the yield
			// they have run and their changesets join this batch; with
			// nothing else runnable the yield costs nothing. (Ten members
			// in one process at 1,000 writes/s: a tenth less CPU, a third
			// off the p99.)
			runtime.Gosched()
			n.mu.Lock()
			batch := n.inbox
			n.inbox = nil
			n.mu.Unlock()
			if len(batch) == 0 {
				break
			}
			css := make([]*crdt.Changeset, len(batch))
			for i, f := range batch {
				css[i] = f.cs
			}
			failed := n.apply(ctx, css)
			members := n.ms.count()
			limit := uint32(MaxTransmissions(n.cfg.TransmitMult, members))
			relay := needsRelay(EffectiveFanout(n.cfg.Fanout, n.cfg.DirectLimit, members), members)
			now := time.Now().UnixNano()
			n.mu.Lock()
			for _, f := range batch {
				delete(n.pending, versionKey{f.cs.Actor, f.cs.Version})
				if failed[versionKey{f.cs.Actor, f.cs.Version}] {
					continue // retried locally, never relayed
				}
				if f.committed > 0 && now > f.committed {
					lag := time.Duration(now - f.committed)
					n.lag.add(lag)
					if n.cfg.OnLag != nil {
						n.cfg.OnLag(lag)
					}
				}
				// hops comes from the wire: compared so that it cannot wrap.
				if relay && f.hops < limit-1 {
					f.hops++
					if !n.queue.push(f) {
						n.Stats.QueueDropped.Add(1)
					}
				}
			}
			n.mu.Unlock()
			n.poke()
		}
	}
}

// apply applies changesets and keeps the ones that failed for local
// retry; it returns them.
func (n *Node) apply(ctx context.Context, css []*crdt.Changeset) map[versionKey]bool {
	failed := map[versionKey]bool{}
	res, err := n.st.Apply(ctx, css)
	if err == nil {
		n.Stats.Applied.Add(uint64(res.Applied))
	}
	if err != nil {
		n.log.Warn("apply failed", "changesets", len(css), "err", err)
		for _, cs := range css {
			failed[versionKey{cs.Actor, cs.Version}] = true
		}
	}
	var refused map[versionKey]bool // nil while none is
	for _, e := range res.Failed {
		var ae *store.ApplyError
		if errors.As(e, &ae) {
			k := versionKey{ae.Actor, ae.Version}
			failed[k] = true
			if errors.Is(e, store.ErrRefused) {
				// Never retried here, and never relayed (it failed).
				// Sync brings it again every round, so the warning is
				// given once a minute.
				if refused == nil {
					refused = map[versionKey]bool{}
				}
				refused[k] = true
				n.Stats.Refused.Add(1)
				lvl := slog.LevelDebug
				if n.refusedLog == nil || n.refusedLog.Allow() {
					lvl = slog.LevelWarn
				}
				n.log.Log(ctx, lvl, "version refused", "err", e, "refused_so_far", n.Stats.Refused.Load())
				continue
			}
			n.log.Debug("version not applied, will retry", "err", e)
		}
	}
	if len(failed) == 0 {
		return failed
	}
	n.Stats.ApplyFailures.Add(uint64(len(failed)))
	n.mu.Lock()
	for _, cs := range css {
		k := versionKey{cs.Actor, cs.Version}
		if failed[k] && !refused[k] && len(n.failed) < maxFailed {
			n.failed[k] = cs
		}
	}
	n.mu.Unlock()
	return failed
}

// retryLoop re-applies versions that failed, on this node only.
func (n *Node) retryLoop(ctx context.Context) {
	t := time.NewTicker(n.cfg.RetryInterval)
	defer t.Stop()
	beat := n.cfg.Watchdog.Register("cluster.retry")
	defer beat.Stop()
	for watchdog.Wait(ctx, beat, t.C) {
		// The store is asked with n.mu released: it answers only between
		// its transactions, and an apply holds it for a whole batch.
		n.mu.Lock()
		actors := n.seen.actorIDs()
		failed := n.failed
		n.failed = map[versionKey]*crdt.Changeset{}
		n.mu.Unlock()
		// Versions the store knows are checked there first; the seen set
		// needs only what lies above each actor's known prefix. A prefix
		// only grows, so one read before the lock is retaken is safe.
		prefixes := make(map[crdt.ActorID]uint64, len(actors))
		for _, a := range actors {
			prefixes[a] = n.st.KnownPrefix(a)
		}
		var css []*crdt.Changeset
		for k, cs := range failed {
			if !n.st.Knows(k.actor, k.version) {
				css = append(css, cs)
			}
		}
		n.mu.Lock()
		n.seen.prune(func(a crdt.ActorID) uint64 { return prefixes[a] })
		n.mu.Unlock()
		if len(css) > 0 {
			n.apply(ctx, css)
		}
	}
}

func (n *Node) syncLoop(ctx context.Context) {
	beat := n.cfg.Watchdog.Register("cluster.sync")
	defer beat.Stop()
	// The first round comes as soon as there is a peer: a member that was
	// down has the most to catch up right when it starts.
	next := time.NewTimer(100 * time.Millisecond)
	defer next.Stop()
	for watchdog.Wait(ctx, beat, next.C) {
		next.Reset(n.syncRound(ctx, beat))
	}
}

// syncRound pulls from a few random peers and returns how long to wait
// before the next round.
func (n *Node) syncRound(ctx context.Context, beat *watchdog.Beat) time.Duration {
	if alive, _, _ := n.MemberStates(); alive < 2 {
		return 100 * time.Millisecond // alone so far: look again soon
	}
	n.mu.Lock()
	peers := pickTargets(n.members(), n.cfg.Name, n.cfg.SyncPeers, n.rnd, nil)
	n.mu.Unlock()
	for _, p := range peers {
		// A round that hit the exchange limit means more is waiting:
		// keep pulling from that peer without waiting for the interval.
		for {
			pulled, failed := n.Stats.SyncPulled.Load(), n.Stats.ApplyFailures.Load()
			if err := n.syncWith(ctx, p, beat.Tick); err != nil {
				n.log.Debug("sync failed", "peer", p.Name, "err", err)
				break
			}
			got := n.Stats.SyncPulled.Load() - pulled
			applied := got - min(got, n.Stats.ApplyFailures.Load()-failed)
			// Again at once only if the exchange was full and moved this
			// member forward: versions that keep failing must not spin.
			if got < uint64(n.cfg.SyncMaxVersions) || applied == 0 || ctx.Err() != nil {
				break
			}
		}
	}
	return n.cfg.SyncInterval + time.Duration(n.rndInt64(int64(n.cfg.SyncInterval)/2)) - n.cfg.SyncInterval/4
}

func (n *Node) rndInt64(max int64) int64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	if max <= 0 {
		return 0
	}
	return n.rnd.Int64N(max)
}

// syncState is this node's bookkeeping as a peer reads it: per actor the
// head and the gaps below it. A peer refuses a state with more than
// maxGaps gaps, so beyond that maxGaps of them are listed: the peer then
// takes the others for versions this node has, and leaves them out. Which
// ones turns with round: round 0 lists the newest maxGaps (by version,
// across actors), round 1 the next ones, and so on around, so that every
// gap is asked for within a few rounds, even when some can never be
// filled (versions a faulty peer made up, which exist nowhere): listing
// the newest alone would then ask for those forever and never for the
// others.
func syncState(b *crdt.Bookkeeping, maxGaps int, round uint64) *wirev1.SyncState {
	type gap struct {
		av *wirev1.ActorVersions
		r  crdt.Range
	}
	var all []gap
	s := &wirev1.SyncState{}
	for _, a := range b.Actors() {
		av := &wirev1.ActorVersions{Actor: append([]byte(nil), a[:]...), Head: b.Head(a)}
		for _, g := range b.Gaps(a) {
			all = append(all, gap{av, g})
		}
		s.Actors = append(s.Actors, av)
	}
	if len(all) > maxGaps {
		// Newest first across actors, then this round's window of them.
		slices.SortStableFunc(all, func(x, y gap) int { return cmp.Compare(y.r.End, x.r.End) })
		windows := uint64((len(all) + maxGaps - 1) / maxGaps)
		start := int(round%windows) * maxGaps
		window := append([]gap(nil), all[start:min(start+maxGaps, len(all))]...)
		// The last window is short: filled from the newest.
		window = append(window, all[:maxGaps-len(window)]...)
		all = window
		slices.SortStableFunc(all, func(x, y gap) int { return cmp.Compare(x.r.Start, y.r.Start) })
	}
	for _, g := range all {
		g.av.Gaps = append(g.av.Gaps, &wirev1.Range{Start: g.r.Start, End: g.r.End})
	}
	return s
}

// SyncWith pulls from peer every version it has and this node lacks.
func (n *Node) SyncWith(ctx context.Context, peer Member) error {
	return n.syncWith(ctx, peer, func() {})
}

// syncWith is SyncWith calling progress after each chunk it applies.
func (n *Node) syncWith(ctx context.Context, peer Member, progress func()) error {
	n.faults.tried(n.cfg.Name, peer.Name)
	if ok, _ := n.faults.allow(n.cfg.Name, peer.Name, false); !ok {
		return fmt.Errorf("sync with %s: cut off", peer.Name)
	}
	n.Stats.SyncRounds.Add(1)
	// Versions waiting in the inbox count as known: they apply here in a
	// moment, and asking for them would have the peer read, encode and
	// send them for nothing (under a write burst, a tenth of the
	// cluster's CPU). One that then fails to apply is retried locally,
	// and once off the inbox it is a gap like any other.
	book := n.st.Bookkeeping()
	n.mu.Lock()
	for k := range n.pending {
		book.MarkKnown(k.actor, k.version)
	}
	n.mu.Unlock()
	// A version in parts comes as consecutive parts of this exchange.
	parts := newAssembler(maxVersionBytes)
	state := syncState(book, maxSyncGaps, n.Stats.SyncRounds.Load())
	state.VersionParts = true
	return n.tr.sync(ctx, peer.QUICAddr, state, n.cfg.SyncMaxVersions, func(c *wirev1.SyncChunk) error {
		var css []*crdt.Changeset
		for _, w := range c.GetChangesets() {
			if w.GetParts() > 1 {
				whole, err := parts.add(peer.Name, w, time.Now())
				if err != nil {
					n.Stats.Invalid.Add(1)
					return fmt.Errorf("sync with %s: %w", peer.Name, err)
				}
				if whole == nil {
					continue
				}
				w = whole
			}
			cs, err := fromWire(w)
			if err != nil {
				n.Stats.Invalid.Add(1)
				continue
			}
			css = append(css, cs)
		}
		if len(css) > 0 {
			n.Stats.SyncPulled.Add(uint64(len(css)))
			n.apply(ctx, css)
		}
		progress()
		return nil
	})
}

// syncChunkSize bounds the changesets of one sync chunk (and its bytes
// stay under maxPart), and the versions one read of the store takes.
const syncChunkSize = 256

// syncReadChanges is about how many changes one read of the store takes
// when serving sync. A read starts at a few versions, so that the first
// chunk leaves soon even when versions are large (the requester waits
// ioTimeout for each frame); it takes twice as many versions while reads
// stay small, and half as many after a large one.
const (
	syncReadChanges = 32_768
	syncReadFirst   = 16
)

// Bounds on what one sync request may describe.
const (
	maxSyncActors = store.MaxActors // a store records no more
	maxSyncGaps   = 200_000
)

// handleSync streams to a peer what it lacks, newest versions first.
func (n *Node) handleSync(ctx context.Context, from string, state *wirev1.SyncState, send func(*wirev1.SyncChunk) error) error {
	select {
	case n.serving <- struct{}{}:
		defer func() { <-n.serving }()
	default:
		n.Stats.SyncRefused.Add(1)
		return send(&wirev1.SyncChunk{Done: true})
	}
	if ok, _ := n.faults.allow(n.cfg.Name, from, false); !ok {
		return send(&wirev1.SyncChunk{Done: true})
	}
	// Bound the work a request can ask for before doing any of it.
	if len(state.GetActors()) > maxSyncActors {
		return fmt.Errorf("sync state from %s: %d actors, above %d", from, len(state.GetActors()), maxSyncActors)
	}
	gapCount := 0
	for _, av := range state.GetActors() {
		gapCount += len(av.GetGaps())
	}
	if gapCount > maxSyncGaps {
		return fmt.Errorf("sync state from %s: %d gaps, above %d", from, gapCount, maxSyncGaps)
	}
	peer := map[crdt.ActorID]*crdt.RangeSet{}
	for _, av := range state.GetActors() {
		a, err := crdt.ActorIDFromBytes(av.GetActor())
		if err != nil {
			return fmt.Errorf("sync state from %s: %w", from, err)
		}
		gaps := make([]crdt.Range, 0, len(av.GetGaps()))
		for _, g := range av.GetGaps() {
			gaps = append(gaps, crdt.Range{Start: g.GetStart(), End: g.GetEnd()})
		}
		peer[a] = crdt.HeadAndGaps(av.GetHead(), gaps)
	}
	// Recent versions are left out for a requester that most likely has
	// them on their way (see recentVersions), not for one that was no
	// member here when they went out: one just started, joined or back
	// from a partition, which nobody sent them to.
	since, known := n.ms.aliveSince(from)
	fresh := !known || time.Since(since) < 2*recentWindow
	book := n.st.Bookkeeping()
	chunk := &wirev1.SyncChunk{}
	sent, chunkBytes := 0, 0
	span := uint64(syncReadFirst) // versions per read of the store (see syncReadChanges)
	flush := func(done bool) error {
		chunk.Done = done
		err := send(chunk)
		chunk, chunkBytes = &wirev1.SyncChunk{}, 0
		return err
	}
	for _, a := range book.Actors() {
		have := book.Versions(a).Known
		theirs := peer[a]
		if theirs == nil {
			theirs = &crdt.RangeSet{}
		}
		missing := have.Subtract(theirs)
		if skip := n.recent.of(a, time.Now()); skip != nil && len(missing) > 0 && !fresh {
			missing = crdt.RangeSetOf(missing...).Subtract(skip)
		}
		for i := len(missing) - 1; i >= 0; i-- {
			// Newest first, span versions per read.
			for end := missing[i].End; end >= missing[i].Start && end > 0; {
				start := missing[i].Start
				if end-start >= span {
					start = end - span + 1
				}
				if sent >= n.cfg.SyncMaxVersions || ctx.Err() != nil {
					return flush(true)
				}
				vcs, err := n.st.ChangesRange(ctx, a, start, end)
				if err != nil {
					return fmt.Errorf("sync serve %s/%d-%d: %w", a, start, end, err)
				}
				changes := 0
				for _, v := range vcs {
					changes += len(v.Changeset.Changes)
				}
				switch {
				case changes > syncReadChanges && span > 1:
					span /= 2
				case changes < syncReadChanges/2 && span < syncChunkSize:
					span *= 2
				}
				for j := len(vcs) - 1; j >= 0; j-- {
					parts, size, err := splitWire(toWire(vcs[j].Changeset, 0, vcs[j].Cleared, 0), partBudget)
					if err == nil && len(parts) > 1 && !state.GetVersionParts() {
						err = fmt.Errorf("larger than one message, and %s (an earlier release) does not join parts", from)
					}
					if err != nil {
						n.log.Error("version not synced", "actor", a, "version", vcs[j].Changeset.Version, "err", err)
						continue
					}
					for _, w := range parts {
						if len(parts) > 1 {
							size = proto.Size(w)
						}
						if chunkBytes+size > maxPart || len(chunk.Changesets) >= syncChunkSize {
							if err := flush(false); err != nil {
								return err
							}
						}
						chunk.Changesets = append(chunk.Changesets, w)
						chunkBytes += size
					}
					sent++
					n.Stats.SyncServed.Add(1)
				}
				if start == 0 || start == missing[i].Start {
					break
				}
				end = start - 1
			}
		}
	}
	return flush(true)
}

// splitBroadcast cuts a broadcast into messages of at most limit bytes
// (each changeset already fits).
func splitBroadcast(b *wirev1.Broadcast, limit int) []*wirev1.Broadcast {
	var out []*wirev1.Broadcast
	cur, size := &wirev1.Broadcast{}, 0
	for _, cs := range b.Changesets {
		n := proto.Size(cs) + 8
		if size+n > limit && len(cur.Changesets) > 0 {
			out = append(out, cur)
			cur, size = &wirev1.Broadcast{}, 0
		}
		cur.Changesets = append(cur.Changesets, cs)
		size += n
	}
	if len(cur.Changesets) > 0 {
		out = append(out, cur)
	}
	return out
}
