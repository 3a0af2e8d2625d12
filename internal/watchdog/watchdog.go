// Package watchdog notices when one of the agent's long-running loops
// stops making progress. Each loop registers a Beat and ticks it; a beat
// that goes longer than the timeout without a tick is a stall: the
// watchdog logs it, writes every goroutine's stack, counts it and calls
// the OnStall callback, which in the agent ends the process so that its
// supervisor restarts it. The package also speaks systemd's sd_notify
// protocol (systemd.go).
//
// The watchdog only observes: it never touches the loops it watches, and
// a nil *Watchdog or *Beat does nothing, so code under test needs none.
package watchdog

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"runtime/pprof"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Stall describes the loops found stalled by one check.
type Stall struct {
	// Loops names the stalled beats, sorted.
	Loops []string
	// For is how long the longest-stalled loop had gone without a tick.
	For time.Duration
	// Stacks is every goroutine's stack when the stall was found.
	Stacks []byte
}

// Options configure a Watchdog.
type Options struct {
	// Timeout is how long a beat may go without a tick. 0 disables the
	// watchdog: Register returns nil beats.
	Timeout time.Duration
	// OnStall is called, from the watchdog's goroutine, once per stall:
	// a loop that recovers and stalls again is reported again. nil: the
	// stall is only logged and counted.
	OnStall func(Stall)
	// Log gets one error record per stall (default slog.Default()).
	Log *slog.Logger
	// Dump receives the goroutine stacks of a stall (default os.Stderr).
	Dump io.Writer
	// Now is the clock (default time.Now); tests drive it.
	Now func() time.Time
}

// Watchdog watches registered beats.
type Watchdog struct {
	opts   Options
	epoch  time.Time // beats are stamped in time since (see now)
	stalls atomic.Uint64
	checks atomic.Uint64

	mu      sync.Mutex
	beats   map[*Beat]struct{}
	stalled map[*Beat]bool
	// lastCheck is when Check last ran, resumed when it last found the
	// process had stood still (see Check); both in w.now's terms, 0 for
	// never.
	lastCheck, resumed int64
}

// New returns a watchdog; Run makes it watch.
func New(opts Options) *Watchdog {
	if opts.Log == nil {
		opts.Log = slog.Default()
	}
	if opts.Dump == nil {
		opts.Dump = os.Stderr
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	// Beats are stamped in time since a second before now, which time.Now
	// measures on the monotonic clock: a step of the wall clock (NTP, an
	// operator) is neither a stall nor a reprieve.
	return &Watchdog{opts: opts, epoch: opts.Now().Add(-time.Second), beats: map[*Beat]struct{}{}, stalled: map[*Beat]bool{}}
}

// now is the time since epoch, in nanoseconds; never 0 (a resting beat).
func (w *Watchdog) now() int64 { return max(int64(w.opts.Now().Sub(w.epoch)), 1) }

// Timeout is how long a beat may go without a tick, 0 when disabled.
func (w *Watchdog) Timeout() time.Duration {
	if w == nil {
		return 0
	}
	return w.opts.Timeout
}

// Register starts watching a loop named name. The beat counts as ticked
// now. It returns nil (a beat that does nothing) when w is nil or
// disabled.
func (w *Watchdog) Register(name string) *Beat {
	if w == nil || w.opts.Timeout <= 0 {
		return nil
	}
	b := &Beat{name: name, w: w, every: idleTick(w.opts.Timeout)}
	b.last.Store(w.now())
	w.mu.Lock()
	w.beats[b] = struct{}{}
	w.mu.Unlock()
	return b
}

// idleTick is how often a waiting loop ticks: often enough that two
// missed ticks still leave it inside the timeout.
func idleTick(timeout time.Duration) time.Duration {
	return max(timeout/3, time.Millisecond)
}

// checkEvery is how often Run checks the beats: a stall is found at most
// a quarter of the timeout late.
func checkEvery(timeout time.Duration) time.Duration {
	return max(timeout/4, time.Millisecond)
}

// Run checks the beats until ctx ends.
func (w *Watchdog) Run(ctx context.Context) {
	if w == nil || w.opts.Timeout <= 0 {
		<-ctx.Done()
		return
	}
	t := time.NewTicker(checkEvery(w.opts.Timeout))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			w.Check()
		}
	}
}

