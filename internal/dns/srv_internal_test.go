package dns

import (
	"context"
	"testing"

	miekg "github.com/miekg/dns"

	"github.com/patina-db/patina/internal/locate"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
)

// stoppedLocalLocator: "big" runs in ams (the local region), whose only
// machine is stopped, and in iad, whose machine is healthy.
type stoppedLocalLocator struct{ staticLocator }

func (l *stoppedLocalLocator) Everywhere(ctx context.Context, app string, _ bool) (locate.Answer, error) {
	if app != "big" {
		return locate.Answer{}, locate.ErrUnknownApp
	}
	return locate.Answer{Regions: []locate.RegionMachines{
		{Region: "ams", Machines: []*regionalv1.Machine{{Id: "a1", App: "big", Region: "ams", Address: "10.0.0.1", Port: 80, State: "stopped"}}},
		{Region: "iad", Machines: []*regionalv1.Machine{{Id: "i1", App: "big", Region: "iad", Address: "10.0.1.1", Port: 80, State: "started", Healthy: true}}},
	}}, nil
}

// TestSRVPriorityNearestHealthy: SRV priority 0 is "the nearest region
// with healthy machines" (docs/dns.md): when the local region has none,
// iad is that region, and a region without healthy machines takes no
// priority.
func TestSRVPriorityNearestHealthy(t *testing.T) {
	s := startStatic(t, &stoppedLocalLocator{}, nil)
	req := new(miekg.Msg)
	req.SetQuestion("_http._tcp.big.internal.", miekg.TypeSRV)
	resp := exchange(t, s.Addr(), "udp", req)
	if len(resp.Answer) != 1 {
		t.Fatalf("answer: %v", resp.Answer)
	}
	if srv := resp.Answer[0].(*miekg.SRV); srv.Priority != 0 {
		t.Fatalf("iad's SRV priority is %d, want 0 (the nearest region with healthy machines): %v", srv.Priority, srv)
	}
}
