package proxy

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/devcluster/topology"
	"github.com/patina-db/patina/internal/locate"
)

func TestMain(m *testing.M) {
	code := m.Run()
	bench.stop()
	os.Exit(code)
}

// bench is the topology the benchmarks share: one region (ams, one
// agent), one global agent, web with one dev machine in ams, and a proxy.
var bench benchEnv

type benchEnv struct {
	once    sync.Once
	err     error
	dir     string
	topo    *topology.Topology
	proxy   *Proxy
	cancel  context.CancelFunc
	done    chan error
	machine string // the machine's host:port
	// plain is a bare httputil.ReverseProxy to the machine with the same
	// transport and buffer pool: the floor any Go reverse proxy pays on
	// this machine.
	plain *httptest.Server
}

func (s *benchEnv) start() error {
	s.once.Do(func() { s.err = startBench() })
	return s.err
}

func startBench() error {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "patina-proxy-bench")
	if err != nil {
		return err
	}
	bench.dir = dir
	bench.topo, err = topology.Start(ctx, topology.Options{
		Dir: dir, Regions: []string{"ams"}, AgentsPerRegion: 1, GlobalAgents: 1,
		Apps: []topology.App{{Name: "web", Machines: map[string]int{"ams": 1}}}, CheckInterval: 200 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	eps := bench.topo.Endpoints()
	cfg := DefaultConfig()
	cfg.Proxy.Addr = "127.0.0.1:0"
	cfg.Region.Name = "ams"
	cfg.Region.Lookup = []string{eps.Regions["ams"].Agents[0].GRPC}
	cfg.Global.Agents = []string{eps.Global.Agents[0].GRPC}
	bench.proxy, err = New(cfg, nil)
	if err != nil {
		return err
	}
	pctx, cancel := context.WithCancel(ctx)
	bench.cancel, bench.done = cancel, make(chan error, 1)
	go func() { bench.done <- bench.proxy.Run(pctx) }()

	loc, err := locate.New(locate.Config{Region: "ams", Local: cfg.Region.Lookup, TTL: time.Millisecond})
	if err != nil {
		return err
	}
	defer loc.Close()
	deadline := time.Now().Add(time.Minute)
	for bench.machine == "" {
		if ms, err := loc.Machines(ctx, "web", "ams", true); err == nil && len(ms) == 1 {
			bench.machine = net.JoinHostPort(ms[0].GetAddress(), strconv.Itoa(int(ms[0].GetPort())))
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("web's machine not healthy within a minute")
		}
		time.Sleep(25 * time.Millisecond)
	}
	target := &url.URL{Scheme: "http", Host: bench.machine}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport, rp.BufferPool = newTransport(cfg.Proxy.DialTimeout), newBufferPool()
	bench.plain = httptest.NewServer(rp)
	return nil
}

func (s *benchEnv) stop() {
	if s.plain != nil {
		s.plain.Close()
	}
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
	if s.topo != nil {
		s.topo.Stop()
	}
	if s.dir != "" {
		os.RemoveAll(s.dir)
	}
}

// BenchmarkProxyLatency measures what the proxy adds to a request: every
// iteration sends one request straight to the machine, one through the
// proxy and one through a bare httputil.ReverseProxy (in rotating
// order), from clients sharing one kept-alive pool, so all see the same
// load in the same run. It reports p50 and p99 of the direct and proxied
// requests, the p99 the proxy adds (difference and ratio), and the bare
// reverse proxy's p99 for scale.
func BenchmarkProxyLatency(b *testing.B) {
	if err := bench.start(); err != nil {
		b.Fatal(err)
	}
	// sequential: one client, one request at a time, back to back.
	// rate=N: N iterations a second started on schedule, whatever the
	// answers' latency, by up to 32 clients: a load that leaves the two
	// cores room, unlike back-to-back parallel clients, which saturate
	// them (client, proxy and machine share the cores here).
	for _, rate := range []int{0, 500, 2000} {
		name := "sequential"
		if rate > 0 {
			name = fmt.Sprintf("rate=%d", rate)
		}
		b.Run(name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
			defer client.CloseIdleConnections()
			direct, _ := http.NewRequest("GET", "http://"+bench.machine+"/", nil)
			proxied, _ := http.NewRequest("GET", "http://"+bench.proxy.Addr()+"/", nil)
			proxied.Host = "web.internal"
			plain, _ := http.NewRequest("GET", bench.plain.URL+"/", nil)
			send := func(req *http.Request) time.Duration {
				start := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatalf("%s: %d", req.URL, resp.StatusCode)
				}
				return time.Since(start)
			}
			// Warm the pools.
			for range 50 {
				send(direct)
				send(proxied)
				send(plain)
			}
			var mu sync.Mutex
			var directAll, proxiedAll, plainAll []time.Duration
			run := func(next func() bool) {
				var ds, ps, pls []time.Duration
				for i := 0; next(); i++ {
					switch i % 3 {
					case 0:
						ds = append(ds, send(direct))
						ps = append(ps, send(proxied))
						pls = append(pls, send(plain))
					case 1:
						ps = append(ps, send(proxied))
						pls = append(pls, send(plain))
						ds = append(ds, send(direct))
					default:
						pls = append(pls, send(plain))
						ds = append(ds, send(direct))
						ps = append(ps, send(proxied))
					}
				}
				mu.Lock()
				directAll, proxiedAll, plainAll = append(directAll, ds...), append(proxiedAll, ps...), append(plainAll, pls...)
				mu.Unlock()
			}
			b.ResetTimer()
			if rate == 0 {
				run(b.Loop)
			} else {
				jobs := make(chan struct{}, 1024)
				var wg sync.WaitGroup
				for range 32 {
					wg.Go(func() {
						run(func() bool { _, ok := <-jobs; return ok })
					})
				}
				interval := time.Second / time.Duration(rate)
				next := time.Now()
				for b.Loop() {
					next = next.Add(interval)
					if d := time.Until(next); d > 0 {
						time.Sleep(d)
					}
					jobs <- struct{}{}
				}
				close(jobs)
				wg.Wait()
			}
			b.StopTimer()
			d50, d99 := percentile(directAll, 50), percentile(directAll, 99)
			p50, p99 := percentile(proxiedAll, 50), percentile(proxiedAll, 99)
			b.ReportMetric(us(d50), "direct-p50-µs")
			b.ReportMetric(us(d99), "direct-p99-µs")
			b.ReportMetric(us(p50), "proxy-p50-µs")
			b.ReportMetric(us(p99), "proxy-p99-µs")
			b.ReportMetric(us(p99-d99), "added-p99-µs")
			b.ReportMetric(float64(p99)/float64(max(d99, 1)), "p99-ratio")
			b.ReportMetric(us(percentile(plainAll, 99)), "plain-p99-µs")
		})
	}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// percentile is the p-th percentile of ds (nearest rank).
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100
	return s[max(i-1, 0)]
}
