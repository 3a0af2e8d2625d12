package dns

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/patina-db/patina/internal/locate"
	globalv1 "github.com/patina-db/patina/proto/patina/global/v1"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
)

// staticLocator answers from fixed machines: one app, "big", with n
// machines in the local region, each on its own address.
type staticLocator struct{ machines []*regionalv1.Machine }

func newStaticLocator(n int) *staticLocator {
	l := &staticLocator{}
	for i := range n {
		l.machines = append(l.machines, &regionalv1.Machine{
			Id: fmt.Sprintf("m%03d", i), App: "big", Region: "ams", Address: fmt.Sprintf("10.0.%d.%d", i/250, i%250+1),
			Port: 8080, State: "started", Healthy: true,
		})
	}
	return l
}

func (l *staticLocator) Region() string { return "ams" }
func (l *staticLocator) App(_ context.Context, app string) (*globalv1.App, error) {
	if app != "big" {
		return nil, locate.ErrUnknownApp
	}
	return &globalv1.App{Name: "big", Regions: []*globalv1.AppRegion{{Region: "ams"}}}, nil
}
func (l *staticLocator) Apps(ctx context.Context) ([]*globalv1.App, error) {
	a, _ := l.App(ctx, "big")
	return []*globalv1.App{a}, nil
}
func (l *staticLocator) Regions(context.Context) ([]*globalv1.Region, error) {
	return []*globalv1.Region{{Name: "ams"}}, nil
}
func (l *staticLocator) Machines(_ context.Context, app, region string, _ bool) ([]*regionalv1.Machine, error) {
	if app != "big" || region != "ams" {
		return nil, nil
	}
	return l.machines, nil
}
func (l *staticLocator) Everywhere(ctx context.Context, app string, _ bool) (locate.Answer, error) {
	if app != "big" {
		return locate.Answer{}, locate.ErrUnknownApp
	}
	return locate.Answer{Regions: []locate.RegionMachines{{Region: "ams", Machines: l.machines}}}, nil
}
func (l *staticLocator) Unreachable() uint64 { return 0 }

// startStatic runs a server on loopback answering from loc.
func startStatic(t *testing.T, loc Locator, edit func(*Config)) *Server {
	t.Helper()
	cfg := DefaultConfig()
	cfg.DNS.Addr = "127.0.0.1:0"
	cfg.Region.Name, cfg.Region.Lookup = "ams", []string{"127.0.0.1:1"}
	if edit != nil {
		edit(&cfg)
	}
	s, err := newServer(cfg, loc, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return s
}

func exchange(t *testing.T, addr, network string, req *miekg.Msg) *miekg.Msg {
	t.Helper()
	c := &miekg.Client{Net: network, Timeout: 5 * time.Second, UDPSize: 65535}
	resp, _, err := c.Exchange(req, addr)
	if err != nil {
		t.Fatalf("%v over %s: %v", req.Question, network, err)
	}
	return resp
}

// TestTruncation: without EDNS0 a UDP answer stops at 512 bytes with TC
// set, with EDNS0 at the client's buffer size; TCP carries it whole.
func TestTruncation(t *testing.T) {
	s := startStatic(t, newStaticLocator(300), nil)
	q := func(edns uint16) *miekg.Msg {
		req := new(miekg.Msg)
		req.SetQuestion("big.internal.", miekg.TypeA)
		if edns > 0 {
			req.SetEdns0(edns, false)
		}
		return req
	}
	for _, tc := range []struct {
		network   string
		edns      uint16
		maxSize   int
		truncated bool
	}{
		{"udp", 0, 512, true},
		{"udp", 1232, 1232, true},
		{"udp", 100, 512, true}, // below 512 counts as 512
		{"udp", 8192, 8192, false},
		{"tcp", 0, 65535, false},
	} {
		resp := exchange(t, s.Addr(), tc.network, q(tc.edns))
		resp.Compress = true // as sent
		data, _ := resp.Pack()
		if resp.Truncated != tc.truncated || len(data) > tc.maxSize || len(resp.Answer) == 0 {
			t.Errorf("%s EDNS0 %d: TC %t, %d bytes, %d answers; want TC %t, at most %d bytes",
				tc.network, tc.edns, resp.Truncated, len(data), len(resp.Answer), tc.truncated, tc.maxSize)
		}
		if !tc.truncated && len(resp.Answer) != 300 {
			t.Errorf("%s EDNS0 %d: %d answers, want 300", tc.network, tc.edns, len(resp.Answer))
		}
		if tc.edns > 0 && (resp.IsEdns0() == nil || resp.IsEdns0().UDPSize() != advertisedUDPSize) {
			t.Errorf("%s EDNS0 %d: no OPT record advertising %d in the response", tc.network, tc.edns, advertisedUDPSize)
		}
	}
	// SRV with every target's address in the additional section.
	req := new(miekg.Msg)
	req.SetQuestion("_http._tcp.big.internal.", miekg.TypeSRV)
	if resp := exchange(t, s.Addr(), "tcp", req); len(resp.Answer) != 300 || len(resp.Extra) != 300 {
		t.Errorf("SRV over TCP: %d answers, %d additional", len(resp.Answer), len(resp.Extra))
	}
	if s.Stats().Truncated < 3 {
		t.Errorf("truncations not counted: %+v", s.Stats())
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(s.Collectors()...)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			got[f.GetName()] += m.GetCounter().GetValue()
		}
	}
	if got["patina_dns_queries_total"] < 6 || got["patina_dns_truncated_total"] < 3 || got["patina_dns_responses_total"] < 6 {
		t.Errorf("metrics: %v", got)
	}
}

