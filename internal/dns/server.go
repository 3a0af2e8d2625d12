// Package dns serves the fleet's DNS zone (default "internal"): where
// each app's machines are, all regions nearest first, one region, the N
// nearest regions, one machine, SRV records with ports, and TXT views of
// the global map. Every answer comes from a Locator (the local region's
// agents, then the global map and other regions' Lookup services, all
// cached briefly and bounded in time), so a region that does not answer
// is left out of the answer instead of holding it up. The package owns
// the DNS protocol side: parsing names, building records, rcodes, EDNS0
// and truncation, forwarding names outside the zone; it decides nothing
// about where apps run.
package dns

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	miekg "github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/patina-db/patina/internal/locate"
)

// advertisedUDPSize is the UDP payload size the server says it accepts
// in its EDNS0 OPT record (the size that avoids IP fragmentation).
const advertisedUDPSize = 1232

// readUDPSize is the largest UDP query read.
const readUDPSize = 4096

// forwardTimeout bounds one exchange with one recursor.
const forwardTimeout = 2 * time.Second

// Server is a DNS server for the zone. New binds its sockets; Run serves
// until the context ends.
type Server struct {
	cfg       Config
	log       *slog.Logger
	zone      string
	res       *resolver
	loc       Locator
	closer    io.Closer // the locator, when the server made it
	recursors []string
	udp       net.PacketConn
	tcp       net.Listener
	stats     counters

	mu     sync.Mutex
	runCtx context.Context
}

// New validates cfg, makes the locator and binds UDP and TCP on the same
// port (Addr says which, with port 0).
func New(cfg Config, logger *slog.Logger) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	loc, err := locate.New(locate.ConfigFrom(cfg.Region, cfg.Global, cfg.GRPC, cfg.Cache, logger.With("component", "locate")))
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	s, err := newServer(cfg, loc, logger)
	if err != nil {
		loc.Close()
		return nil, err
	}
	s.closer = loc
	return s, nil
}

// newServer binds a server answering from loc.
func newServer(cfg Config, loc Locator, logger *slog.Logger) (*Server, error) {
	zone, err := zoneName(cfg.DNS.Zone)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	var recursors []string
	for _, r := range cfg.DNS.Recursors {
		a, err := recursorAddr(r)
		if err != nil {
			return nil, fmt.Errorf("dns: %w", err)
		}
		recursors = append(recursors, a)
	}
	udp, tcp, err := listen(cfg.DNS.Addr)
	if err != nil {
		return nil, fmt.Errorf("dns: %w", err)
	}
	s := &Server{cfg: cfg, log: logger, zone: zone, loc: loc, recursors: recursors, udp: udp, tcp: tcp, runCtx: context.Background()}
	s.res = &resolver{loc: loc, zone: zone, ttl: uint32(cfg.DNS.TTL / time.Second), serial: uint32(time.Now().Unix())}
	if ap, err := netip.ParseAddrPort(udp.LocalAddr().String()); err == nil && !ap.Addr().IsUnspecified() {
		s.res.ns = []netip.Addr{ap.Addr().Unmap()}
	}
	return s, nil
}

// listen binds UDP and TCP on one port; with port 0, it retries when
// the port UDP got is taken for TCP.
func listen(addr string) (net.PacketConn, net.Listener, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	var lastErr error
	for range 20 {
		udp, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, fmt.Errorf("listen udp %s: %w", addr, err)
		}
		got := strconv.Itoa(udp.LocalAddr().(*net.UDPAddr).Port)
		tcp, err := net.Listen("tcp", net.JoinHostPort(host, got))
		if err == nil {
			return udp, tcp, nil
		}
		udp.Close()
		lastErr = fmt.Errorf("listen tcp %s: %w", net.JoinHostPort(host, got), err)
		if port != "0" {
			break
		}
	}
	return nil, nil, lastErr
}

// Addr is the address the server answers on, UDP and TCP.
func (s *Server) Addr() string { return s.udp.LocalAddr().String() }

