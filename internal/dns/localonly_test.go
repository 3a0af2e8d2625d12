package dns_test

import (
	"context"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	miekg "github.com/miekg/dns"

	"github.com/patina-db/patina/internal/dns"
	"github.com/patina-db/patina/internal/locate/locatetest"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
)

// startOneAppLookup serves a region whose only app, "web", has one
// healthy machine.
func startOneAppLookup(t *testing.T) string {
	return locatetest.Lookup(t, locatetest.App("ams", "web",
		&regionalv1.Machine{Id: "m1", App: "web", Region: "ams", Address: "127.0.0.11", Port: 8080, State: "started", Healthy: true}))
}

// TestLocalOnlyUnknownApp: without [global] agents ("none: local region
// only"), a name no app has is NXDOMAIN, as it is with a global map: no
// map lists nothing, which is not a map that did not answer (SERVFAIL).
func TestLocalOnlyUnknownApp(t *testing.T) {
	cfg := dns.DefaultConfig()
	cfg.DNS.Addr = "127.0.0.1:0"
	cfg.Region.Name = "ams"
	cfg.Region.Lookup = []string{startOneAppLookup(t)}
	srv := startServer(t, cfg)
	c := client{t: t, addr: srv.Addr()}
	c.expect("web.internal", miekg.TypeA, miekg.RcodeSuccess, "127.0.0.11")
	c.expect("nope.internal", miekg.TypeA, miekg.RcodeNameError)
}

// countHandler counts the records logged at Warn or above.
type countHandler struct{ warns *atomic.Int64 }

func (h countHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.warns.Add(1)
	}
	return nil
}
func (h countHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countHandler) WithGroup(string) slog.Handler      { return h }

// TestGlobalDownWarnsOncePerPeriod: with the global map unreachable,
// the failure is logged once per cache period (docs/dns.md), not once
// per query that meets the cached error.
func TestGlobalDownWarnsOncePerPeriod(t *testing.T) {
	dead, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.Addr().String()
	dead.Close() // connection refused: the global agent is down

	cfg := dns.DefaultConfig()
	cfg.DNS.Addr = "127.0.0.1:0"
	cfg.Region.Name = "ams"
	cfg.Region.Lookup = []string{startOneAppLookup(t)}
	cfg.Global.Agents = []string{deadAddr}
	cfg.Cache.TTL = time.Minute // the whole test is one cache period
	var warns atomic.Int64
	srv, err := dns.New(cfg, slog.New(countHandler{warns: &warns}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()

	c := client{t: t, addr: srv.Addr()}
	for range 50 {
		c.expect("web.internal", miekg.TypeA, miekg.RcodeSuccess, "127.0.0.11")
	}
	if n := warns.Load(); n > 5 {
		t.Fatalf("%d warnings for 50 queries in one cache period with the global map down; want a few", n)
	}
}
