package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/patina-db/patina/internal/locate"
)

// locator is what the proxy asks where an app runs; *locate.Locator is
// the real one.
type locator interface {
	Everywhere(ctx context.Context, app string, healthyOnly bool) (locate.Answer, error)
}

// machineState is what the proxy tracks of one machine, carried over
// from one view of its app to the next.
type machineState struct {
	inflight atomic.Int64
	// downUntil (unix nanoseconds) puts the machine after every other
	// candidate until then: it refused a connection or said it is gone.
	downUntil atomic.Int64
}

// target is one machine requests can go to.
type target struct {
	id, region, addr string
	st               *machineState
}

// view is what the proxy knows of an app at one moment: its healthy
// started machines, nearest region first. It is never changed once
// published; a refresh publishes a new one.
type view struct {
	regions     [][]*target
	unreachable []string
	unknown     bool // no region runs the app any more
	fetched     time.Time
}

// appState is one app the proxy has seen a request for.
type appState struct {
	name       string
	view       atomic.Pointer[view]
	lastUsed   atomic.Int64 // unix nanoseconds
	refreshing atomic.Bool
	turn       atomic.Uint32 // rotates ties between equally loaded machines

	mu       sync.Mutex
	machines map[string]*machineState // by id, under mu
}

// appTable holds the apps seen lately. An app is loaded on its first
// request; its view is used for ttl, then for up to another ttl while
// one background refresh replaces it; an older view is replaced before
// the request goes on. An app without requests for the idle timeout is
// dropped.
type appTable struct {
	loc     locator
	ttl     time.Duration
	downFor time.Duration
	log     *slog.Logger

	apps  sync.Map // app name → *appState
	group singleflight.Group
	bg    sync.WaitGroup
	ctx   context.Context // background refreshes stop with it
}

// view returns the app's state and a view of it fresh enough to route
// by. locate.ErrUnknownApp when no region runs the app.
func (t *appTable) view(ctx context.Context, app string) (*appState, *view, error) {
	now := time.Now()
	var old *appState
	if v, ok := t.apps.Load(app); ok {
		old = v.(*appState)
		old.lastUsed.Store(now.UnixNano())
		cur := old.view.Load()
		switch age := now.Sub(cur.fetched); {
		case age < t.ttl:
			return old, cur, nil
		case age < 2*t.ttl:
			t.refreshAsync(old)
			return old, cur, nil
		}
	}
	v, err, _ := t.group.Do(app, func() (any, error) { return t.load(context.WithoutCancel(ctx), app) })
	if err != nil {
		if old != nil && !errors.Is(err, locate.ErrUnknownApp) {
			// Nothing answered: an old view beats none.
			t.log.Warn("proxy: refresh failed: routing by the previous view", "app", app, "err", err)
			return old, old.view.Load(), nil
		}
		return nil, nil, err
	}
	st := v.(*appState)
	// Used now, when the load ends: a slow load is no idle time.
	st.lastUsed.Store(time.Now().UnixNano())
	return st, st.view.Load(), nil
}

// refreshAsync starts one background refresh of st unless one runs.
func (t *appTable) refreshAsync(st *appState) {
	if t.ctx.Err() != nil || !st.refreshing.CompareAndSwap(false, true) {
		return
	}
	t.bg.Go(func() {
		defer st.refreshing.Store(false)
		if _, err, _ := t.group.Do(st.name, func() (any, error) { return t.load(t.ctx, st.name) }); err != nil {
			t.log.Warn("proxy: refresh failed: the previous view stays", "app", st.name, "err", err)
		}
	})
}

// load asks where app runs and publishes the answer as the app's view.
// An app no region runs gets no state (a scan of made-up names must not
// grow the table), unless it had one: that one then says unknown.
func (t *appTable) load(ctx context.Context, app string) (*appState, error) {
	ans, err := t.loc.Everywhere(ctx, app, true)
	unknown := errors.Is(err, locate.ErrUnknownApp)
	if err != nil && !unknown {
		return nil, err
	}
	v, ok := t.apps.Load(app)
	if unknown && !ok {
		return nil, err
	}
	if !ok {
		st := &appState{name: app, machines: map[string]*machineState{}}
		st.lastUsed.Store(time.Now().UnixNano())
		v, _ = t.apps.LoadOrStore(app, st)
	}
	st := v.(*appState)
	st.publish(ans, unknown)
	if unknown {
		return nil, err
	}
	return st, nil
}

// publish makes ans the app's view, keeping each machine's in-flight
// count and down mark across views.
func (st *appState) publish(ans locate.Answer, unknown bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	next := &view{unreachable: ans.Unreachable, unknown: unknown, fetched: time.Now()}
	seen := make(map[string]*machineState, len(st.machines))
	for _, r := range ans.Regions {
		var ts []*target
		for _, m := range r.Machines {
			if m.GetState() != "started" || !m.GetHealthy() || m.GetAddress() == "" || m.GetPort() == 0 {
				continue
			}
			ms := st.machines[m.GetId()]
			if ms == nil {
				ms = &machineState{}
			}
			seen[m.GetId()] = ms
			ts = append(ts, &target{
				id: m.GetId(), region: r.Region, st: ms,
				addr: net.JoinHostPort(m.GetAddress(), strconv.Itoa(int(m.GetPort()))),
			})
		}
		if len(ts) > 0 {
			next.regions = append(next.regions, ts)
		}
	}
	st.machines = seen
	st.view.Store(next)
}

// markDown puts a machine after every other candidate for a while.
func (t *appTable) markDown(tg *target) {
	tg.st.downUntil.Store(time.Now().Add(t.downFor).UnixNano())
}

// dropIdle forgets the apps without a request since idle.
func (t *appTable) dropIdle(now time.Time, idle time.Duration) {
	t.apps.Range(func(k, v any) bool {
		if now.Sub(time.Unix(0, v.(*appState).lastUsed.Load())) > idle {
			t.apps.CompareAndDelete(k, v)
		}
		return true
	})
}

// loaded counts the apps held.
func (t *appTable) loaded() int {
	n := 0
	t.apps.Range(func(any, any) bool { n++; return true })
	return n
}
