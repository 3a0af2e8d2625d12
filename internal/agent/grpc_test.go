package agent_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/cluster"
	"github.com/patina-db/patina/internal/rpc"
	"github.com/patina-db/patina/internal/store"
	globalv1 "github.com/patina-db/patina/proto/patina/global/v1"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
	"github.com/patina-db/patina/regional"
)

// startTierAgent runs a lone agent with a tier's schema and gRPC on.
func startTierAgent(t *testing.T, tier, extra string) *agent.Agent {
	t.Helper()
	a, stop := runTierAgent(t, tier, "", extra)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Error(err)
		}
	})
	return a
}

// runTierAgent runs an agent of the tier's schema, with apiExtra in its
// [api] section and extra after its [grpc] one; stop ends it and returns
// what Run returned.
func runTierAgent(t *testing.T, tier, apiExtra, extra string) (a *agent.Agent, stop func() error) {
	t.Helper()
	dir := t.TempDir()
	wd, _ := os.Getwd()
	cfg, err := agent.ParseConfig(fmt.Sprintf(`
[db]
path = %q
schema_paths = [%q]
[gossip]
region = "ams"
[api]
addr = "127.0.0.1:0"
%s
[grpc]
addr = "127.0.0.1:0"
%s`, filepath.Join(dir, "patina.db"), filepath.Join(wd, "..", "..", "schemas", tier), apiExtra, extra), "test")
	if err != nil {
		t.Fatal(err)
	}
	a, err = agent.New(context.Background(), cfg, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	var runErr error
	stop = func() error {
		once.Do(func() { cancel(); runErr = <-done })
		return runErr
	}
	t.Cleanup(func() { _ = stop() })
	return a, stop
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

// reflectedServices lists the services a server offers through
// reflection, as grpcurl does.
func reflectedServices(ctx context.Context, t *testing.T, cc *grpc.ClientConn) []string {
	t.Helper()
	stream, err := reflectionpb.NewServerReflectionClient(cc).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	stream.CloseSend()
	return names
}

func write(t *testing.T, a *agent.Agent, stmts ...store.Statement) {
	t.Helper()
	if _, err := a.Store().Transact(context.Background(), stmts); err != nil {
		t.Fatal(err)
	}
}

func publish(t *testing.T, a *agent.Agent, m regional.Machine) {
	t.Helper()
	var ss []store.Statement
	for _, s := range regional.Publish(&m) {
		ss = append(ss, store.Statement{SQL: s.Query, Args: s.Params})
	}
	write(t, a, ss...)
}

func machine(id, app, state string, checks ...string) regional.Machine {
	m := regional.Machine{V: regional.RecordVersion, ID: id, App: app, Region: "ams", Host: "h1", Address: "127.0.0.1", Port: 8000, State: state, UpdatedAt: 1}
	for i, st := range checks {
		m.Checks = append(m.Checks, regional.Check{Name: fmt.Sprintf("c%d", i), Kind: "tcp", Status: st, UpdatedAt: 1})
	}
	return m
}

func TestLookupOverGRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := startTierAgent(t, "regional", "")
	cc := dial(t, a.GRPCAddr())
	if got := reflectedServices(ctx, t, cc); !slices.Contains(got, "patina.regional.v1.Lookup") || !slices.Contains(got, "grpc.health.v1.Health") || slices.Contains(got, "patina.global.v1.AppMap") {
		t.Fatalf("reflection lists %v", got)
	}
	hr, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: "patina.regional.v1.Lookup"})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hr, err)
	}

	publish(t, a, machine("m1", "web", regional.StateStarted, regional.CheckPassing))
	publish(t, a, machine("m2", "web", regional.StateStarted, regional.CheckPassing, regional.CheckCritical))
	publish(t, a, machine("m3", "web", regional.StateStopped))
	publish(t, a, machine("m4", "api", regional.StateStarted))

	lc := regionalv1.NewLookupClient(cc)
	all, err := lc.ListMachines(ctx, &regionalv1.ListMachinesRequest{App: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if ids := machineIDs(all.GetMachines()); !slices.Equal(ids, []string{"m1", "m2", "m3"}) || all.GetRegion() != "ams" {
		t.Fatalf("web machines %v in %q", ids, all.GetRegion())
	}
	if m := all.GetMachines()[1]; len(m.GetChecks()) != 2 || m.GetHealthy() || m.GetPort() != 8000 {
		t.Fatalf("m2 as listed: %v", m)
	}
	healthy, err := lc.ListMachines(ctx, &regionalv1.ListMachinesRequest{App: "web", HealthyOnly: true})
	if err != nil || !slices.Equal(machineIDs(healthy.GetMachines()), []string{"m1"}) {
		t.Fatalf("healthy web machines: %v %v", healthy, err)
	}
	limited, err := lc.ListMachines(ctx, &regionalv1.ListMachinesRequest{App: "web", Limit: 2})
	if err != nil || len(limited.GetMachines()) != 2 {
		t.Fatalf("limit 2: %v %v", limited, err)
	}
	if m, err := lc.GetMachine(ctx, &regionalv1.GetMachineRequest{Id: "m4"}); err != nil || m.GetApp() != "api" || !m.GetHealthy() {
		t.Fatalf("GetMachine m4: %v %v", m, err)
	}
	if _, err := lc.GetMachine(ctx, &regionalv1.GetMachineRequest{Id: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown machine: %v", err)
	}
	if _, err := lc.ListMachines(ctx, &regionalv1.ListMachinesRequest{App: "Not An App"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad app: %v", err)
	}

	// WatchApp: the machines, READY, then each change whole.
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	w, err := lc.WatchApp(wctx, &regionalv1.WatchAppRequest{App: "web"})
	if err != nil {
		t.Fatal(err)
	}
	var first []string
	for {
		ev, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetKind() == regionalv1.WatchAppEvent_KIND_READY {
			break
		}
		first = append(first, ev.GetMachine().GetId())
	}
	if !slices.Equal(first, []string{"m1", "m2", "m3"}) {
		t.Fatalf("watch started with %v", first)
	}
	m2 := machine("m2", "web", regional.StateStarted, regional.CheckPassing, regional.CheckPassing)
	publish(t, a, m2)
	ev := recvNot(t, w, "")
	if ev.GetKind() != regionalv1.WatchAppEvent_KIND_UPSERT || ev.GetMachine().GetId() != "m2" || !ev.GetMachine().GetHealthy() {
		t.Fatalf("after m2's check passed: %v", ev)
	}
	write(t, a, store.Statement{SQL: "DELETE FROM machine_checks WHERE machine_id = 'm3'"}, store.Statement{SQL: "DELETE FROM machines WHERE id = 'm3'"})
	if ev := recvNot(t, w, "m2"); ev.GetKind() != regionalv1.WatchAppEvent_KIND_DELETE || ev.GetMachine().GetId() != "m3" {
		t.Fatalf("after m3 was destroyed: %v", ev)
	}
	// A machine of another app does not show.
	publish(t, a, machine("m5", "api", regional.StateStarted))
	publish(t, a, machine("m6", "web", regional.StateCreated))
	if ev := recvNot(t, w, "m2"); ev.GetMachine().GetId() != "m6" {
		t.Fatalf("expected m6 next, got %v", ev)
	}
}

// recvNot returns the next event not about machine skip (a repeat of an
// UPSERT already seen is allowed).
func recvNot(t *testing.T, w regionalv1.Lookup_WatchAppClient, skip string) *regionalv1.WatchAppEvent {
	t.Helper()
	for {
		ev, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if skip == "" || ev.GetMachine().GetId() != skip {
			return ev
		}
	}
}

func machineIDs(ms []*regionalv1.Machine) []string {
	var ids []string
	for _, m := range ms {
		ids = append(ids, m.GetId())
	}
	return ids
}

func TestAppMapOverGRPC(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := startTierAgent(t, "global", `bearer_token = "s3cret"`)
	cc := dial(t, a.GRPCAddr())
	am := globalv1.NewAppMapClient(cc)
	if _, err := am.ListRegions(ctx, &globalv1.ListRegionsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("without the token: %v", err)
	}
	// Health checks need no token, so load balancers can probe.
	if _, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatalf("health without a token: %v", err)
	}
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer s3cret")
	if got := reflectedServices(ctx, t, cc); !slices.Contains(got, "patina.global.v1.AppMap") || slices.Contains(got, "patina.regional.v1.Lookup") {
		t.Fatalf("reflection lists %v", got)
	}
	var stmts []store.Statement
	for i := range 250 {
		app := fmt.Sprintf("app%03d", i)
		stmts = append(stmts, store.Statement{SQL: "INSERT INTO app_regions VALUES (?, 'ams', 3, 2, 7)", Args: []any{app}})
		if i%2 == 0 {
			stmts = append(stmts, store.Statement{SQL: "INSERT INTO app_regions VALUES (?, 'syd', 1, 1, 8)", Args: []any{app}})
		}
	}
	stmts = append(stmts,
		store.Statement{SQL: `INSERT INTO regions (name, lookup, api, latitude, longitude, bridge_heartbeat) VALUES ('ams', '["127.0.0.1:1","127.0.0.1:2"]', '["http://127.0.0.1:3"]', 52.37, 4.9, 99)`},
		store.Statement{SQL: `INSERT INTO regions (name, lookup, latitude, longitude, bridge_heartbeat) VALUES ('syd', 'not json', -33.87, 151.2, 0)`})
	write(t, a, stmts...)

	app, err := am.GetApp(ctx, &globalv1.GetAppRequest{App: "app004"})
	if err != nil || len(app.GetRegions()) != 2 || app.GetRegions()[0].GetRegion() != "ams" || app.GetRegions()[0].GetHealthyCount() != 2 || app.GetRegions()[1].GetRegion() != "syd" {
		t.Fatalf("GetApp app004: %v %v", app, err)
	}
	if _, err := am.GetApp(ctx, &globalv1.GetAppRequest{App: "nope"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown app: %v", err)
	}
	var names []string
	tok := ""
	for pages := 0; ; pages++ {
		resp, err := am.ListApps(ctx, &globalv1.ListAppsRequest{PageSize: 100, PageToken: tok})
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range resp.GetApps() {
			names = append(names, a.GetName())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			if pages != 2 {
				t.Fatalf("%d pages, want 3", pages+1)
			}
			break
		}
	}
	if len(names) != 250 || !slices.IsSorted(names) || names[0] != "app000" || names[249] != "app249" {
		t.Fatalf("ListApps gave %d names", len(names))
	}
	if _, err := am.ListApps(ctx, &globalv1.ListAppsRequest{PageToken: "!!"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("bad page token: %v", err)
	}
	regions, err := am.ListRegions(ctx, &globalv1.ListRegionsRequest{})
	if err != nil || len(regions.GetRegions()) != 2 {
		t.Fatalf("ListRegions: %v %v", regions, err)
	}
	ams, syd := regions.GetRegions()[0], regions.GetRegions()[1]
	if ams.GetName() != "ams" || !slices.Equal(ams.GetLookup(), []string{"127.0.0.1:1", "127.0.0.1:2"}) || ams.GetBridgeHeartbeat() != 99 || ams.GetLatitude() != 52.37 || !slices.Equal(ams.GetApi(), []string{"http://127.0.0.1:3"}) {
		t.Fatalf("ams: %v", ams)
	}
	if syd.GetName() != "syd" || len(syd.GetLookup()) != 0 || syd.GetLongitude() != 151.2 {
		t.Fatalf("syd (bad lookup column): %v", syd)
	}
}

func TestGRPCConfigErrors(t *testing.T) {
	_, err := agent.ParseConfig("[db]\npath = \"x.db\"\n[grpc]\naddr = \"127.0.0.1:0\"\ncert_file = \"a.pem\"\n", "agent.toml")
	if err == nil || !strings.Contains(err.Error(), "grpc.cert_file and grpc.key_file go together") {
		t.Fatalf("cert without key: %v", err)
	}
	_, err = agent.ParseConfig("[db]\npath = \"x.db\"\n[grpc]\nadress = \"x\"\n", "agent.toml")
	if err == nil || !strings.Contains(err.Error(), "unknown key grpc.adress") {
		t.Fatalf("unknown key: %v", err)
	}
}

// TestGRPCOverMutualTLS: with cert_file, key_file and client_ca_file the
// agent serves TLS and requires a client certificate from the CA; a
// plaintext client and one without a certificate are refused.
func TestGRPCOverMutualTLS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir := t.TempDir()
	ca, err := cluster.NewCA("grpc test CA")
	if err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"server", "client"} {
		nc, err := ca.Issue(name, []net.IP{net.IPv4(127, 0, 0, 1)}, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := nc.Write(dir, name); err != nil {
			t.Fatal(err)
		}
	}
	a := startTierAgent(t, "global", fmt.Sprintf("cert_file = %q\nkey_file = %q\nclient_ca_file = %q\n",
		filepath.Join(dir, "server.pem"), filepath.Join(dir, "server-key.pem"), filepath.Join(dir, "ca.pem")))
	call := func(o rpc.DialOptions) error {
		cc, err := rpc.Dial(a.GRPCAddr(), o)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = globalv1.NewAppMapClient(cc).ListRegions(ctx, &globalv1.ListRegionsRequest{})
		return err
	}
	if err := call(rpc.DialOptions{CAFile: filepath.Join(dir, "ca.pem"), CertFile: filepath.Join(dir, "client.pem"), KeyFile: filepath.Join(dir, "client-key.pem")}); err != nil {
		t.Fatalf("with a client certificate: %v", err)
	}
	if err := call(rpc.DialOptions{CAFile: filepath.Join(dir, "ca.pem")}); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	if err := call(rpc.DialOptions{}); err == nil {
		t.Fatal("a plaintext client was served")
	}
}

// TestStopEndsWatchStreams: stopping ends the open WatchApp streams at
// once, so that waiting for them does not use up the shutdown time the
// HTTP server needs for its own streams: the agent stops cleanly.
func TestStopEndsWatchStreams(t *testing.T) {
	a, stop := runTierAgent(t, "regional", `shutdown_timeout = "3s"`, "")

	w, err := regionalv1.NewLookupClient(dial(t, a.GRPCAddr())).WatchApp(context.Background(), &regionalv1.WatchAppRequest{App: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if ev, err := w.Recv(); err != nil || ev.GetKind() != regionalv1.WatchAppEvent_KIND_READY {
		t.Fatalf("first event %v, %v; want READY", ev, err)
	}
	// An HTTP stream in flight too, which shutdown answers and ends.
	c, err := client.New("http://"+a.APIAddr(), "")
	if err != nil {
		t.Fatal(err)
	}
	txs, err := c.OpenTxStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer txs.Close()
	if _, err := txs.Transact(context.Background(), client.Statement{Query: "SELECT 1"}); err != nil {
		t.Fatal(err)
	}

	// A reflection stream left open, as grpcui or evans keep one for a
	// session: its handler waits on its client, not on its context.
	rs, err := reflectionpb.NewServerReflectionClient(dial(t, a.GRPCAddr())).ServerReflectionInfo(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if err := rs.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := rs.Recv(); err != nil {
		t.Fatal(err)
	}

	// Within the shutdown timeout, or HTTP's shutdown gets an expired
	// context and the agent ends with an error.
	if err := stop(); err != nil {
		t.Fatalf("agent stopped with %v", err)
	}
	if _, err := w.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("the watch stream after the agent stopped: %v, want UNAVAILABLE (which clients retry)", err)
	}
	if _, err := rs.Recv(); err == nil {
		t.Fatal("the reflection stream outlived the agent")
	}
}
