package cluster

import (
	"time"

	"github.com/patina-db/patina/internal/crdt"
)

// CrashTransport closes this member's data-plane socket as a crash would:
// no CONNECTION_CLOSE reaches its peers, and gossip goes on.
func (n *Node) CrashTransport() {
	n.tr.udp.Close()
	n.tr.tr.Close()
}

// HoldRecent sets how long this member leaves versions it wrote or
// received by broadcast out of sync (see recentVersions).
func (n *Node) HoldRecent(window time.Duration) {
	n.recent.mu.Lock()
	n.recent.window = window
	n.recent.mu.Unlock()
}

// LeftOutOfSync reports whether sync leaves version v of actor a out for
// now, as one on its way by broadcast.
func (n *Node) LeftOutOfSync(a crdt.ActorID, v uint64) bool {
	rs := n.recent.of(a, time.Now())
	return rs != nil && rs.Contains(v)
}

// RecentWindow is how long a member leaves recent versions out of sync.
const RecentWindow = recentWindow

// Cuts tells whether the faults keep data, and gossip, from one member
// from reaching another.
func (f *Faults) Cuts(from, to string) (data, gossip bool) {
	ok, _ := f.allow(from, to, false)
	return !ok, f.gossipCut(from, to)
}