// TestForward: names outside the zone go to the first recursor that
// answers, over the transport they came on; without any that answers,
// SERVFAIL.
func TestForward(t *testing.T) {
	var seen atomic.Int32
	upstream := &miekg.Server{Addr: "127.0.0.1:0", Net: "udp", Handler: miekg.HandlerFunc(func(w miekg.ResponseWriter, req *miekg.Msg) {
		seen.Add(1)
		resp := new(miekg.Msg)
		resp.SetReply(req)
		resp.RecursionAvailable = true
		rr, _ := miekg.NewRR(req.Question[0].Name + " 60 IN A 192.0.2.7")
		resp.Answer = []miekg.RR{rr}
		w.WriteMsg(resp)
	})}
	started := make(chan struct{})
	upstream.NotifyStartedFunc = func() { close(started) }
	go upstream.ListenAndServe()
	<-started
	defer upstream.Shutdown()
	addr := upstream.PacketConn.LocalAddr().String()

	s := startStatic(t, newStaticLocator(1), func(c *Config) { c.DNS.Recursors = []string{"127.0.0.1:1", addr} })
	req := new(miekg.Msg)
	req.SetQuestion("www.example.com.", miekg.TypeA)
	resp := exchange(t, s.Addr(), "udp", req)
	if resp.Rcode != miekg.RcodeSuccess || len(resp.Answer) != 1 || resp.Answer[0].(*miekg.A).A.String() != "192.0.2.7" || resp.Id != req.Id {
		t.Fatalf("forwarded: %v", resp)
	}
	// Names in the zone are still answered here, with RA set.
	req.SetQuestion("big.internal.", miekg.TypeA)
	if resp := exchange(t, s.Addr(), "udp", req); len(resp.Answer) != 1 || !resp.RecursionAvailable || !resp.Authoritative {
		t.Fatalf("in the zone, with recursors: %v", resp)
	}
	if seen.Load() != 1 || s.Stats().Forwarded != 1 {
		t.Fatalf("upstream saw %d queries; stats %+v", seen.Load(), s.Stats())
	}

	// No recursor answers (TCP, which the upstream does not serve).
	req.SetQuestion("www.example.com.", miekg.TypeA)
	if resp := exchange(t, s.Addr(), "tcp", req); resp.Rcode != miekg.RcodeServerFailure {
		t.Fatalf("no recursor: want SERVFAIL, got %v", resp)
	}
	if s.Stats().ForwardFailed != 1 {
		t.Fatalf("failure not counted: %+v", s.Stats())
	}
}

