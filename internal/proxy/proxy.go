// Package proxy is patina's HTTP edge proxy: it routes a request for
// <app>.<domain> to the nearest healthy started machine of the app, in
// the local region first and otherwise in the nearest region that runs
// it, and retries a machine that refused the connection or is gone on
// the next candidate where that is safe. It learns where apps run from
// the locate package, lazily on an app's first request, and keeps that
// fresh for as long as the app gets requests. It owns the routing,
// selection and retry decisions; it never writes to any cluster.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/patina-db/patina/internal/locate"
)

// Proxy is a running HTTP proxy. Safe for concurrent use.
type Proxy struct {
	cfg    Config
	log    *slog.Logger
	loc    *locate.Locator
	apps   *appTable
	router router
	rp     *httputil.ReverseProxy
	tr     *http.Transport
	srv    *http.Server
	ln     net.Listener
	stop   context.CancelFunc
	ran    atomic.Bool
	// serving counts requests in their handler, upgraded tunnels
	// included, which http.Server's Shutdown does not wait for.
	serving sync.WaitGroup

	requests, retries, badRequests, unknown, noCandidate, failed atomic.Uint64
}

// Stats are counters since the proxy started.
type Stats struct {
	Requests    uint64 // every request received
	Retries     uint64 // attempts beyond a request's first
	BadRequests uint64 // answered 400: no app named
	Unknown     uint64 // answered 404: no region runs the app
	NoCandidate uint64 // answered 502: no healthy machine reachable
	Failed      uint64 // answered 502: every attempt failed, or a retry was not safe
	Apps        int    // apps whose state is held now
}

// New returns a proxy listening on cfg.Proxy.Addr (port 0: any free
// one, see Addr); it serves once Run is called, and Run releases the
// listener and every connection when it returns.
func New(cfg Config, logger *slog.Logger) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	loc, err := locate.New(locate.ConfigFrom(cfg.Region, cfg.Global, cfg.GRPC, cfg.Cache, logger))
	if err != nil {
		return nil, fmt.Errorf("proxy: %w", err)
	}
	ln, err := net.Listen("tcp", cfg.Proxy.Addr)
	if err != nil {
		loc.Close()
		return nil, fmt.Errorf("proxy: listen: %w", err)
	}
	bg, stop := context.WithCancel(context.Background())
	p := &Proxy{
		cfg: cfg, log: logger, loc: loc, ln: ln, stop: stop,
		router: router{domain: strings.ToLower(cfg.Proxy.Domain), header: cfg.Proxy.AppHeader},
	}
	p.apps = &appTable{loc: loc, ttl: cfg.Cache.TTL, downFor: max(5*cfg.Cache.TTL, time.Second), log: logger, ctx: bg}
	p.tr = newTransport(cfg.Proxy.DialTimeout)
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			// The machine is chosen per attempt by the retrier; the
			// inbound Host is kept, so the app sees the name it was
			// asked by.
			pr.Out.URL.Scheme, pr.Out.URL.Host = "http", pr.In.Host
			pr.SetXForwarded()
		},
		Transport:      &retrier{base: p.tr, bodyLimit: cfg.Proxy.RetryBodyLimit, markDown: p.apps.markDown, retries: &p.retries},
		ModifyResponse: checkUpgrade,
		ErrorHandler:   p.proxyError,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
		BufferPool:     newBufferPool(),
	}
	p.srv = &http.Server{
		Handler: p,
		// Requests run under bg, which Run cancels once the server has
		// shut down: that ends upgraded tunnels (WebSockets), which the
		// server no longer tracks once it has handed them over.
		BaseContext:       func(net.Listener) context.Context { return bg },
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	return p, nil
}

// checkUpgrade refuses a machine's 101 Switching Protocols to anything
// but the protocol the request asked for. The reverse proxy would refuse
// it too, but without closing the machine's connection, which then
// stayed open and counted in flight for good.
func checkUpgrade(res *http.Response) error {
	if res.StatusCode != http.StatusSwitchingProtocols {
		return nil
	}
	asked, got := upgradeTo(res.Request.Header), upgradeTo(res.Header)
	if asked == "" || !strings.EqualFold(asked, got) {
		return fmt.Errorf("the machine switched to protocol %q; the request asked for %q", got, asked)
	}
	return nil
}

// upgradeTo is the protocol a message's headers upgrade to, or "".
func upgradeTo(h http.Header) string {
	for _, v := range h.Values("Connection") {
		for _, tok := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
				return h.Get("Upgrade")
			}
		}
	}
	return ""
}

// newTransport is how the proxy reaches machines: bounded dials, a pool
// of kept-alive connections per machine, no timeout on the response (a
// machine may stream or long-poll), no transparent compression.
func newTransport(dialTimeout time.Duration) *http.Transport {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	return &http.Transport{
		DialContext:           d.DialContext,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true,
	}
}