// Close releases the sockets and the locator of a server that is not
// running; Run does it itself when it returns.
func (s *Server) Close() error {
	errs := []error{ignoreClosed(s.udp.Close()), ignoreClosed(s.tcp.Close())}
	if s.closer != nil {
		errs = append(errs, s.closer.Close())
	}
	return errors.Join(errs...)
}

// Run serves UDP and TCP (and the metrics endpoint when configured)
// until ctx ends, then shuts down and closes everything.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	s.runCtx = ctx
	s.mu.Unlock()
	defer s.Close()
	servers := []*miekg.Server{
		{PacketConn: s.udp, UDPSize: readUDPSize},
		{Listener: s.tcp, ReadTimeout: 5 * time.Second, IdleTimeout: func() time.Duration { return 10 * time.Second }},
	}
	errc := make(chan error, len(servers)+1)
	started := make(chan struct{}, len(servers))
	for _, srv := range servers {
		srv.Handler = s
		srv.MsgAcceptFunc = func(dh miekg.Header) miekg.MsgAcceptAction {
			action := accept(dh)
			if action != miekg.MsgAccept {
				s.stats.rejected.Add(1)
			}
			return action
		}
		srv.MsgInvalidFunc = func([]byte, error) { s.stats.malformed.Add(1) }
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go func() { errc <- srv.ActivateAndServe() }()
	}
	var metrics *http.Server
	if s.cfg.Metrics.Addr != "" {
		ln, err := net.Listen("tcp", s.cfg.Metrics.Addr)
		if err != nil {
			errc <- fmt.Errorf("dns: metrics: %w", err)
		} else {
			reg := prometheus.NewRegistry()
			reg.MustRegister(s.Collectors()...)
			metrics = &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
			go func() {
				if err := metrics.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
					errc <- fmt.Errorf("dns: metrics: %w", err)
				}
			}()
		}
	}
	s.log.Info("dns serving", "addr", s.Addr(), "zone", s.zone, "region", s.cfg.Region.Name, "recursors", s.recursors)
	var runErr error
	running := 0
wait:
	for running < len(servers) {
		select {
		case <-started:
			running++
		case err := <-errc:
			runErr = err
			break wait
		}
	}
	if runErr == nil {
		select {
		case <-ctx.Done():
		case err := <-errc:
			runErr = err
		}
	}
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for _, srv := range servers {
		srv.ShutdownContext(shutdown) // not started: nothing to stop
	}
	if metrics != nil {
		metrics.Shutdown(shutdown)
	}
	if runErr != nil {
		return fmt.Errorf("dns: %w", runErr)
	}
	return nil
}

// accept decides from the header alone: responses are dropped, opcodes
// other than QUERY are not implemented, a query must hold one question
// and no answer or authority records.
func accept(dh miekg.Header) miekg.MsgAcceptAction {
	const qr = 1 << 15
	if dh.Bits&qr != 0 {
		return miekg.MsgIgnore
	}
	if opcode := int(dh.Bits>>11) & 0xF; opcode != miekg.OpcodeQuery {
		return miekg.MsgRejectNotImplemented
	}
	if dh.Qdcount != 1 || dh.Ancount != 0 || dh.Nscount != 0 || dh.Arcount > 2 {
		return miekg.MsgReject
	}
	return miekg.MsgAccept
}

// ServeDNS answers one query.
func (s *Server) ServeDNS(w miekg.ResponseWriter, req *miekg.Msg) {
	_, tcp := w.LocalAddr().(*net.TCPAddr)
	s.mu.Lock()
	ctx := s.runCtx
	s.mu.Unlock()
	resp := s.respond(ctx, req, !tcp)
	if err := w.WriteMsg(resp); err != nil {
		s.log.Debug("dns: write", "remote", w.RemoteAddr(), "err", err)
	}
}