// Check looks at every beat once and reports the beats newly stalled. Run
// calls it periodically; tests with their own clock call it directly.
func (w *Watchdog) Check() {
	if w == nil || w.opts.Timeout <= 0 {
		return
	}
	now := w.now()
	var stall Stall
	w.mu.Lock()
	// Checks come every quarter of the timeout. Two checks further apart
	// than half of it mean the whole process stood still (frozen by
	// SIGSTOP, a cgroup freezer or docker pause; a suspended machine):
	// its loops could not tick either, and that time is nobody's stall.
	// Beats are judged from then on; a loop that was stuck before still
	// shows, a timeout later.
	if w.lastCheck != 0 && time.Duration(now-w.lastCheck) > w.opts.Timeout/2 {
		w.resumed = now
	}
	w.lastCheck = now
	for b := range w.beats {
		last := b.last.Load()
		late := time.Duration(now - max(last, w.resumed))
		if last == 0 || late <= w.opts.Timeout {
			delete(w.stalled, b)
			continue
		}
		if w.stalled[b] {
			continue // reported already; waits for a tick to recover
		}
		w.stalled[b] = true
		stall.Loops = append(stall.Loops, b.name)
		stall.For = max(stall.For, late)
	}
	w.mu.Unlock()
	w.checks.Add(1)
	if len(stall.Loops) == 0 {
		return
	}
	slices.Sort(stall.Loops)
	w.stalls.Add(1)
	var buf bytes.Buffer
	_ = pprof.Lookup("goroutine").WriteTo(&buf, 2)
	stall.Stacks = buf.Bytes()
	w.opts.Log.Error("watchdog: loop stalled", "loops", stall.Loops, "for", stall.For, "timeout", w.opts.Timeout)
	_, _ = io.WriteString(w.opts.Dump, "watchdog: goroutines at the stall of "+joinNames(stall.Loops)+":\n")
	_, _ = w.opts.Dump.Write(stall.Stacks)
	if w.opts.OnStall != nil {
		w.opts.OnStall(stall)
	}
}

func joinNames(names []string) string {
	var b bytes.Buffer
	for i, n := range names {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(n)
	}
	return b.String()
}

// Stalls counts the stalls found so far.
func (w *Watchdog) Stalls() uint64 {
	if w == nil {
		return 0
	}
	return w.stalls.Load()
}

// Healthy reports whether no beat is stalled right now.
func (w *Watchdog) Healthy() bool {
	if w == nil {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.stalled) == 0
}

// Beat is one watched loop. Its methods are safe for concurrent use and
// do nothing on a nil Beat.
type Beat struct {
	name  string
	w     *Watchdog
	every time.Duration
	last  atomic.Int64 // the last tick, as Watchdog.now; 0: resting

	tickerOnce sync.Once
	ticker     *time.Ticker
}

// Tick records progress: the loop is alive now.
func (b *Beat) Tick() {
	if b == nil {
		return
	}
	b.last.Store(b.w.now())
}

// Rest says the beat has no work in progress: it cannot stall until its
// next Tick. For activities that are not loops, such as a write
// transaction: Tick when it starts, Rest when it ends.
func (b *Beat) Rest() {
	if b == nil {
		return
	}
	b.last.Store(0)
}

// Due delivers a time every third of the timeout, so that a loop waiting
// for work wakes to Tick and is not taken for stalled. It is nil (never
// ready) for a nil beat. Only the loop that owns the beat may call it.
func (b *Beat) Due() <-chan time.Time {
	if b == nil {
		return nil
	}
	b.tickerOnce.Do(func() { b.ticker = time.NewTicker(b.every) })
	if b.ticker == nil {
		return nil // stopped before it was ever due
	}
	return b.ticker.C
}

// Wait blocks until ch delivers or ctx ends (then false), ticking b
// whenever it is due meanwhile: a loop waiting for work is never taken for
// stalled.
func Wait[T any](ctx context.Context, b *Beat, ch <-chan T) bool {
	for {
		b.Tick()
		select {
		case <-ctx.Done():
			return false
		case <-b.Due():
		case <-ch:
			return true
		}
	}
}

// Stop ends the watch, for a loop that returns.
func (b *Beat) Stop() {
	if b == nil {
		return
	}
	b.tickerOnce.Do(func() {})
	if b.ticker != nil {
		b.ticker.Stop()
	}
	b.w.mu.Lock()
	delete(b.w.beats, b)
	delete(b.w.stalled, b)
	b.w.mu.Unlock()
}
