package proxy

import (
	"net/http"
	"testing"

	"github.com/patina-db/patina/internal/locate/locatetest"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
)

// TestStoppedAppIsNot404: a local-region-only proxy, app web whose only
// machine is stopped. 404 is for an app "neither the global map nor the
// local region knows" (docs/proxy.md); a known app without a healthy
// started machine is 502.
func TestStoppedAppIsNot404(t *testing.T) {
	lookup := locatetest.Lookup(t, locatetest.App("ams", "web",
		&regionalv1.Machine{Id: "m1", App: "web", Region: "ams", Address: "127.0.0.1", Port: 8080, State: "stopped"}))
	p, _ := runLocal(t, lookup, nil, nil)
	if status, body := getWeb(t, p); status != http.StatusBadGateway {
		t.Fatalf("web (known, its machine stopped): %d %q, want 502", status, body)
	}
}
