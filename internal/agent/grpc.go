package agent

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"

	"github.com/patina-db/patina/global"
	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/internal/subs"
	globalv1 "github.com/patina-db/patina/proto/patina/global/v1"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
	"github.com/patina-db/patina/regional/lookup"
)

// GRPCConfig configures the gRPC listener. Which service it serves
// follows from the schema: Lookup where the regional tables exist,
// AppMap where the global ones do; grpc.health.v1 and reflection always.
type GRPCConfig struct {
	// Addr is the listen address; empty: no gRPC.
	Addr string `toml:"addr"`
	// BearerToken, when set, is required on every call but health checks
	// (metadata "authorization: Bearer <token>").
	BearerToken string `toml:"bearer_token"`
	// CertFile and KeyFile, when set, serve TLS.
	CertFile string `toml:"cert_file"`
	KeyFile  string `toml:"key_file"`
	// ClientCAFile, when set with TLS, requires client certificates
	// signed by it.
	ClientCAFile string `toml:"client_ca_file"`
}

func (c GRPCConfig) validate() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("grpc.cert_file and grpc.key_file go together")
	}
	if c.ClientCAFile != "" && c.CertFile == "" {
		return errors.New("grpc.client_ca_file needs grpc.cert_file and grpc.key_file")
	}
	return nil
}

// grpcServer is the agent's gRPC listener and what it serves.
type grpcServer struct {
	ln       net.Listener
	srv      *grpc.Server
	health   *health.Server
	services []string
	// endStreams ends every streaming call (WatchApp never ends by
	// itself): stop calls it before waiting for the calls in flight.
	endStreams context.CancelFunc
	unary      sync.WaitGroup // unary calls in flight
}

// serverOptions are the TLS and token options of cfg; reading the
// certificate files may fail.
func (cfg GRPCConfig) serverOptions() ([]grpc.ServerOption, error) {
	var opts []grpc.ServerOption
	if cfg.CertFile != "" {
		tc, err := serverTLS(cfg)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(tc)))
	}
	if cfg.BearerToken != "" {
		auth := tokenAuth(cfg.BearerToken)
		opts = append(opts, grpc.ChainUnaryInterceptor(auth.unary), grpc.ChainStreamInterceptor(auth.stream))
	}
	return opts, nil
}

// newGRPCServer serves on ln the services the schema supports.
func newGRPCServer(ln net.Listener, opts []grpc.ServerOption, st *store.Store, engine *subs.Engine, region string, log *slog.Logger) *grpcServer {
	streams, endStreams := context.WithCancel(context.Background())
	opts = append(opts, grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, cancel := context.WithCancel(ss.Context())
		defer cancel()
		defer context.AfterFunc(streams, cancel)()
		err := handler(srv, &stoppableStream{ServerStream: ss, ctx: ctx})
		if streams.Err() != nil && (errors.Is(err, context.Canceled) || status.Code(err) == codes.Canceled) {
			// Ended by the stop, not by the client: UNAVAILABLE is what
			// clients retry, elsewhere.
			return status.Error(codes.Unavailable, "the agent is stopping")
		}
		return err
	}))
	g := &grpcServer{ln: ln, health: health.NewServer(), endStreams: endStreams}
	opts = append(opts, grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		g.unary.Add(1)
		defer g.unary.Done()
		return h(ctx, req)
	}))
	srv := grpc.NewServer(opts...)
	g.srv = srv
	tables := st.Schema().TableNames()
	if slices.Contains(tables, "machines") && slices.Contains(tables, "machine_checks") {
		regionalv1.RegisterLookupServer(srv, lookup.New(st, engine, region))
		g.services = append(g.services, regionalv1.Lookup_ServiceDesc.ServiceName)
	}
	if slices.Contains(tables, "app_regions") && slices.Contains(tables, "regions") {
		globalv1.RegisterAppMapServer(srv, global.New(st, log))
		g.services = append(g.services, globalv1.AppMap_ServiceDesc.ServiceName)
	}
	healthpb.RegisterHealthServer(srv, g.health)
	for _, s := range g.services {
		g.health.SetServingStatus(s, healthpb.HealthCheckResponse_SERVING)
	}
	reflection.Register(srv)
	return g
}

func serverTLS(cfg GRPCConfig) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("grpc tls: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if cfg.ClientCAFile != "" {
		pem, err := os.ReadFile(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("grpc tls: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("grpc tls: %s holds no PEM certificate", cfg.ClientCAFile)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// serve runs until stop; it returns nil when stopped.
func (g *grpcServer) serve() error {
	if err := g.srv.Serve(g.ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("grpc: %w", err)
	}
	return nil
}

// stoppableStream is a server stream whose context also ends when the
// server stops.
type stoppableStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s *stoppableStream) Context() context.Context { return s.ctx }

// stop marks every service not serving, ends the streaming calls (their
// clients reconnect elsewhere, as an HTTP stream's do), lets unary calls
// in flight finish until ctx ends, then closes what is left: a stream
// whose handler cannot see its context end (blocked sending to a client
// that does not read, or a reflection stream waiting on its client) is
// cut, rather than waited for until ctx ends, which would leave the HTTP
// server's shutdown no time.
func (g *grpcServer) stop(ctx context.Context) {
	g.health.Shutdown()
	g.endStreams()
	done := make(chan struct{})
	go func() { g.srv.GracefulStop(); close(done) }()
	unaryDone := make(chan struct{})
	go func() { g.unary.Wait(); close(unaryDone) }()
	select {
	case <-unaryDone:
	case <-ctx.Done():
	}
	select {
	case <-done:
	case <-time.After(streamGrace):
		g.srv.Stop()
		<-done
	}
}

// streamGrace is how long streams ended by the stop get to send their
// UNAVAILABLE before what is left is closed.
const streamGrace = 100 * time.Millisecond

// tokenAuth requires a bearer token on every call but health checks.
type tokenAuth string

func (t tokenAuth) check(ctx context.Context, method string) error {
	if strings.HasPrefix(method, "/grpc.health.v1.Health/") {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		tok, ok := strings.CutPrefix(v, "Bearer ")
		if ok && subtle.ConstantTimeCompare([]byte(tok), []byte(t)) == 1 {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "a bearer token is required (metadata authorization: Bearer <token>)")
}

func (t tokenAuth) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if err := t.check(ctx, info.FullMethod); err != nil {
		return nil, err
	}
	return h(ctx, req)
}

func (t tokenAuth) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if err := t.check(ss.Context(), info.FullMethod); err != nil {
		return err
	}
	return h(srv, ss)
}
