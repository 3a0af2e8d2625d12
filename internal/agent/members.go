package agent

import (
	"github.com/patina-db/patina/internal/api"
	"github.com/patina-db/patina/internal/cluster"
)

// clusterView gives the API what it shows of the cluster.
type clusterView struct{ n *cluster.Node }

func (v clusterView) Members() []api.Member {
	var out []api.Member
	for _, m := range v.n.Members() {
		out = append(out, api.Member{
			ID: m.Actor.String(), Name: m.Name, Region: m.Region, State: m.State,
			Addrs:  api.MemberAddrs{Gossip: m.GossipAddr, QUIC: m.QUICAddr, API: m.APIAddr, GRPC: m.GRPCAddr},
			RTTSec: m.RTT.Seconds(), Self: m.Name == v.n.Name(),
		})
	}
	return out
}

func (v clusterView) AliveMembers() int {
	alive, _, _ := v.n.MemberStates()
	return alive
}

func (v clusterView) QueueSize() int { return v.n.QueueSize() }

func (v clusterView) P99LagSeconds() float64 { return v.n.P99Lag().Seconds() }

// Stats are the data-plane counters, and "connections", the open
// connections this member dialed.
func (v clusterView) Stats() map[string]uint64 {
	s := v.n.Stats.Snapshot()
	s["connections"] = uint64(v.n.Connections())
	return s
}
