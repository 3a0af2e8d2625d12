package locate_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/patina-db/patina/internal/locate"
	"github.com/patina-db/patina/internal/locate/locatetest"
	globalv1 "github.com/patina-db/patina/proto/patina/global/v1"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
)

// startLookup serves a region whose only app, "web", has one healthy
// machine.
func startLookup(t *testing.T) string {
	return locatetest.Lookup(t, webMachine)
}

var webMachine = locatetest.App("ams", "web",
	&regionalv1.Machine{Id: "m1", App: "web", Region: "ams", Address: "127.0.0.1", Port: 8080, State: "started", Healthy: true})

// TestFailoverPastWedgedAgent: region.lookup lists two agents; the
// first one wedges (a process stopped with SIGSTOP, deadlocked or
// stalled on its disk, or behind a partition: its connection stays up),
// the second is healthy. The call to the first must not take the whole
// timeout: the second answers within it.
func TestFailoverPastWedgedAgent(t *testing.T) {
	var wedged atomic.Bool
	first := locatetest.Lookup(t, func(ctx context.Context, req *regionalv1.ListMachinesRequest) (*regionalv1.ListMachinesResponse, error) {
		if wedged.Load() {
			<-ctx.Done()
			return nil, ctx.Err()
		}
		return webMachine(ctx, req)
	})
	l, err := locate.New(locate.Config{
		Region: "ams", Local: []string{first, startLookup(t)},
		TTL: 20 * time.Millisecond, Timeout: 300 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ctx := context.Background()
	if _, err := l.Machines(ctx, "web", "ams", true); err != nil {
		t.Fatal(err)
	}
	wedged.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	var lastErr error
	for time.Now().Before(deadline) {
		time.Sleep(30 * time.Millisecond) // past the TTL: a fresh lookup
		ms, err := l.Machines(ctx, "web", "ams", true)
		if err == nil && len(ms) == 1 {
			return
		}
		lastErr = err
	}
	t.Fatalf("the healthy second agent was never asked within 5s: %v", lastErr)
}

// directoryWithout is a global map whose directory lists iad and syd but
// not the local region, ams, which GetApp lists with iad.
type directoryWithout struct {
	globalv1.UnimplementedAppMapServer
	iad string // iad's Lookup address
}

func (d directoryWithout) GetApp(_ context.Context, req *globalv1.GetAppRequest) (*globalv1.App, error) {
	return &globalv1.App{Name: req.GetApp(), Regions: []*globalv1.AppRegion{{Region: "ams", MachineCount: 1}, {Region: "iad", MachineCount: 1}}}, nil
}

func (d directoryWithout) ListRegions(context.Context, *globalv1.ListRegionsRequest) (*globalv1.ListRegionsResponse, error) {
	return &globalv1.ListRegionsResponse{Regions: []*globalv1.Region{
		{Name: "iad", Lookup: []string{d.iad}, Latitude: 38.9, Longitude: -77.0},
		{Name: "syd", Latitude: -33.9, Longitude: 151.2},
	}}, nil
}

// TestLocalRegionFirstWhenTheDirectoryLacksIt: the local region is the
// nearest even before its bridge has put it in the directory.
func TestLocalRegionFirstWhenTheDirectoryLacksIt(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	globalv1.RegisterAppMapServer(s, directoryWithout{iad: startLookup(t)})
	go s.Serve(ln)
	defer s.Stop()
	l, err := locate.New(locate.Config{
		Region: "ams", Local: []string{startLookup(t)}, Global: []string{ln.Addr().String()},
		TTL: time.Minute, Timeout: time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ans, err := l.Everywhere(context.Background(), "web", true)
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, r := range ans.Regions {
		order = append(order, r.Region)
	}
	if len(order) != 2 || order[0] != "ams" || order[1] != "iad" {
		t.Fatalf("regions %v, want [ams iad]", order)
	}
}
