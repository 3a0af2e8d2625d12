package watchdog

import (
	"net"
	"sync"
	"time"
)

// Dials is a probe for a service that serves on addr: alive while a
// connection is accepted within timeout.
func Dials(network, addr string, timeout time.Duration) func() bool {
	return func() bool {
		c, err := net.DialTimeout(network, addr, timeout)
		if err != nil {
			return false
		}
		c.Close()
		return true
	}
}

// Advances is a probe for a service whose loop counts its iterations:
// alive while the count has moved since the previous probe (the first
// probe only takes note).
func Advances(count func() uint64) func() bool {
	var mu sync.Mutex
	last, seen := uint64(0), false
	return func() bool {
		mu.Lock()
		defer mu.Unlock()
		n := count()
		ok := !seen || n != last
		last, seen = n, true
		return ok
	}
}
