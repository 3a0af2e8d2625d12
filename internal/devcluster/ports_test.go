package devcluster_test

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/patina-db/patina/internal/devcluster"
)

// TestPortsStayOutOfTheEphemeralRange: ports handed out without a base
// are distinct, free for TCP and UDP, and below the range the kernel
// gives outgoing connections, which could otherwise take one before its
// agent binds it.
func TestPortsStayOutOfTheEphemeralRange(t *testing.T) {
	low := 32768
	if data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(data)); len(f) == 2 {
			low, _ = strconv.Atoi(f[0])
		}
	}
	var p devcluster.Ports
	seen := map[int]bool{}
	for i := 0; i < 10; i++ {
		ports, err := p.Take(4)
		if err != nil {
			t.Fatal(err)
		}
		for _, port := range ports {
			if seen[port] {
				t.Fatalf("port %d handed out twice", port)
			}
			seen[port] = true
			if port >= low || port < 10000 {
				t.Fatalf("port %d outside [10000, %d)", port, low)
			}
			addr := fmt.Sprintf("127.0.0.1:%d", port)
			ln, err := net.Listen("tcp", addr)
			if err != nil {
				t.Fatalf("port %d not free for TCP: %v", port, err)
			}
			ln.Close()
			pc, err := net.ListenPacket("udp", addr)
			if err != nil {
				t.Fatalf("port %d not free for UDP: %v", port, err)
			}
			pc.Close()
		}
	}
}

// TestPortsClaimBlocksOfTheirOwn: two Ports never hand out the same port,
// even one the other handed out and whose listener has since closed (an
// agent stopped, about to start again on its ports).
func TestPortsClaimBlocksOfTheirOwn(t *testing.T) {
	var a, b devcluster.Ports
	mine := map[int]bool{}
	for i := 0; i < 20; i++ { // past one block
		ports, err := a.Take(4)
		if err != nil {
			t.Fatal(err)
		}
		for _, port := range ports {
			mine[port] = true
		}
	}
	for i := 0; i < 20; i++ {
		ports, err := b.Take(4)
		if err != nil {
			t.Fatal(err)
		}
		for _, port := range ports {
			if mine[port] {
				t.Fatalf("port %d handed out by both", port)
			}
		}
	}
}
