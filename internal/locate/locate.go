// Package locate answers "where does app X run?" for the edge (DNS and
// the proxy): the local region from its own agents' Lookup service; other
// regions through the global AppMap, then their Lookup endpoints over
// gRPC. Answers are cached briefly and concurrent identical questions
// share one call. A region that does not answer within the timeout is
// left out of the answer, never waited on: the answer degrades, it does
// not hang.
package locate

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patina-db/patina/global"
	"github.com/patina-db/patina/internal/rpc"
	globalv1 "github.com/patina-db/patina/proto/patina/global/v1"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
)

// Config says where the local region's and the global cluster's agents
// answer.
type Config struct {
	// Region is the local region's name.
	Region string
	// Local lists the local regional agents' gRPC addresses, tried in
	// order.
	Local []string
	// Global lists global agents' gRPC addresses, nearest first, tried in
	// order.
	Global []string
	// Dial says how to dial every one of them.
	Dial rpc.DialOptions
	// TTL is how long an answer is reused (default 2s).
	TTL time.Duration
	// Timeout bounds the wait for one region, or for the global map
	// (default 1s).
	Timeout time.Duration
	Logger  *slog.Logger
}

// ErrUnknownApp says no region runs the app: not the global map, and
// not the local region.
var ErrUnknownApp = errors.New("no region runs this app")

// Locator answers where apps run. Safe for concurrent use.
type Locator struct {
	cfg   Config
	log   *slog.Logger
	group singleflight.Group

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
	cache map[string]entry
	// answered is, per list of addresses, the one that last answered:
	// asked first next time.
	answered map[string]string

	unreachable atomic.Uint64
}

type entry struct {
	val     any
	err     error
	expires time.Time
}

// New returns a locator; it dials lazily.
func New(cfg Config) (*Locator, error) {
	if cfg.Region == "" {
		return nil, errors.New("locate: the local region is required")
	}
	if len(cfg.Local) == 0 && len(cfg.Global) == 0 {
		return nil, errors.New("locate: neither local nor global agents given")
	}
	if cfg.TTL == 0 {
		cfg.TTL = 2 * time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Locator{cfg: cfg, log: cfg.Logger, conns: map[string]*grpc.ClientConn{}, cache: map[string]entry{}, answered: map[string]string{}}, nil
}

// Close closes every connection.
func (l *Locator) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var errs []error
	for addr, cc := range l.conns {
		errs = append(errs, cc.Close())
		delete(l.conns, addr)
	}
	return errors.Join(errs...)
}

// Region is the local region's name.
func (l *Locator) Region() string { return l.cfg.Region }

// Unreachable counts the regions (and global map lookups) that did not
// answer in time since the locator started.
func (l *Locator) Unreachable() uint64 { return l.unreachable.Load() }

// cached answers key from the cache or, once for every concurrent caller,
// from fetch; errors are cached too, so a dead region is asked once per
// TTL rather than on every request.
func (l *Locator) cached(key string, fetch func() (any, error)) (any, error) {
	if v, err, ok := l.peek(key); ok {
		return v, err
	}
	v, err, _ := l.group.Do(key, func() (any, error) {
		v, err := fetch()
		l.mu.Lock()
		l.cache[key] = entry{val: v, err: err, expires: time.Now().Add(l.cfg.TTL)}
		if len(l.cache) > 100000 { // bound memory under a scan of names
			for k, e := range l.cache {
				if time.Now().After(e.expires) {
					delete(l.cache, k)
				}
			}
		}
		l.mu.Unlock()
		return v, err
	})
	return v, err
}

// peek returns key's cached answer while it is fresh; ok is false when
// there is none.
func (l *Locator) peek(key string) (v any, err error, ok bool) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, found := l.cache[key]; found && now.Before(e.expires) {
		return e.val, e.err, true
	}
	return nil, nil, false
}

// machinesKey is the cache key of an app's machines in a region.
func machinesKey(app, region string, healthyOnly bool) string {
	return "m|" + region + "|" + app + "|" + strconv.FormatBool(healthyOnly)
}

// conn returns the connection to addr, dialing it once.
func (l *Locator) conn(addr string) (*grpc.ClientConn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cc := l.conns[addr]; cc != nil {
		return cc, nil
	}
	cc, err := rpc.Dial(addr, l.cfg.Dial)
	if err != nil {
		return nil, err
	}
	l.conns[addr] = cc
	return cc, nil
}

