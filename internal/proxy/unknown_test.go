package proxy

import (
	"context"
	"net"
	"net/http"
	"testing"

	"google.golang.org/grpc"

	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
)

// stoppedLookup is the local region's Lookup: "web" has one machine,
// stopped.
type stoppedLookup struct {
	regionalv1.UnimplementedLookupServer
}

func (stoppedLookup) ListMachines(_ context.Context, req *regionalv1.ListMachinesRequest) (*regionalv1.ListMachinesResponse, error) {
	resp := &regionalv1.ListMachinesResponse{Region: "ams"}
	if req.GetApp() == "web" && !req.GetHealthyOnly() {
		resp.Machines = []*regionalv1.Machine{{Id: "m1", App: "web", Region: "ams", Address: "127.0.0.1", Port: 8080, State: "stopped"}}
	}
	return resp, nil
}

// TestStoppedAppIsNot404: a local-region-only proxy, app web whose only
// machine is stopped. 404 is for an app "neither the global map nor the
// local region knows" (docs/proxy.md); a known app without a healthy
// started machine is 502.
func TestStoppedAppIsNot404(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	regionalv1.RegisterLookupServer(gs, stoppedLookup{})
	go gs.Serve(ln)
	defer gs.Stop()
	p, _ := runLocal(t, ln.Addr().String(), nil, nil)
	if status, body := getWeb(t, p); status != http.StatusBadGateway {
		t.Fatalf("web (known, its machine stopped): %d %q, want 502", status, body)
	}
}
