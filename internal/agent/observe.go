package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/patina-db/patina/internal/cluster"
	"github.com/patina-db/patina/internal/metrics"
	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/internal/watchdog"
)

// ExitStalled is the exit status of an agent whose watchdog found a
// stalled loop (EX_SOFTWARE): the supervisor should restart it.
const ExitStalled = 70

// observability is the agent's metrics, watchdog and systemd notifier.
type observability struct {
	metrics *metrics.Metrics
	wd      *watchdog.Watchdog
	sd      *watchdog.Systemd
	ln      net.Listener // [telemetry] prometheus_addr; nil: /metrics on the API
	server  *http.Server

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// newObservability builds the registry and the watchdog.
func newObservability(cfg Config, logger *slog.Logger, logOut io.Writer, onStall func(watchdog.Stall)) (*observability, error) {
	timeout, err := cfg.Watchdog.timeout()
	if err != nil {
		return nil, fmt.Errorf("watchdog.timeout: %w", err)
	}
	if onStall == nil {
		onStall = func(watchdog.Stall) { os.Exit(ExitStalled) }
	}
	if logOut == nil {
		logOut = os.Stderr
	}
	o := &observability{metrics: metrics.New()}
	o.wd = watchdog.New(watchdog.Options{Timeout: timeout, OnStall: onStall, Log: logger, Dump: logOut})
	o.sd = watchdog.NewSystemd(o.wd, logger)
	if timeout > 0 && timeout < 10*time.Second {
		logger.Warn("watchdog.timeout is below the data plane's 10s I/O timeout: a sync with an unresponsive peer may count as a stall", "timeout", timeout)
	}
	return o, nil
}

// listen binds [telemetry] prometheus_addr, when set.
func (o *observability) listen(addr string, logger *slog.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("telemetry listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", o.metrics.Handler())
	o.ln = ln
	o.server = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(logger.Handler(), slog.LevelWarn)}
	return nil
}

// addr is where GET /metrics is served: its own listener's address, or
// apiAddr.
func (o *observability) addr(apiAddr string) string {
	if o.ln != nil {
		return o.ln.Addr().String()
	}
	return apiAddr
}

// watch hooks the store and the cluster member into the metrics and the
// watchdog. node is nil for an agent running alone.
func (o *observability) watch(st *store.Store, node *cluster.Node) {
	beat := o.wd.Register("store.writer")
	beat.Rest() // watched only while a write holds the lock
	st.SetWriteObserver(writeWatch{beat: beat, metrics: o.metrics})
	src := metrics.Sources{Store: st, Watchdog: o.wd}
	if node != nil {
		src.Cluster, src.ClusterStats = node, &node.Stats
	}
	// Each kind of source is given once: this cannot fail.
	_ = o.metrics.AddSources(src)
}

// clusterConfig adds the watchdog and the lag histogram to a member's
// configuration.
func (o *observability) clusterConfig(cc *cluster.Config) {
	cc.Watchdog = o.wd
	cc.OnLag = o.metrics.ObserveReplicationLag
}

// apiHandler is what the API serves at /metrics: nil when metrics have a
// listener of their own.
func (o *observability) apiHandler() http.Handler {
	if o.ln != nil {
		return nil
	}
	return o.metrics.Handler()
}

// start runs the watchdog, the metrics listener and the systemd
// keep-alive, and tells systemd the agent is ready. The API serves by now.
func (o *observability) start(ctx context.Context, log *slog.Logger) {
	ctx, o.cancel = context.WithCancel(context.WithoutCancel(ctx))
	o.spawn(func() { o.wd.Run(ctx) })
	if o.server != nil {
		o.spawn(func() {
			if err := o.server.Serve(o.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("metrics listener failed", "addr", o.ln.Addr().String(), "err", err)
			}
		})
	}
	o.sd.Ready()
	o.spawn(func() { o.sd.KeepAlive(ctx) })
}

func (o *observability) spawn(fn func()) {
	o.wg.Add(1)
	go func() {
		defer o.wg.Done()
		fn()
	}()
}

// stopping tells systemd the agent is stopping and closes the metrics
// listener.
func (o *observability) stopping(ctx context.Context) error {
	o.sd.Stopping()
	if o.server == nil {
		return nil
	}
	return o.server.Shutdown(ctx)
}

// stop ends the watchdog and the keep-alive, once everything else has
// stopped: a shutdown that hangs in a watched loop is still caught.
func (o *observability) stop() {
	if o.cancel != nil {
		o.cancel()
	}
	o.wg.Wait()
}

// writeWatch is the store's write observer: a write holding the lock is
// a watched activity, and its duration a metric.
type writeWatch struct {
	beat    *watchdog.Beat
	metrics *metrics.Metrics
}

func (w writeWatch) WriteStarted(store.WriteKind) { w.beat.Tick() }

func (w writeWatch) WriteFinished(kind store.WriteKind, held time.Duration, items int) {
	w.beat.Rest()
	w.metrics.ObserveWrite(kind, held, items)
}