// first calls fn on each address in turn until one answers; an answer
// that is a verdict (NOT_FOUND, INVALID_ARGUMENT) ends the search too.
// The whole search is bounded by the timeout, and each address gets an
// equal share of what is left of it, so that one that accepts but never
// answers (a stopped process, a stalled disk) cannot take it all from
// the others. The address that answered last is asked first.
func (l *Locator) first(ctx context.Context, what string, addrs []string, fn func(ctx context.Context, cc *grpc.ClientConn) error) error {
	// The answer is shared with every concurrent caller and cached: one
	// caller going away must not spoil it for the others.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), l.cfg.Timeout)
	defer cancel()
	deadline, _ := ctx.Deadline()
	key := strings.Join(addrs, ",")
	l.mu.Lock()
	last := l.answered[key]
	l.mu.Unlock()
	if last != "" && addrs[0] != last {
		ordered := []string{last}
		for _, a := range addrs {
			if a != last {
				ordered = append(ordered, a)
			}
		}
		addrs = ordered
	}
	var errs []error
	for i, addr := range addrs {
		cc, err := l.conn(addr)
		if err == nil {
			actx, acancel := context.WithTimeout(ctx, time.Until(deadline)/time.Duration(len(addrs)-i))
			err = fn(actx, cc)
			acancel()
			switch status.Code(err) {
			case codes.OK, codes.NotFound, codes.InvalidArgument:
				l.mu.Lock()
				l.answered[key] = addr
				l.mu.Unlock()
				return err
			}
		}
		errs = append(errs, fmt.Errorf("%s: %w", addr, err))
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return fmt.Errorf("locate: %s: no addresses", what)
	}
	l.unreachable.Add(1)
	err := fmt.Errorf("locate: %s: %w", what, errors.Join(errs...))
	l.log.Warn("unreachable", "what", what, "err", err)
	return err
}

// App returns the regions the global map lists for app. ErrUnknownApp
// when it lists none.
func (l *Locator) App(ctx context.Context, app string) (*globalv1.App, error) {
	if len(l.cfg.Global) == 0 {
		return nil, ErrUnknownApp // no map: it lists nothing
	}
	v, err := l.cached("app|"+app, func() (any, error) {
		var out *globalv1.App
		err := l.first(ctx, "global map", l.cfg.Global, func(ctx context.Context, cc *grpc.ClientConn) error {
			a, err := globalv1.NewAppMapClient(cc).GetApp(ctx, &globalv1.GetAppRequest{App: app})
			out = a
			return err
		})
		if status.Code(err) == codes.NotFound {
			return nil, ErrUnknownApp
		}
		return out, err
	})
	if err != nil {
		return nil, err
	}
	return v.(*globalv1.App), nil
}

// Apps lists every app the global map knows, by name.
func (l *Locator) Apps(ctx context.Context) ([]*globalv1.App, error) {
	v, err := l.cached("apps", func() (any, error) {
		var out []*globalv1.App
		err := l.first(ctx, "global map", l.cfg.Global, func(ctx context.Context, cc *grpc.ClientConn) error {
			out = nil
			tok := ""
			for {
				resp, err := globalv1.NewAppMapClient(cc).ListApps(ctx, &globalv1.ListAppsRequest{PageSize: 1000, PageToken: tok})
				if err != nil {
					return err
				}
				out = append(out, resp.GetApps()...)
				if tok = resp.GetNextPageToken(); tok == "" {
					return nil
				}
			}
		})
		return out, err
	})
	if err != nil {
		return nil, err
	}
	return v.([]*globalv1.App), nil
}

// Regions returns the region directory, nearest to the local region
// first.
func (l *Locator) Regions(ctx context.Context) ([]*globalv1.Region, error) {
	v, err := l.cached("regions", func() (any, error) {
		var resp *globalv1.ListRegionsResponse
		err := l.first(ctx, "region directory", l.cfg.Global, func(ctx context.Context, cc *grpc.ClientConn) error {
			r, err := globalv1.NewAppMapClient(cc).ListRegions(ctx, &globalv1.ListRegionsRequest{})
			resp = r
			return err
		})
		if err != nil {
			return nil, err
		}
		byName := map[string]*globalv1.Region{}
		var places []global.Place
		for _, r := range resp.GetRegions() {
			byName[r.GetName()] = r
			places = append(places, global.Place{Name: r.GetName(), Latitude: r.GetLatitude(), Longitude: r.GetLongitude()})
		}
		var out []*globalv1.Region
		for _, p := range global.Nearest(l.cfg.Region, places) {
			out = append(out, byName[p.Name])
		}
		return out, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]*globalv1.Region), nil
}

// Machines returns app's machines in region: the local region from the
// local agents, another from its Lookup endpoints in the directory.
func (l *Locator) Machines(ctx context.Context, app, region string, healthyOnly bool) ([]*regionalv1.Machine, error) {
	v, err := l.cached(machinesKey(app, region, healthyOnly), func() (any, error) {
		addrs := l.cfg.Local
		if region != l.cfg.Region {
			regions, err := l.Regions(ctx)
			if err != nil {
				return nil, err
			}
			addrs = nil
			for _, r := range regions {
				if r.GetName() == region {
					addrs = r.GetLookup()
				}
			}
			if len(addrs) == 0 {
				return nil, fmt.Errorf("locate: region %s: not in the directory, or without Lookup endpoints", region)
			}
		}
		var out []*regionalv1.Machine
		err := l.first(ctx, "region "+region, addrs, func(ctx context.Context, cc *grpc.ClientConn) error {
			resp, err := regionalv1.NewLookupClient(cc).ListMachines(ctx, &regionalv1.ListMachinesRequest{App: app, HealthyOnly: healthyOnly})
			out = resp.GetMachines()
			return err
		})
		return out, err
	})
	if err != nil {
		return nil, err
	}
	return v.([]*regionalv1.Machine), nil
}