func TestConfig(t *testing.T) {
	good := `
[dns]
addr = "0.0.0.0:53"
zone = "svc.example"
ttl = "10s"
recursors = ["9.9.9.9", "127.0.0.53:53"]
[region]
name = "ams"
lookup = ["10.0.0.1:7002", "10.0.0.2:7002"]
[global]
agents = ["10.1.0.1:7002"]
[grpc]
token = "t"
ca_file = "ca.pem"
[cache]
ttl = "1s"
timeout = "300ms"
[metrics]
addr = "127.0.0.1:9153"
[log]
level = "debug"
`
	cfg, err := ParseConfig(good, "good.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DNS.TTL != 10*time.Second || cfg.Cache.Timeout != 300*time.Millisecond || len(cfg.Region.Lookup) != 2 || cfg.GRPC.CAFile != "ca.pem" {
		t.Fatalf("parsed: %+v", cfg)
	}
	cfg, err = ParseConfig("[region]\nname = \"ams\"\nlookup = [\"127.0.0.1:7002\"]\n", "min.toml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.DNS.Addr != "127.0.0.1:5353" || cfg.DNS.Zone != "internal" || cfg.DNS.TTL != 5*time.Second ||
		cfg.Cache.TTL != 2*time.Second || cfg.Cache.Timeout != time.Second {
		t.Fatalf("defaults: %+v", cfg)
	}
	if _, err := LoadConfig("../../deploy/config/ams/dns.toml"); err != nil {
		t.Fatalf("the example configuration: %v", err)
	}
	if _, err := LoadConfig("nope.toml"); err == nil || !strings.Contains(err.Error(), "nope.toml") {
		t.Fatalf("a missing file: %v", err)
	}
	const region = "[region]\nname = \"ams\"\nlookup = [\"127.0.0.1:7002\"]\n"
	for _, tc := range []struct{ text, want string }{
		{"[dns]\nport = 53\n" + region, "unknown key dns.port"},
		{region + "[cache]\nttl = \"1s\"\nsize = 10\n", "unknown key cache.size"},
		{region + "[nope]\nx = 1\n", "unknown key nope"},
		{"[region]\nlookup = [\"127.0.0.1:7002\"]\n", "region.name is required"},
		{"[region]\nname = \"ams\"\n", "region.lookup is required"},
		{"[region]\nname = \"AMS!\"\nlookup = [\"127.0.0.1:7002\"]\n", "region.name \"AMS!\""},
		{"[region]\nname = \"ams\"\nlookup = [\"nohost\"]\n", "region.lookup \"nohost\""},
		{region + "[global]\nagents = [\"x\"]\n", "global.agents \"x\""},
		{region + "[dns]\nttl = \"1500ms\"\n", "dns.ttl 1.5s"},
		{region + "[dns]\nttl = 5\n", "dns.ttl 5ns"},
		{region + "[dns]\nzone = \"in_ternal\"\n", "dns.zone \"in_ternal\""},
		{region + "[dns]\nzone = \"\"\n", "dns.zone is empty"},
		{region + "[dns]\naddr = \"5353\"\n", "dns.addr \"5353\""},
		{region + "[dns]\nrecursors = [\"resolver\"]\n", "dns.recursors \"resolver\""},
		{region + "[grpc]\ncert_file = \"c.pem\"\n", "grpc.cert_file and grpc.key_file go together"},
		{region + "[cache]\ntimeout = \"0s\"\n", "cache.timeout 0s"},
		{region + "[log]\nformat = \"xml\"\n", "log.format \"xml\""},
		{"[region\n", "config bad.toml"},
	} {
		_, err := ParseConfig(tc.text, "bad.toml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error with %q", tc.text, err, tc.want)
		}
	}
}
