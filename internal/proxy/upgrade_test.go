package proxy

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
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

// echoUpgradeBackend answers an Upgrade request with 101 and then echoes
// each line back.
func echoUpgradeBackend(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					io.WriteString(c, line)
				}
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestRunCutsUpgradedConnections: Run releases every connection when it
// returns, upgraded (WebSocket-like) ones too, which http.Server's
// Shutdown and Close do not track once hijacked.
func TestRunCutsUpgradedConnections(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Proxy.Addr = "127.0.0.1:0"
	cfg.Region.Name = "ams"
	cfg.Region.Lookup = []string{"127.0.0.1:1"}
	cfg.Proxy.ShutdownTimeout = 200 * time.Millisecond
	p, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.apps.loc = fixedLocator{addr: "127.0.0.1", port: echoUpgradeBackend(t)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer cancel()

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

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10s")
	}
	// Run has returned: the tunnel should be gone.
	io.WriteString(c, "after\n")
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if line, err := br.ReadString('\n'); err == nil {
		t.Fatalf("Run returned but the upgraded connection still works: echoed %q", strings.TrimSpace(line))
	}
}

// upgradeAnywayBackend answers every request 101 with Upgrade: echo,
// whatever was asked, then holds the connection open.
func upgradeAnywayBackend(t *testing.T) (port int, open *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	open = &atomic.Int64{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				open.Add(1)
				defer open.Add(-1)
				io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
				io.Copy(io.Discard, br) // until the proxy closes its side
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, open
}

// TestMismatchedUpgradeReleasesMachine: a machine that answers 101 to a
// request that asked for no upgrade (or another protocol) gets the
// client a 502, and its connection is closed and its in-flight count
// falls back: otherwise least-loaded selection would avoid it for good.
func TestMismatchedUpgradeReleasesMachine(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Proxy.Addr = "127.0.0.1:0"
	cfg.Region.Name = "ams"
	cfg.Region.Lookup = []string{"127.0.0.1:1"}
	p, err := New(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	port, open := upgradeAnywayBackend(t)
	p.apps.loc = fixedLocator{addr: "127.0.0.1", port: port}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	req, _ := http.NewRequest("GET", "http://"+p.Addr()+"/", nil)
	req.Host = "web.internal"
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("status %d, want 502", resp.StatusCode)
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