// RegionMachines are one region's machines of an app.
type RegionMachines struct {
	Region   string
	Machines []*regionalv1.Machine
}

// Answer is where an app runs, nearest region first.
type Answer struct {
	Regions []RegionMachines
	// Unreachable names the regions that run the app but did not answer
	// in time; their machines are missing from Regions.
	Unreachable []string
}

// Machines lists every machine in the answer, nearest region first.
func (a Answer) Machines() []*regionalv1.Machine {
	var out []*regionalv1.Machine
	for _, r := range a.Regions {
		out = append(out, r.Machines...)
	}
	return out
}

// Everywhere finds app's machines in every region that runs it: the
// regions the global map lists for it, and the local region whatever the
// map says (it may lag). Regions are asked in parallel; those that do
// not answer in time are named in Unreachable. ErrUnknownApp when no
// region runs the app.
func (l *Locator) Everywhere(ctx context.Context, app string, healthyOnly bool) (Answer, error) {
	names := []string{}
	a, err := l.App(ctx, app)
	switch {
	case err == nil:
		for _, r := range a.GetRegions() {
			names = append(names, r.GetRegion())
		}
	case errors.Is(err, ErrUnknownApp):
	default:
		// The global map did not answer: the local region still can.
		// (Its fetch warned already, once per cache period.)
		l.log.Debug("global map unreachable: answering from the local region", "app", app, "err", err)
	}
	if len(l.cfg.Local) > 0 && !slices.Contains(names, l.cfg.Region) {
		names = append(names, l.cfg.Region)
	}
	order, err := l.order(ctx, names)
	if err != nil {
		return Answer{}, err
	}
	results := make([]RegionMachines, len(order))
	errs := make([]error, len(order))
	var wg sync.WaitGroup
	for i, region := range order {
		// A fresh cached answer needs no goroutine: the common case,
		// and the one that must be cheap.
		if v, err, ok := l.peek(machinesKey(app, region, healthyOnly)); ok {
			ms, _ := v.([]*regionalv1.Machine)
			results[i], errs[i] = RegionMachines{Region: region, Machines: ms}, err
			continue
		}
		wg.Go(func() {
			ms, err := l.Machines(ctx, app, region, healthyOnly)
			results[i], errs[i] = RegionMachines{Region: region, Machines: ms}, err
		})
	}
	wg.Wait()
	var ans Answer
	found := false
	for i, r := range results {
		if errs[i] != nil {
			ans.Unreachable = append(ans.Unreachable, r.Region)
			continue
		}
		if len(r.Machines) == 0 && r.Region == l.cfg.Region && (a == nil || !listed(a, r.Region)) && !l.runsHere(ctx, app, healthyOnly) {
			continue // the local region, asked only in case: it has none
		}
		found = true
		ans.Regions = append(ans.Regions, r)
	}
	if !found && len(ans.Unreachable) == 0 {
		return Answer{}, ErrUnknownApp
	}
	return ans, nil
}

// runsHere reports whether the local region has machines of app in any
// state, once its healthy ones came back none: the app is known then,
// only not served (a 502 from the proxy, not a 404).
func (l *Locator) runsHere(ctx context.Context, app string, healthyOnly bool) bool {
	if !healthyOnly {
		return false // the answer was every machine already
	}
	ms, err := l.Machines(ctx, app, l.cfg.Region, false)
	return err == nil && len(ms) > 0
}

func listed(a *globalv1.App, region string) bool {
	for _, r := range a.GetRegions() {
		if r.GetRegion() == region {
			return true
		}
	}
	return false
}

// order sorts region names nearest first: the local region, then the
// others by the directory, then those it does not list by name.
func (l *Locator) order(ctx context.Context, names []string) ([]string, error) {
	want := map[string]bool{}
	for _, n := range names {
		want[n] = true
	}
	var out []string
	// The local region is the nearest, listed in the directory or not
	// (its bridge may not have written it yet).
	if want[l.cfg.Region] {
		out = append(out, l.cfg.Region)
		delete(want, l.cfg.Region)
	}
	if dir, err := l.Regions(ctx); err == nil {
		for _, r := range dir {
			if want[r.GetName()] {
				out = append(out, r.GetName())
				delete(want, r.GetName())
			}
		}
	}
	var rest []string
	for n := range want {
		rest = append(rest, n)
	}
	slices.Sort(rest)
	return append(out, rest...), nil
}
