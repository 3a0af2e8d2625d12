package sysmon

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Thread returns the thread id of the runtime's monitor thread. The
// runtime starts sysmon before any package initializes and before any
// other thread, so it is the earliest started thread after the main one;
// among threads started in the same clock tick, the lowest id (thread ids
// grow as threads are made, save for a wrap at pid_max).
func Thread() (int, error) {
	pid := os.Getpid()
	tids, err := threads(pid)
	if err != nil {
		return 0, err
	}
	best, bestStart := 0, uint64(0)
	for _, tid := range tids {
		if tid == pid {
			continue
		}
		start, err := startTime(fmt.Sprintf("/proc/%d/task/%d/stat", pid, tid))
		if err != nil {
			continue // the thread has exited
		}
		if best == 0 || start < bestStart || (start == bestStart && tid < best) {
			best, bestStart = tid, start
		}
	}
	if best == 0 {
		return 0, errors.New("sysmon: the process has no thread besides the main one")
	}
	return best, nil
}

// threads lists the ids of the process's threads.
func threads(pid int) ([]int, error) {
	entries, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return nil, fmt.Errorf("sysmon: list threads: %w", err)
	}
	tids := make([]int, 0, len(entries))
	for _, e := range entries {
		if tid, err := strconv.Atoi(e.Name()); err == nil {
			tids = append(tids, tid)
		}
	}
	return tids, nil
}

// startTime reads a thread's start time (clock ticks since boot) from
// its /proc stat file.
func startTime(path string) (uint64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	// The command name, in parentheses, may hold spaces: count fields
	// from after its closing one. starttime is field 22 of the line,
	// the 20th after the name.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("sysmon: %s: no command name", path)
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 20 {
		return 0, fmt.Errorf("sysmon: %s: %d fields after the name", path, len(f))
	}
	return strconv.ParseUint(f[19], 10, 64)
}

// keepEvery is how often the keeper looks for threads that inherited the
// monitor thread's policy.
const keepEvery = 500 * time.Millisecond

// held is the process's one keeper, shared by every caller of Batch whose
// context has not ended (several agents may share a process: tests,
// in-process benchmarks).
var held struct {
	mu    sync.Mutex
	users int
	tid   int
	stop  context.CancelFunc // ends the keeper
	done  chan struct{}      // closed when the keeper has returned
}

// Batch puts the monitor thread under SCHED_BATCH and returns its id.
// It needs no privilege, and leaves a process that runs under any policy
// but the normal one as it is. Threads inherit their creator's policy,
// and the monitor thread starts some of the threads that later run
// goroutines, so until ctx ends Batch also keeps every other thread under
// the main thread's policy and nice value as they were when it was
// called, looking twice a second. One keeper serves every caller; when
// the last caller's context ends, it stops and the monitor thread goes
// back under the main thread's policy.
func Batch(ctx context.Context) (int, error) {
	held.mu.Lock()
	defer held.mu.Unlock()
	if held.users == 0 {
		if held.done != nil {
			// The last keeper is still putting the monitor thread back.
			<-held.done
		}
		if err := start(); err != nil {
			return 0, err
		}
	}
	held.users++
	context.AfterFunc(ctx, release)
	return held.tid, nil
}

// start puts the monitor thread under SCHED_BATCH and starts the keeper.
// held.mu is held.
func start() error {
	main, err := unix.SchedGetAttr(os.Getpid(), 0)
	if err != nil {
		return fmt.Errorf("sysmon: scheduling policy of the main thread: %w", err)
	}
	if main.Policy != unix.SCHED_NORMAL {
		return fmt.Errorf("sysmon: the process runs under scheduling policy %d, not the normal one; left as it is", main.Policy)
	}
	tid, err := Thread()
	if err != nil {
		return err
	}
	batch := *main
	batch.Policy = unix.SCHED_BATCH
	if err := unix.SchedSetAttr(tid, &batch, 0); err != nil {
		return fmt.Errorf("sysmon: put thread %d under SCHED_BATCH: %w", tid, err)
	}
	kctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	held.tid, held.stop, held.done = tid, stop, done
	go func() {
		defer close(done)
		keep(kctx, tid, *main)
	}()
	return nil
}

// release ends one caller's hold; the last one stops the keeper.
func release() {
	held.mu.Lock()
	defer held.mu.Unlock()
	held.users--
	if held.users == 0 {
		held.stop()
	}
}

// keep puts threads other than sysmon back under want until ctx ends,
// and then sysmon too.
func keep(ctx context.Context, sysmon int, want unix.SchedAttr) {
	t := time.NewTicker(keepEvery)
	defer t.Stop()
	for {
		restore(sysmon, want)
		select {
		case <-ctx.Done():
			// Errors are the thread's exit, which needs nothing put back.
			_ = unix.SchedSetAttr(sysmon, &want, 0)
			return
		case <-t.C:
		}
	}
}

// restore puts every thread but sysmon that runs under another policy
// than want's back under want, and reports how many it changed.
func restore(sysmon int, want unix.SchedAttr) int {
	tids, err := threads(os.Getpid())
	if err != nil {
		return 0
	}
	changed := 0
	for _, tid := range tids {
		if tid == sysmon {
			continue
		}
		if p, err := Policy(tid); err == nil && p != want.Policy && unix.SchedSetAttr(tid, &want, 0) == nil {
			changed++
		}
	}
	return changed
}

// Policy returns a thread's scheduling policy (unix.SCHED_NORMAL,
// unix.SCHED_BATCH, ...).
func Policy(tid int) (uint32, error) {
	a, err := unix.SchedGetAttr(tid, 0)
	if err != nil {
		return 0, fmt.Errorf("sysmon: scheduling policy of thread %d: %w", tid, err)
	}
	return a.Policy, nil
}