// Addr is the address the proxy listens on.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Run serves until ctx ends, then stops taking requests, waits up to the
// shutdown timeout for those in flight, and releases everything.
func (p *Proxy) Run(ctx context.Context) error {
	if !p.ran.CompareAndSwap(false, true) {
		return errors.New("proxy: Run called twice")
	}
	p.log.Info("proxy: serving", "addr", p.Addr(), "region", p.cfg.Region.Name, "domain", p.cfg.Proxy.Domain)
	var wg sync.WaitGroup
	jctx, stopJanitor := context.WithCancel(ctx)
	wg.Go(func() { p.dropIdleApps(jctx) })
	serveErr := make(chan error, 1)
	go func() { serveErr <- p.srv.Serve(p.ln) }()

	var err error
	select {
	case err = <-serveErr:
		err = fmt.Errorf("proxy: serve: %w", err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.Proxy.ShutdownTimeout)
		if serr := p.srv.Shutdown(sctx); serr != nil {
			p.log.Warn("proxy: requests still in flight at shutdown were cut", "err", serr)
			p.srv.Close()
		}
		cancel()
		<-serveErr
	}
	stopJanitor()
	p.stop()
	p.serving.Wait()
	wg.Wait()
	p.apps.bg.Wait()
	p.tr.CloseIdleConnections()
	if cerr := p.loc.Close(); cerr != nil {
		p.log.Debug("proxy: closing gRPC connections", "err", cerr)
	}
	p.log.Info("proxy: stopped")
	return err
}

// dropIdleApps forgets apps without requests for the idle timeout.
func (p *Proxy) dropIdleApps(ctx context.Context) {
	idle := p.cfg.Proxy.IdleTimeout
	tick := time.NewTicker(max(idle/4, 5*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			p.apps.dropIdle(now, idle)
		}
	}
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() Stats {
	return Stats{
		Requests: p.requests.Load(), Retries: p.retries.Load(), BadRequests: p.badRequests.Load(),
		Unknown: p.unknown.Load(), NoCandidate: p.noCandidate.Load(), Failed: p.failed.Load(),
		Apps: p.apps.loaded(),
	}
}

// ServeHTTP routes one request: the app from the Host (or the app
// header), where it runs from the app's view, then the machines to try.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.serving.Add(1)
	defer p.serving.Done()
	p.requests.Add(1)
	app, err := p.router.appOf(r)
	if err != nil {
		p.badRequests.Add(1)
		refuse(w, http.StatusBadRequest, err.Error())
		return
	}
	st, v, err := p.apps.view(r.Context(), app)
	switch {
	case errors.Is(err, locate.ErrUnknownApp) || (err == nil && v.unknown):
		p.unknown.Add(1)
		refuse(w, http.StatusNotFound, fmt.Sprintf("unknown app %q: no region runs it", app))
		return
	case err != nil:
		p.noCandidate.Add(1)
		refuse(w, http.StatusBadGateway, fmt.Sprintf("app %q: finding its machines: %v", app, err))
		return
	}
	n := p.cfg.Proxy.MaxAttempts
	cands := v.candidates(n, st.turn.Add(1), time.Now().UnixNano(), make([]*target, 0, n))
	if len(cands) == 0 {
		p.noCandidate.Add(1)
		msg := fmt.Sprintf("app %q: no healthy started machine in any reachable region", app)
		if len(v.unreachable) > 0 {
			msg += fmt.Sprintf(" (unreachable: %s)", strings.Join(v.unreachable, ", "))
		}
		refuse(w, http.StatusBadGateway, msg)
		return
	}
	p.rp.ServeHTTP(w, r.WithContext(contextWithRoute(r.Context(), &route{app: app, cands: cands})))
}

// proxyError answers a request no machine answered.
func (p *Proxy) proxyError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		p.log.Debug("proxy: client went away", "host", r.Host, "err", err)
		w.WriteHeader(http.StatusBadGateway) // nobody reads it
		return
	}
	p.failed.Add(1)
	p.log.Warn("proxy: request failed", "host", r.Host, "method", r.Method, "path", r.URL.Path, "err", err)
	refuse(w, http.StatusBadGateway, err.Error())
}

// refuse answers with a status and a plain-text reason.
func refuse(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprintf(w, "patina proxy: %s\n", msg)
}

// bufferPool recycles the buffers responses are copied through.
type bufferPool struct{ p sync.Pool }

func newBufferPool() *bufferPool {
	return &bufferPool{p: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}
}

func (b *bufferPool) Get() []byte  { return *(b.p.Get().(*[]byte)) }
func (b *bufferPool) Put(s []byte) { b.p.Put(&s) }
