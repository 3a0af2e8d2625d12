package watchdog

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is a clock the test moves.
type fakeClock struct{ now atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.now.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.now.Add(int64(d)) }

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestStallsOnAFakeClock: a beat that is not ticked within the timeout is
// reported once, with every goroutine's stack; a tick recovers it; a
// resting beat never stalls; a stopped beat is forgotten.
func TestStallsOnAFakeClock(t *testing.T) {
	clock := &fakeClock{}
	clock.now.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	var stalls []Stall
	w := New(Options{Timeout: 10 * time.Second, Now: clock.Now, Log: quiet(), Dump: io.Discard, OnStall: func(s Stall) { stalls = append(stalls, s) }})
	a, b, writer := w.Register("a"), w.Register("b"), w.Register("writer")
	writer.Rest()
	run := runner(w, clock)

	run(9 * time.Second)
	if len(stalls) != 0 || !w.Healthy() {
		t.Fatalf("stall inside the timeout: %+v", stalls)
	}
	b.Tick()
	run(2 * time.Second) // a: 11s without a tick, b: 2s
	if len(stalls) != 1 || !slices.Equal(stalls[0].Loops, []string{"a"}) || stalls[0].For != 11*time.Second {
		t.Fatalf("stalls %+v", stalls)
	}
	if !strings.Contains(string(stalls[0].Stacks), "goroutine ") || !strings.Contains(string(stalls[0].Stacks), "TestStallsOnAFakeClock") {
		t.Fatalf("stacks do not show the goroutines:\n%s", stalls[0].Stacks)
	}
	if w.Healthy() || w.Stalls() != 1 {
		t.Fatalf("healthy %v, stalls %d", w.Healthy(), w.Stalls())
	}
	w.Check()
	if len(stalls) != 1 {
		t.Fatal("one stall reported twice")
	}

	a.Tick()
	w.Check()
	if !w.Healthy() {
		t.Fatal("a tick did not recover the beat")
	}

	// A write that holds its lock past the timeout stalls; one that
	// ended does not, however long ago.
	writer.Tick()
	run(11*time.Second, a, b)
	if len(stalls) != 2 || !slices.Equal(stalls[1].Loops, []string{"writer"}) || w.Stalls() != 2 {
		t.Fatalf("stalls %+v", stalls)
	}
	writer.Rest()
	b.Stop()
	run(time.Hour, a)
	if len(stalls) != 2 || !w.Healthy() {
		t.Fatalf("a resting or stopped beat stalled: %+v", stalls[2:])
	}
	if b.Due() != nil {
		t.Fatal("a stopped beat is due")
	}
}

// runner returns a function that moves the clock on by d as Run would see
// it, checking every quarter of the timeout, with the given beats ticking
// before each check.
func runner(w *Watchdog, clock *fakeClock) func(d time.Duration, ticking ...*Beat) {
	return func(d time.Duration, ticking ...*Beat) {
		for done := time.Duration(0); done < d; {
			step := min(checkEvery(w.opts.Timeout), d-done)
			clock.Advance(step)
			done += step
			for _, b := range ticking {
				b.Tick()
			}
			w.Check()
		}
	}
}

