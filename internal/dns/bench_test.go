package dns_test

import (
	"context"
	"encoding/binary"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	miekg "github.com/miekg/dns"

	"github.com/patina-db/patina/internal/devcluster/topology"
	"github.com/patina-db/patina/internal/dns"
)

// benchTopology starts ams and iad, web in both, and a DNS server for
// ams whose locator keeps answers for cacheTTL.
func benchTopology(b *testing.B, cacheTTL time.Duration) (*dns.Server, func()) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	topo, err := topology.Start(ctx, topology.Options{
		Dir: b.TempDir(), Regions: []string{"ams", "iad"}, AgentsPerRegion: 1, GlobalAgents: 1,
		HostAddresses: map[string]string{"ams": "127.0.0.11", "iad": "127.0.0.12"},
		Apps: []topology.App{
			{Name: "local", Machines: map[string]int{"ams": 3}},
			{Name: "web", Machines: map[string]int{"ams": 2, "iad": 2}},
		},
	})
	if err != nil {
		b.Fatal(err)
	}
	e := topo.Endpoints()
	cfg := dns.DefaultConfig()
	cfg.DNS.Addr = "127.0.0.1:0"
	cfg.Region.Name = "ams"
	cfg.Region.Lookup = []string{e.Regions["ams"].Agents[0].GRPC}
	cfg.Global.Agents = []string{e.Global.Agents[0].GRPC}
	cfg.Cache.TTL = cacheTTL
	srv, err := dns.New(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	rctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(rctx) }()
	c := client{t: b, addr: srv.Addr()}
	deadline := time.Now().Add(30 * time.Second)
	for {
		a := addrs(c.query("web.internal", miekg.TypeA))
		l := addrs(c.query("local.internal", miekg.TypeA))
		if len(a) == 2 && len(l) == 1 {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("web and local not healthy in 30s: %v %v", a, l)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return srv, func() {
		stop()
		<-done
		topo.Stop()
	}
}

// BenchmarkLocalQueries measures queries per second for an app of the
// local region, with 64 UDP clients each keeping its socket and one
// query in flight.
func BenchmarkLocalQueries(b *testing.B) {
	srv, stop := benchTopology(b, 2*time.Second)
	defer stop()
	req := new(miekg.Msg)
	req.SetQuestion("local.internal.", miekg.TypeA)
	query, err := req.Pack()
	if err != nil {
		b.Fatal(err)
	}
	const clients = 64
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for range clients {
		wg.Go(func() {
			conn, err := net.Dial("udp", srv.Addr())
			if err != nil {
				failed.Add(1)
				return
			}
			defer conn.Close()
			q := slices.Clone(query)
			buf := make([]byte, 1500)
			for id := next.Add(1); id <= int64(b.N); id = next.Add(1) {
				binary.BigEndian.PutUint16(q, uint16(id))
				conn.SetDeadline(time.Now().Add(time.Second))
				if _, err := conn.Write(q); err != nil {
					failed.Add(1)
					continue
				}
				for {
					n, err := conn.Read(buf)
					if err != nil {
						failed.Add(1) // lost: counted, and the client goes on
						break
					}
					if n >= 12 && binary.BigEndian.Uint16(buf) == uint16(id) {
						if buf[3]&0xf != 0 || binary.BigEndian.Uint16(buf[6:]) == 0 {
							failed.Add(1)
						}
						break
					}
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "queries/s")
	b.ReportMetric(float64(failed.Load()), "failed")
}

// BenchmarkCrossRegionWarm measures the latency of an answer that needs
// another region, from the cache.
func BenchmarkCrossRegionWarm(b *testing.B) {
	srv, stop := benchTopology(b, time.Minute)
	defer stop()
	latencies(b, srv, nil)
}

// BenchmarkCrossRegionCold measures the latency of an answer that needs
// another region just after the cache let go of it: the global map, the
// directory and both regions are asked again.
func BenchmarkCrossRegionCold(b *testing.B) {
	const ttl = 20 * time.Millisecond
	srv, stop := benchTopology(b, ttl)
	defer stop()
	latencies(b, srv, func() { time.Sleep(ttl + 5*time.Millisecond) })
}

// latencies times b.N queries for web.internal (ams and iad) one after
// the other, calling before ahead of each, and reports p50 and p99.
func latencies(b *testing.B, srv *dns.Server, before func()) {
	conn, err := net.Dial("udp", srv.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := &miekg.Conn{Conn: conn}
	req := new(miekg.Msg)
	req.SetQuestion("web.internal.", miekg.TypeA)
	var took []time.Duration
	b.ResetTimer()
	for range b.N {
		if before != nil {
			b.StopTimer()
			before()
			b.StartTimer()
		}
		req.Id = miekg.Id()
		t0 := time.Now()
		conn.SetDeadline(t0.Add(5 * time.Second))
		if err := c.WriteMsg(req); err != nil {
			b.Fatal(err)
		}
		resp, err := c.ReadMsg()
		if err != nil {
			b.Fatal(err)
		}
		took = append(took, time.Since(t0))
		if len(resp.Answer) != 2 {
			b.Fatalf("web.internal: want ams and iad, got %v", resp)
		}
	}
	b.StopTimer()
	slices.Sort(took)
	b.ReportMetric(float64(took[len(took)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(took[len(took)*99/100].Microseconds())/1000, "p99-ms")
}
