package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/locate"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
)

// fixedLocator: "web" has one healthy machine in ams at addr:port.
type fixedLocator struct {
	addr string
	port int
}

func (f fixedLocator) Everywhere(_ context.Context, app string, _ bool) (locate.Answer, error) {
	if app != "web" {
		return locate.Answer{}, locate.ErrUnknownApp
	}
	return locate.Answer{Regions: []locate.RegionMachines{{Region: "ams", Machines: []*regionalv1.Machine{
		{Id: "m1", App: "web", Region: "ams", Address: f.addr, Port: uint32(f.port), State: "started", Healthy: true},
	}}}}, nil
}

// runLocal runs a proxy of region ams whose local agents are lookup (or
// none that answers); loc, when set, replaces its locator. stop ends Run
// and returns its error.
func runLocal(t *testing.T, lookup string, loc locator, edit func(*Config)) (p *Proxy, stop func() error) {
	t.Helper()
	if lookup == "" {
		lookup = "127.0.0.1:1"
	}
	cfg := DefaultConfig()
	cfg.Proxy.Addr = "127.0.0.1:0"
	cfg.Region.Name = "ams"
	cfg.Region.Lookup = []string{lookup}
	if edit != nil {
		edit(&cfg)
	}
	p, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if loc != nil {
		p.apps.loc = loc
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	var once sync.Once
	var err2 error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err2 = <-done:
			case <-time.After(10 * time.Second):
				err2 = fmt.Errorf("Run did not return within 10s")
			}
		})
		return err2
	}
	t.Cleanup(func() { stop() })
	return p, stop
}

// switching answers a request 101 Switching Protocols to "echo".
func switching(c net.Conn) {
	io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
}

// TestRunCutsUpgradedConnections: Run releases every connection when it
// returns, upgraded (WebSocket-like) ones too, which http.Server's
// Shutdown and Close do not track once hijacked.
func TestRunCutsUpgradedConnections(t *testing.T) {
	echo := rawBackend(t, func(c net.Conn, br *bufio.Reader, _ *http.Request) {
		switching(c)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(c, line)
		}
	})
	p, stop := runLocal(t, "", fixedLocator{addr: "127.0.0.1", port: echo}, func(c *Config) { c.Proxy.ShutdownTimeout = 200 * time.Millisecond })

	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: web.internal\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	io.WriteString(c, "before\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := br.ReadString('\n'); err != nil || line != "before\n" {
		t.Fatalf("echo before shutdown: %q %v", line, err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	// Run has returned: the tunnel is gone.
	io.WriteString(c, "after\n")
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if line, err := br.ReadString('\n'); err == nil {
		t.Fatalf("Run returned but the upgraded connection still works: echoed %q", strings.TrimSpace(line))
	}
}

// TestMismatchedUpgradeReleasesMachine: a machine that answers 101 to a
// request that asked for no upgrade (or another protocol) gets the
// client a 502, and its connection is closed and its in-flight count
// falls back: otherwise least-loaded selection would avoid it for good.
func TestMismatchedUpgradeReleasesMachine(t *testing.T) {
	var open atomic.Int64
	port := rawBackend(t, func(c net.Conn, br *bufio.Reader, _ *http.Request) {
		open.Add(1)
		defer open.Add(-1)
		switching(c)
		io.Copy(io.Discard, br) // until the proxy closes its side
	})
	p, _ := runLocal(t, "", fixedLocator{addr: "127.0.0.1", port: port}, nil)
	if status, _ := getWeb(t, p); status != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", status)
	}
	v, _ := p.apps.apps.Load("web")
	st := v.(*appState)
	deadline := time.Now().Add(5 * time.Second)
	for {
		st.mu.Lock()
		inflight := st.machines["m1"].inflight.Load()
		st.mu.Unlock()
		if inflight == 0 && open.Load() == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("5s after the 502: machine m1 has %d request(s) in flight, %d connection(s) to it held open; want 0, 0",
				inflight, open.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// getWeb GETs / of web.internal through p.
func getWeb(t *testing.T, p *Proxy) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.Addr()+"/", nil)
	req.Host = "web.internal"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp.StatusCode, string(body)
}
