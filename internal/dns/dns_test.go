package dns_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	miekg "github.com/miekg/dns"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/patina-db/patina/internal/devcluster/topology"
	"github.com/patina-db/patina/internal/dns"
	globalv1 "github.com/patina-db/patina/proto/patina/global/v1"
	"github.com/patina-db/patina/regional"
)

// Each region's machines listen on their own loopback address, so that
// answers say which region they come from; syd's are IPv6.
var regionAddr = map[string]string{"ams": "127.0.0.11", "iad": "127.0.0.12", "syd": "::1"}

// TestDNS runs a DNS server for ams against a three-region topology and
// queries it as a client would, over UDP and TCP: every kind of name and
// record, bad input, then machines stopped in ams and syd gone whole.
func TestDNS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	topo, err := topology.Start(ctx, topology.Options{
		Dir: t.TempDir(), Regions: []string{"ams", "iad", "syd"}, AgentsPerRegion: 1, GlobalAgents: 1,
		CheckInterval: 100 * time.Millisecond, HostAddresses: regionAddr,
		Apps: []topology.App{
			{Name: "web", Machines: map[string]int{"ams": 2, "iad": 1, "syd": 1}},
			{Name: "api", Machines: map[string]int{"ams": 1, "iad": 1}},
			{Name: "worker", Machines: map[string]int{"syd": 1}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := topo.Stop(); err != nil {
			t.Error(err)
		}
	}()
	e := topo.Endpoints()
	cfg := dns.DefaultConfig()
	cfg.DNS.Addr = "127.0.0.1:0"
	cfg.Region.Name = "ams"
	cfg.Region.Lookup = []string{e.Regions["ams"].Agents[0].GRPC}
	cfg.Global.Agents = []string{e.Global.Agents[0].GRPC}
	cfg.Cache.TTL = 50 * time.Millisecond
	cfg.Cache.Timeout = 5 * time.Second // generous: the tests check answers, not timeouts
	srv := startServer(t, cfg)
	c := client{t: t, addr: srv.Addr()}

	// Every machine has passed its check once.
	c.wait("web everywhere", "web.internal", miekg.TypeA, func(m *miekg.Msg) bool {
		return slices.Equal(addrs(m), []string{"127.0.0.11", "127.0.0.12"})
	})
	c.wait("web in syd", "web.internal", miekg.TypeAAAA, func(m *miekg.Msg) bool { return slices.Equal(addrs(m), []string{"::1"}) })
	c.wait("api everywhere", "api.internal", miekg.TypeA, func(m *miekg.Msg) bool { return len(addrs(m)) == 2 })
	c.wait("worker", "worker.internal", miekg.TypeAAAA, func(m *miekg.Msg) bool { return len(addrs(m)) == 1 })
	machines := map[string]regional.Machine{} // every machine, by id
	for _, r := range topo.Regions {
		for _, h := range r.Hosts {
			for _, m := range h.Host.List() {
				machines[m.ID] = m
			}
		}
	}

	t.Run("addresses", func(t *testing.T) {
		c := client{t: t, addr: srv.Addr()}
		c.expect("global.web.internal", miekg.TypeA, miekg.RcodeSuccess, "127.0.0.11", "127.0.0.12")
		c.expect("syd.web.internal", miekg.TypeAAAA, miekg.RcodeSuccess, "::1")
		c.expect("syd.web.internal", miekg.TypeA, miekg.RcodeSuccess)
		c.expect("iad.web.internal", miekg.TypeA, miekg.RcodeSuccess, "127.0.0.12")
		c.expect("syd.api.internal", miekg.TypeAAAA, miekg.RcodeSuccess) // a known region without the app
		c.expect("lhr.web.internal", miekg.TypeA, miekg.RcodeNameError)  // not in the directory
		c.expect("top1.nearest.of.web.internal", miekg.TypeA, miekg.RcodeSuccess, "127.0.0.11")
		c.expect("top1.nearest.of.web.internal", miekg.TypeAAAA, miekg.RcodeSuccess)
		c.expect("top2.nearest.of.web.internal", miekg.TypeA, miekg.RcodeSuccess, "127.0.0.11", "127.0.0.12")
		c.expect("top3.nearest.of.web.internal", miekg.TypeAAAA, miekg.RcodeSuccess, "::1")
		c.expect("top1.nearest.of.worker.internal", miekg.TypeAAAA, miekg.RcodeSuccess, "::1")
		c.expect("TOP1.Nearest.Of.WEB.internal.", miekg.TypeA, miekg.RcodeSuccess, "127.0.0.11")
		for id, m := range machines {
			want := []string{regionAddr[m.Region]}
			qtype := miekg.TypeA
			if m.Region == "syd" {
				qtype = miekg.TypeAAAA
			}
			c.expect(id+".vm."+m.App+".internal", qtype, miekg.RcodeSuccess, want...)
			c.expect(id+".vm.nope.internal", qtype, miekg.RcodeNameError)
		}
		c.expect("0123456789abcdef.vm.web.internal", miekg.TypeA, miekg.RcodeNameError)
		c.expect("ns.internal", miekg.TypeA, miekg.RcodeSuccess, "127.0.0.1")
		// Over TCP too.
		c.net = "tcp"
		c.expect("web.internal", miekg.TypeA, miekg.RcodeSuccess, "127.0.0.11", "127.0.0.12")
	})

	t.Run("srv", func(t *testing.T) {
		m := c.query("_http._tcp.web.internal", miekg.TypeSRV)
		var got []string
		extra := map[string]string{}
		for _, rr := range m.Extra {
			switch rr := rr.(type) {
			case *miekg.A:
				extra[rr.Hdr.Name] = rr.A.String()
			case *miekg.AAAA:
				extra[rr.Hdr.Name] = rr.AAAA.String()
			}
		}
		for _, rr := range m.Answer {
			srv := rr.(*miekg.SRV)
			id, ok := strings.CutSuffix(srv.Target, ".vm.web.internal.")
			mach, known := machines[id]
			if !ok || !known || int(srv.Port) != mach.Port || extra[srv.Target] != regionAddr[mach.Region] {
				t.Errorf("SRV %s: not a web machine with its port and address (additional: %v)", srv, extra)
				continue
			}
			got = append(got, fmt.Sprintf("%d %s", srv.Priority, mach.Region))
		}
		if want := []string{"0 ams", "0 ams", "1 iad", "2 syd"}; !slices.Equal(got, want) {
			t.Fatalf("SRV priorities and regions: %v, want %v", got, want)
		}
		c.expect("_http._tcp.nope.internal", miekg.TypeSRV, miekg.RcodeNameError)
	})

	t.Run("txt", func(t *testing.T) {
		cc, err := grpc.NewClient(e.Global.Agents[0].GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		for _, app := range []string{"web", "api", "worker"} {
			a, err := globalv1.NewAppMapClient(cc).GetApp(ctx, &globalv1.GetAppRequest{App: app})
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for _, r := range a.GetRegions() {
				want = append(want, r.GetRegion())
			}
			if got := txtItems(c.query("regions."+app+".internal", miekg.TypeTXT)); !slices.Equal(got, want) {
				t.Errorf("regions.%s.internal: %v, the global map says %v", app, got, want)
			}
		}
		var want []string
		for id, m := range machines {
			if m.App == "web" {
				want = append(want, id+" "+m.Region)
			}
		}
		if got := txtItems(c.query("vms.web.internal", miekg.TypeTXT)); !sameSet(got, want) {
			t.Errorf("vms.web.internal: %v, want %v", got, want)
		}
		if got := txtItems(c.query("_apps.internal", miekg.TypeTXT)); !slices.Equal(got, []string{"api", "web", "worker"}) {
			t.Errorf("_apps.internal: %v", got)
		}
		want = nil
		for id, m := range machines {
			want = append(want, fmt.Sprintf("%s %s %s %s %d started", id, m.App, m.Region, m.Address, m.Port))
		}
		if got := txtItems(c.query("_instances.internal", miekg.TypeTXT)); !sameSet(got, want) {
			t.Errorf("_instances.internal: %v, want %v", got, want)
		}
	})

	t.Run("zone", func(t *testing.T) {
		c := client{t: t, addr: srv.Addr()}
		m := c.query("internal", miekg.TypeSOA)
		if len(m.Answer) != 1 || !m.Authoritative {
			t.Fatalf("SOA: %v", m)
		}
		if soa := m.Answer[0].(*miekg.SOA); soa.Ns != "ns.internal." || soa.Minttl != 5 || soa.Hdr.Ttl != 5 {
			t.Fatalf("SOA: %v", soa)
		}
		m = c.query("internal", miekg.TypeNS)
		if len(m.Answer) != 1 || m.Answer[0].(*miekg.NS).Ns != "ns.internal." {
			t.Fatalf("NS: %v", m)
		}
		for _, q := range []struct {
			name  string
			qtype uint16
			rcode int
		}{
			{"nope.internal", miekg.TypeA, miekg.RcodeNameError},
			{"a.b.c.d.web.internal", miekg.TypeA, miekg.RcodeNameError},
			{"top0.nearest.of.web.internal", miekg.TypeA, miekg.RcodeNameError},
			{"under_score.internal", miekg.TypeA, miekg.RcodeNameError},
			{"web.internal", miekg.TypeMX, miekg.RcodeSuccess},
			{"web.internal", miekg.TypeTXT, miekg.RcodeSuccess},
			{"web.internal", 65280, miekg.RcodeSuccess}, // a private type
			{"regions.web.internal", miekg.TypeA, miekg.RcodeSuccess},
			{"internal", miekg.TypeA, miekg.RcodeSuccess},
		} {
			m := c.query(q.name, q.qtype)
			if m.Rcode != q.rcode || len(m.Answer) != 0 || len(m.Ns) != 1 || m.Ns[0].Header().Rrtype != miekg.TypeSOA {
				t.Errorf("%s %s: want %s, no answer and the SOA in authority; got %v", q.name, miekg.TypeToString[q.qtype], miekg.RcodeToString[q.rcode], m)
			}
		}
		if m := c.query("example.com", miekg.TypeA); m.Rcode != miekg.RcodeRefused || m.Authoritative {
			t.Errorf("outside the zone without recursors: want REFUSED, got %v", m)
		}
		m = c.query("web.internal", miekg.TypeANY)
		if len(m.Answer) != 3 {
			t.Errorf("ANY: want the A and AAAA records, got %v", m)
		}
	})

	t.Run("bad input", func(t *testing.T) {
		badInput(t, srv.Addr(), srv)
	})

	// Stop every web machine in ams, through its hosts: ams's answers
	// lose them, the other regions' stay.
	for _, r := range topo.Regions {
		if r.Name != "ams" {
			continue
		}
		for _, h := range r.Hosts {
			for _, m := range h.Host.List() {
				if m.App == "web" {
					if _, err := h.Host.Stop(ctx, m.ID); err != nil {
						t.Fatal(err)
					}
				}
			}
		}
	}
	c.wait("web without ams", "web.internal", miekg.TypeA, func(m *miekg.Msg) bool {
		return slices.Equal(addrs(m), []string{"127.0.0.12"})
	})
	c.expect("ams.web.internal", miekg.TypeA, miekg.RcodeSuccess)
	c.expect("top1.nearest.of.web.internal", miekg.TypeA, miekg.RcodeSuccess, "127.0.0.12")
	c.expect("web.internal", miekg.TypeAAAA, miekg.RcodeSuccess, "::1")

	// syd goes away whole: its hosts and every agent. The answers go on
	// without it, once the cache lets go of what syd said last.
	for _, r := range topo.Regions {
		if r.Name != "syd" {
			continue
		}
		for _, h := range r.Hosts {
			h.Stop()
		}
		if err := r.Cluster.Stop(); err != nil {
			t.Fatal(err)
		}
	}
	c.wait("web without syd", "web.internal", miekg.TypeAAAA, func(m *miekg.Msg) bool {
		return m.Rcode == miekg.RcodeSuccess && len(m.Answer) == 0
	})
	c.expect("web.internal", miekg.TypeA, miekg.RcodeSuccess, "127.0.0.12")
	c.expect("api.internal", miekg.TypeA, miekg.RcodeSuccess, "127.0.0.11", "127.0.0.12")
	c.expect("syd.web.internal", miekg.TypeAAAA, miekg.RcodeServerFailure)
	c.expect("worker.internal", miekg.TypeAAAA, miekg.RcodeServerFailure)
	if st := srv.Stats(); st.Unreachable == 0 || st.Degraded == 0 {
		t.Fatalf("syd unreachable was not counted: %+v", st)
	}
}

// badInput sends what a DNS server must survive, then checks that it
// still answers.
func badInput(t *testing.T, addr string, srv *dns.Server) {
	c := client{t: t, addr: addr}
	malformedBefore := srv.Stats().Malformed
	// Raw garbage over UDP: shorter than a header (no answer), and a
	// header claiming a question that is not there (FORMERR).
	u, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	for _, b := range [][]byte{{0xde, 0xad}, {0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0x07, 'i', 'n'}} {
		if _, err := u.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	u.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, err := u.Read(buf)
	if err != nil {
		t.Fatalf("no answer to a truncated question: %v", err)
	}
	var m miekg.Msg
	if err := m.Unpack(buf[:n]); err != nil || m.Id != 0x1234 || m.Rcode != miekg.RcodeFormatError {
		t.Fatalf("truncated question: want FORMERR, got %v %v", &m, err)
	}
	// The same over TCP, length-prefixed, then a well-formed query on
	// the same connection.
	tc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	garbage := []byte{0x43, 0x21, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff}
	tc.Write(append([]byte{0, byte(len(garbage))}, garbage...))
	conn := &miekg.Conn{Conn: tc}
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := conn.ReadMsg()
	if err != nil || resp.Id != 0x4321 || resp.Rcode != miekg.RcodeFormatError {
		t.Fatalf("garbage over TCP: want FORMERR, got %v %v", resp, err)
	}
	if srv.Stats().Malformed-malformedBefore < 2 {
		t.Errorf("malformed packets not counted: %+v", srv.Stats())
	}
	// A name longer than 255 octets, packed by hand (the client refuses).
	long := []byte{0x55, 0x55, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0}
	for range 5 {
		long = append(long, 60)
		long = append(long, strings.Repeat("a", 60)...)
	}
	long = append(long, 8)
	long = append(long, "internal"...)
	long = append(long, 0, 0, 1, 0, 1)
	if _, err := u.Write(long); err != nil {
		t.Fatal(err)
	}
	n, err = u.Read(buf)
	if err != nil {
		t.Fatalf("no answer to an over-long name: %v", err)
	}
	if err := m.Unpack(buf[:n]); err != nil || m.Id != 0x5555 || m.Rcode != miekg.RcodeFormatError {
		t.Fatalf("over-long name: want FORMERR, got %v %v", &m, err)
	}
	// Opcodes other than QUERY.
	for _, op := range []int{miekg.OpcodeNotify, miekg.OpcodeUpdate, miekg.OpcodeStatus, miekg.OpcodeIQuery} {
		req := new(miekg.Msg)
		req.SetQuestion("web.internal.", miekg.TypeSOA)
		req.Opcode = op
		resp := c.exchange(req)
		if resp.Rcode != miekg.RcodeNotImplemented {
			t.Errorf("opcode %s: want NOTIMP, got %s", miekg.OpcodeToString[op], miekg.RcodeToString[resp.Rcode])
		}
	}
	// Two questions.
	req := new(miekg.Msg)
	req.SetQuestion("web.internal.", miekg.TypeA)
	req.Question = append(req.Question, miekg.Question{Name: "api.internal.", Qtype: miekg.TypeA, Qclass: miekg.ClassINET})
	if resp := c.exchange(req); resp.Rcode != miekg.RcodeFormatError {
		t.Errorf("two questions: want FORMERR, got %s", miekg.RcodeToString[resp.Rcode])
	}
	// Zone transfers, another class, an EDNS version we do not speak,
	// a response sent as a query (ignored: no answer, no crash).
	c.expect("internal", miekg.TypeAXFR, miekg.RcodeNotImplemented)
	req = new(miekg.Msg)
	req.SetQuestion("version.bind.", miekg.TypeTXT)
	req.Question[0].Qclass = miekg.ClassCHAOS
	if resp := c.exchange(req); resp.Rcode != miekg.RcodeRefused {
		t.Errorf("CHAOS class: want REFUSED, got %s", miekg.RcodeToString[resp.Rcode])
	}
	req = new(miekg.Msg)
	req.SetQuestion("web.internal.", miekg.TypeA)
	req.SetEdns0(1232, false)
	req.IsEdns0().SetVersion(1)
	if resp := c.exchange(req); resp.Rcode != miekg.RcodeBadVers {
		t.Errorf("EDNS version 1: want BADVERS, got %s", miekg.RcodeToString[resp.Rcode])
	}
	req = new(miekg.Msg)
	req.SetQuestion("web.internal.", miekg.TypeA)
	req.Response = true
	data, _ := req.Pack()
	u.Write(data)
	if srv.Stats().Rejected < 5 { // four opcodes, two questions
		t.Errorf("rejected packets not counted: %+v", srv.Stats())
	}
	// Still serving, over both transports.
	if m := c.query("web.internal", miekg.TypeA); m.Rcode != miekg.RcodeSuccess || len(m.Answer) == 0 {
		t.Fatalf("after bad input over UDP: %v", m)
	}
	c.net = "tcp"
	if m := c.query("web.internal", miekg.TypeA); m.Rcode != miekg.RcodeSuccess || len(m.Answer) == 0 {
		t.Fatalf("after bad input over TCP: %v", m)
	}
}

// startServer runs a server until the test ends.
func startServer(t *testing.T, cfg dns.Config) *dns.Server {
	t.Helper()
	srv, err := dns.New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, context.Canceled) {
			t.Error(err)
		}
	})
	return srv
}

// client queries one server.
type client struct {
	t    testing.TB
	addr string
	net  string // "udp" (default) or "tcp"
}

func (c client) exchange(req *miekg.Msg) *miekg.Msg {
	c.t.Helper()
	cl := &miekg.Client{Net: c.net, Timeout: 10 * time.Second}
	resp, _, err := cl.Exchange(req, c.addr)
	if err != nil {
		c.t.Fatalf("%v over %s: %v", req.Question, c.net, err)
	}
	return resp
}

func (c client) query(name string, qtype uint16) *miekg.Msg {
	c.t.Helper()
	req := new(miekg.Msg)
	req.SetQuestion(miekg.Fqdn(name), qtype)
	req.SetEdns0(4096, false)
	return c.exchange(req)
}

// expect queries and checks the rcode and the addresses answered, in
// order.
func (c client) expect(name string, qtype uint16, rcode int, want ...string) {
	c.t.Helper()
	m := c.query(name, qtype)
	if m.Rcode != rcode || !slices.Equal(addrs(m), want) {
		c.t.Errorf("%s %s: got %s %v, want %s %v", name, miekg.TypeToString[qtype], miekg.RcodeToString[m.Rcode], addrs(m),
			miekg.RcodeToString[rcode], want)
	}
}

// wait queries until cond holds, for at most 30 seconds.
func (c client) wait(what, name string, qtype uint16, cond func(*miekg.Msg) bool) {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		m := c.query(name, qtype)
		if cond(m) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("%s: not within 30s; last answer to %s: %v", what, name, m)
		}
		time.Sleep(30 * time.Millisecond)
	}
}

// addrs are the answer's addresses, distinct, in the order given; a
// region's machines rotate but regions keep their order, and each
// region here has one address.
func addrs(m *miekg.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		var a string
		switch rr := rr.(type) {
		case *miekg.A:
			a = rr.A.String()
		case *miekg.AAAA:
			a = rr.AAAA.String()
		default:
			continue
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// txtItems splits a TXT answer's strings into their comma-separated
// items.
func txtItems(m *miekg.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		if txt, ok := rr.(*miekg.TXT); ok {
			for _, s := range txt.Txt {
				if len(s) > 255 {
					return []string{"a string longer than 255 bytes"}
				}
				out = append(out, strings.Split(s, ",")...)
			}
		}
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	sort.Strings(a)
	sort.Strings(b)
	return slices.Equal(a, b)
}