// TestProcessPauseIsNoStall: a process that stood still (frozen, or its
// machine suspended) finds its loops late by the pause when it resumes,
// which is not a stall; a loop that stopped ticking before the pause is
// still found, a timeout after the process resumed.
func TestProcessPauseIsNoStall(t *testing.T) {
	clock := &fakeClock{}
	clock.now.Store(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	var stalls []Stall
	w := New(Options{Timeout: 10 * time.Second, Now: clock.Now, Log: quiet(), Dump: io.Discard, OnStall: func(s Stall) { stalls = append(stalls, s) }})
	a, b := w.Register("a"), w.Register("b")
	run := runner(w, clock)
	run(20*time.Second, a, b)
	run(5*time.Second, a) // b stops ticking
	clock.Advance(time.Minute)
	w.Check()
	if len(stalls) != 0 {
		t.Fatalf("a pause of the whole process taken for a stall: %+v", stalls[0].Loops)
	}
	run(9*time.Second, a)
	if len(stalls) != 0 {
		t.Fatalf("b stalled %v after the process resumed, inside the timeout", 9*time.Second)
	}
	run(2*time.Second, a)
	if len(stalls) != 1 || !slices.Equal(stalls[0].Loops, []string{"b"}) {
		t.Fatalf("stalls %+v: want b, a timeout after the process resumed", stalls)
	}
}

// TestIdleLoopIsNotStalled: a loop waiting for work wakes on Due to tick
// and is never taken for stalled; once it blocks inside its work, the
// watchdog fires, naming it, and it recovers when the work ends.
func TestIdleLoopIsNotStalled(t *testing.T) {
	const timeout = 600 * time.Millisecond
	fired := make(chan Stall, 4)
	w := New(Options{Timeout: timeout, Log: quiet(), Dump: io.Discard, OnStall: func(s Stall) { fired <- s }})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	work, release := make(chan struct{}), make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		w.Run(ctx)
	}()
	go func() { // the fake loop
		defer wg.Done()
		beat := w.Register("fake")
		defer beat.Stop()
		for {
			beat.Tick()
			select {
			case <-ctx.Done():
				return
			case <-beat.Due():
			case <-work:
				select { // the work blocks
				case <-release:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()

	// Idle across several timeouts' worth of checks.
	waitFor(t, "the watchdog to check an idle loop many times", func() bool { return w.checks.Load() >= 8 })
	select {
	case s := <-fired:
		t.Fatalf("an idle loop was taken for stalled: %v", s.Loops)
	default:
	}

	work <- struct{}{}
	select {
	case s := <-fired:
		if !slices.Equal(s.Loops, []string{"fake"}) {
			t.Fatalf("stalled %v", s.Loops)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the watchdog never fired on a blocked loop")
	}
	// Only the count: on a starved machine a late check is taken for a
	// pause of the whole process and clears the mark until the loop is
	// judged again (Healthy's rules are checked on a fake clock above).
	if w.Stalls() == 0 {
		t.Fatal("the stall is not counted")
	}
	close(release)
	waitFor(t, "the loop to recover", w.Healthy)
}

// TestDisabled: a zero timeout or a nil watchdog watches nothing and
// costs nothing to the loops.
func TestDisabled(t *testing.T) {
	for _, w := range []*Watchdog{New(Options{}), nil} {
		b := w.Register("x")
		if b != nil {
			t.Fatal("a disabled watchdog returned a beat")
		}
		b.Tick()
		b.Rest()
		if b.Due() != nil {
			t.Fatal("a nil beat is due")
		}
		b.Stop()
		w.Check()
		if !w.Healthy() || w.Stalls() != 0 || w.Timeout() != 0 {
			t.Fatal("a disabled watchdog reports")
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		w.Run(ctx) // returns
	}
}

// TestSystemdNotify: with NOTIFY_SOCKET set, the service manager gets
// READY=1, WATCHDOG=1 at half of WATCHDOG_USEC while healthy, none while
// a loop is stalled, and STOPPING=1.
func TestSystemdNotify(t *testing.T) {
	_, read := notifySocket(t, "100000")

	clock := &fakeClock{}
	clock.now.Store(time.Now().UnixNano())
	w := New(Options{Timeout: time.Second, Now: clock.Now, Log: quiet(), Dump: io.Discard})
	sd := NewSystemd(w, quiet())
	sd.Ready()
	if got := read(); got != "READY=1" {
		t.Fatalf("got %q, want READY=1", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sd.KeepAlive(ctx)
	}()
	for range 2 {
		if got := read(); got != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", got)
		}
	}
	cancel()
	<-done

	beat := w.Register("apply")
	clock.Advance(2 * time.Second)
	w.Check()
	if sd.keepAliveOnce() {
		t.Fatal("petted systemd while a loop was stalled")
	}
	beat.Tick()
	w.Check()
	if !sd.keepAliveOnce() {
		t.Fatal("did not pet systemd once the loop recovered")
	}
	if got := read(); got != "WATCHDOG=1" {
		t.Fatalf("got %q, want WATCHDOG=1", got)
	}
	sd.Stopping()
	// Pings from the KeepAlive loop may still be queued before it.
	for got := read(); got != "STOPPING=1"; got = read() {
		if got != "WATCHDOG=1" {
			t.Fatalf("got %q, want STOPPING=1", got)
		}
	}
}

// TestSystemdAbsent: without NOTIFY_SOCKET nothing is sent and KeepAlive
// returns at once.
func TestSystemdAbsent(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "")
	sd := NewSystemd(nil, quiet())
	sd.Ready()
	sd.KeepAlive(context.Background())
	if sd.keepAliveOnce() {
		t.Fatal("sent without a socket")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
