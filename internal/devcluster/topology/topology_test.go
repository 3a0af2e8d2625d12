package topology_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/patina-db/patina/internal/devcluster/topology"
	globalv1 "github.com/patina-db/patina/proto/patina/global/v1"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
	"github.com/patina-db/patina/regional/host"
)

// TestTopologyAppMap: a new app's first machine, created on a host in
// syd, makes every global agent's AppMap list syd; destroying it takes
// syd away again. The regional Lookup answers for the machine meanwhile.
func TestTopologyAppMap(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	topo, err := topology.Start(ctx, topology.Options{
		Dir: dir, Regions: []string{"ams", "syd"}, AgentsPerRegion: 2, GlobalAgents: 2,
		Apps: []topology.App{{Name: "web", Machines: map[string]int{"ams": 1, "syd": 1}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := topo.Stop(); err != nil {
			t.Error(err)
		}
	}()

	var e topology.Endpoints
	data, err := os.ReadFile(filepath.Join(dir, "endpoints.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Global.Agents) != 2 || len(e.Regions["syd"].Agents) != 2 || len(e.Regions["syd"].Hosts) != 2 ||
		e.Regions["syd"].Bridge.Name != "syd-bridge" || !slices.Equal(e.Apps, []string{"web"}) || e.Regions["ams"].Agents[0].GRPC == "" {
		t.Fatalf("endpoints.json: %s", data)
	}

	var maps []globalv1.AppMapClient
	for _, a := range e.Global.Agents {
		maps = append(maps, globalv1.NewAppMapClient(dial(t, a.GRPC)))
	}
	regionsOf := func(am globalv1.AppMapClient, app string) []string {
		resp, err := am.GetApp(ctx, &globalv1.GetAppRequest{App: app})
		if status.Code(err) == codes.NotFound {
			return nil
		}
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range resp.GetRegions() {
			out = append(out, r.GetRegion())
		}
		return out
	}
	waitAll := func(what string, cond func(am globalv1.AppMapClient) bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for _, am := range maps {
			for !cond(am) {
				if time.Now().After(deadline) {
					t.Fatalf("%s: not on every global agent within a minute", what)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}
	waitAll("web in ams and syd", func(am globalv1.AppMapClient) bool {
		return slices.Equal(regionsOf(am, "web"), []string{"ams", "syd"})
	})

	syd := topo.Regions[1]
	m, err := syd.Hosts[0].Host.Create(ctx, host.MachineSpec{App: "fresh", Start: true})
	if err != nil {
		t.Fatal(err)
	}
	waitAll("fresh in syd", func(am globalv1.AppMapClient) bool {
		return slices.Equal(regionsOf(am, "fresh"), []string{"syd"})
	})
	// The region's Lookup has it, on every agent.
	for _, a := range e.Regions["syd"].Agents {
		got, err := regionalv1.NewLookupClient(dial(t, a.GRPC)).GetMachine(ctx, &regionalv1.GetMachineRequest{Id: m.ID})
		if err != nil || got.GetApp() != "fresh" || got.GetRegion() != "syd" {
			t.Fatalf("Lookup on %s: %v %v", a.Name, got, err)
		}
	}
	dirResp, err := maps[0].ListRegions(ctx, &globalv1.ListRegionsRequest{})
	if err != nil || len(dirResp.GetRegions()) != 2 || len(dirResp.GetRegions()[1].GetLookup()) != 2 || len(dirResp.GetRegions()[1].GetApi()) != 2 || dirResp.GetRegions()[1].GetBridgeHeartbeat() == 0 {
		t.Fatalf("region directory: %v %v", dirResp, err)
	}

	if _, err := syd.Hosts[0].Host.Destroy(ctx, m.ID); err != nil {
		t.Fatal(err)
	}
	waitAll("fresh gone", func(am globalv1.AppMapClient) bool { return regionsOf(am, "fresh") == nil })
	waitAll("web still in ams and syd", func(am globalv1.AppMapClient) bool {
		return slices.Equal(regionsOf(am, "web"), []string{"ams", "syd"})
	})
}

func dial(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}
