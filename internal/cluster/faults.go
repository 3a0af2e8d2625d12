package cluster

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Faults injects failures, for tests and benchmarks: dropping a share of
// broadcasts, delaying messages, partitioning the members into groups
// that cannot reach each other (on the data plane and in gossip alike,
// or on the data plane alone), and stalling the apply loop. The zero
// value (and a nil *Faults) injects nothing.
type Faults struct {
	mu        sync.Mutex
	dropRate  float64
	delay     time.Duration
	partition map[string]int // member name → group; members in different groups are cut off
	dataOnly  bool           // the partition leaves gossip alone
	rnd       *rand.Rand
	stall     <-chan struct{}
	messages  map[[2]string]uint64 // (from, to) → data-plane messages tried
}

// Messages counts the data-plane messages from one member to another
// that were tried, let through or not: broadcasts, and sync requests.
func (f *Faults) Messages(from, to string) uint64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.messages[[2]string{from, to}]
}

// tried counts a data-plane message from one member to another.
func (f *Faults) tried(from, to string) {
	if f == nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.messages == nil {
		f.messages = map[[2]string]uint64{}
	}
	f.messages[[2]string{from, to}]++
}

// DropBroadcasts makes a share (0..1) of outgoing broadcast messages vanish.
func (f *Faults) DropBroadcasts(rate float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dropRate = rate
}

// Delay holds every outgoing message for d.
func (f *Faults) Delay(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = d
}

// Partition cuts the named members into groups; members not named are in
// group 0 with each other. Neither data nor gossip crosses between groups.
// Partition() with no groups heals.
func (f *Faults) Partition(groups ...[]string) { f.cut(false, groups) }

// PartitionData cuts the named members into groups as Partition does, on
// the data plane only: broadcasts and syncs do not cross, gossip does, so
// membership keeps every member alive while the cut-off ones fall behind.
func (f *Faults) PartitionData(groups ...[]string) { f.cut(true, groups) }

func (f *Faults) cut(dataOnly bool, groups [][]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dataOnly = dataOnly
	f.partition = map[string]int{}
	for i, g := range groups {
		for _, name := range g {
			f.partition[name] = i + 1
		}
	}
}

// StallApply makes every member's apply loop wait, before it applies what
// it received, until release is closed: a stalled loop, for the
// watchdog. StallApply(nil) removes the stall.
func (f *Faults) StallApply(release <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stall = release
}

// stallApply blocks while an apply stall is in force, or until ctx ends.
func (f *Faults) stallApply(ctx context.Context) {
	if f == nil {
		return
	}
	f.mu.Lock()
	release := f.stall
	f.mu.Unlock()
	if release == nil {
		return
	}
	select {
	case <-release:
	case <-ctx.Done():
	}
}

// allow decides one message from one member to another: whether it may
// go, and after how long.
func (f *Faults) allow(from, to string, broadcast bool) (bool, time.Duration) {
	if f == nil {
		return true, 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.partition[from] != f.partition[to] {
		return false, 0
	}
	if broadcast && f.dropRate > 0 {
		if f.rnd == nil {
			f.rnd = rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
		}
		if f.rnd.Float64() < f.dropRate {
			return false, 0
		}
	}
	return true, f.delay
}

// errPartitioned is what a gossip connection across a partition gets.
var errPartitioned = errors.New("cluster: partitioned (injected fault)")

// gossipTransport is memberlist's own UDP and TCP transport with the
// partition applied: a member drops its packets to, and refuses its
// connections to, members in another group. Both sides doing so cuts
// both directions. memberlist names the member it sends to, except when
// it joins by address; then the member is looked up by address, and one
// not known at all gets through.
type gossipTransport struct {
	*memberlist.NetTransport
	self   string
	faults *Faults
	name   func(gossipAddr string) string // "" when unknown
}

func (g *gossipTransport) cut(to memberlist.Address) bool {
	name := to.Name
	if name == "" {
		name = g.name(to.Addr)
	}
	if name == "" {
		return false
	}
	return g.faults.gossipCut(g.self, name)
}

// gossipCut tells whether a partition keeps gossip from one member from
// reaching another.
func (f *Faults) gossipCut(from, to string) bool {
	if f == nil {
		return false
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.dataOnly && f.partition[from] != f.partition[to]
}

func (g *gossipTransport) WriteToAddress(b []byte, addr memberlist.Address) (time.Time, error) {
	if g.cut(addr) {
		return time.Now(), nil // sent, and lost
	}
	return g.NetTransport.WriteToAddress(b, addr)
}

func (g *gossipTransport) DialAddressTimeout(addr memberlist.Address, timeout time.Duration) (net.Conn, error) {
	if g.cut(addr) {
		return nil, errPartitioned
	}
	return g.NetTransport.DialAddressTimeout(addr, timeout)
}
