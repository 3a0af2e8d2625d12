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

// unaddressedLocator: "web" runs in ams on one healthy machine with no
// address and one with no port, and in iad on a healthy machine with both.
type unaddressedLocator struct{ staticLocator }

func (l *unaddressedLocator) Everywhere(ctx context.Context, app string, _ bool) (locate.Answer, error) {
	if app != "web" {
		return locate.Answer{}, locate.ErrUnknownApp
	}
	return locate.Answer{Regions: []locate.RegionMachines{
		{Region: "ams", Machines: []*regionalv1.Machine{
			{Id: "a1", App: "web", Region: "ams", Address: "", Port: 80, State: "started", Healthy: true},
			{Id: "a2", App: "web", Region: "ams", Address: "10.0.0.2", Port: 0, State: "started", Healthy: true},
		}},
		{Region: "iad", Machines: []*regionalv1.Machine{{Id: "i1", App: "web", Region: "iad", Address: "10.0.1.1", Port: 80, State: "started", Healthy: true}}},
	}}, nil
}

// TestSRVLeavesOutMachinesWithoutAddressOrPort: a machine whose record has
// no address (its target would resolve to nothing) or no port is not an
// SRV answer, and its region takes no priority for it.
func TestSRVLeavesOutMachinesWithoutAddressOrPort(t *testing.T) {
	s := startStatic(t, &unaddressedLocator{}, nil)
	req := new(miekg.Msg)
	req.SetQuestion("_http._tcp.web.internal.", miekg.TypeSRV)
	resp := exchange(t, s.Addr(), "udp", req)
	if len(resp.Answer) != 1 {
		t.Fatalf("answer: %v, want iad's machine alone", resp.Answer)
	}
	if srv := resp.Answer[0].(*miekg.SRV); srv.Target != "i1.vm.web.internal." || srv.Port != 80 || srv.Priority != 0 {
		t.Fatalf("answer %v: want i1 on port 80 at priority 0", srv)
	}
	if len(resp.Extra) != 1 {
		t.Fatalf("extra: %v, want i1's address", resp.Extra)
	}
}