// respond builds the response to req, limited to what the transport
// carries (512 bytes over UDP without EDNS0, the client's buffer size
// with it).
func (s *Server) respond(ctx context.Context, req *miekg.Msg, udp bool) *miekg.Msg {
	s.stats.queries.Add(1)
	resp := s.answer(ctx, req, udp)
	size := miekg.MaxMsgSize
	if udp {
		size = miekg.MinMsgSize
		if opt := req.IsEdns0(); opt != nil {
			size = max(int(opt.UDPSize()), miekg.MinMsgSize)
		}
	}
	resp.Truncate(size)
	if resp.Truncated {
		s.stats.truncated.Add(1)
	}
	s.stats.count(resp.Rcode)
	return resp
}

// answer builds the response to req, whole.
func (s *Server) answer(ctx context.Context, req *miekg.Msg, udp bool) *miekg.Msg {
	resp := new(miekg.Msg)
	resp.SetReply(req)
	resp.RecursionAvailable = len(s.recursors) > 0
	opt := req.IsEdns0()
	if opt != nil {
		resp.SetEdns0(advertisedUDPSize, false)
		if opt.Version() != 0 {
			resp.Rcode = miekg.RcodeBadVers
			return resp
		}
	}
	switch {
	case req.Opcode != miekg.OpcodeQuery:
		resp.Rcode = miekg.RcodeNotImplemented
		return resp
	case len(req.Question) != 1:
		resp.Rcode = miekg.RcodeFormatError
		return resp
	}
	q := req.Question[0]
	switch {
	case q.Qtype == miekg.TypeNone:
		resp.Rcode = miekg.RcodeFormatError
		return resp
	case q.Qclass != miekg.ClassINET && q.Qclass != miekg.ClassANY:
		resp.Rcode = miekg.RcodeRefused
		return resp
	}
	n, in := parseName(q.Name, s.zone)
	if !in {
		if len(s.recursors) > 0 {
			return s.forward(req, udp)
		}
		resp.Rcode = miekg.RcodeRefused
		return resp
	}
	resp.Authoritative = true
	switch q.Qtype {
	case miekg.TypeAXFR, miekg.TypeIXFR, miekg.TypeMAILA, miekg.TypeMAILB:
		resp.Rcode = miekg.RcodeNotImplemented // the zone is not transferred
		return resp
	}
	res := s.res.resolve(ctx, q, n)
	if res.degraded {
		s.stats.degraded.Add(1)
		s.log.Debug("dns: answer without an unreachable region", "name", q.Name)
	}
	resp.Rcode = res.rcode
	resp.Answer = res.answer
	resp.Extra = append(res.extra, resp.Extra...) // the OPT record last
	if res.rcode == miekg.RcodeNameError || (res.rcode == miekg.RcodeSuccess && len(res.answer) == 0) {
		resp.Ns = []miekg.RR{s.res.soa(s.zone)}
	}
	return resp
}

// forward asks the recursors, in order, for a name outside the zone,
// over the transport the query came on.
func (s *Server) forward(req *miekg.Msg, udp bool) *miekg.Msg {
	c := &miekg.Client{Net: "tcp", Timeout: forwardTimeout}
	if udp {
		c.Net = "udp"
	}
	for _, addr := range s.recursors {
		resp, _, err := c.Exchange(req.Copy(), addr)
		if err == nil && resp != nil {
			s.stats.forwarded.Add(1)
			resp.Id = req.Id
			return resp
		}
		s.log.Debug("dns: recursor", "recursor", addr, "name", req.Question[0].Name, "err", err)
	}
	s.stats.forwardFailed.Add(1)
	resp := new(miekg.Msg)
	resp.SetRcode(req, miekg.RcodeServerFailure)
	resp.RecursionAvailable = true
	if req.IsEdns0() != nil {
		resp.SetEdns0(advertisedUDPSize, false)
	}
	return resp
}

// ignoreClosed drops the error of closing what was closed already.
func ignoreClosed(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}
