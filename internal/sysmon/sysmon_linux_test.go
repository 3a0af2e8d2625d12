package sysmon

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestThreadIsTheOneThatPolls checks Thread against what sysmon does:
// while a goroutine keeps a processor busy, sysmon sleeps in nanosleep
// between its rounds, and no other thread of the process calls it.
func TestThreadIsTheOneThatPolls(t *testing.T) {
	var stop atomic.Bool
	done := make(chan struct{})
	go func() {
		defer close(done)
		for !stop.Load() {
		}
	}()
	defer func() { stop.Store(true); <-done }()

	want := fmt.Sprint(unix.SYS_NANOSLEEP)
	seen := map[int]int{}
	deadline := time.Now().Add(10 * time.Second)
	for seen[mostSeen(seen)] < 20 {
		if time.Now().After(deadline) {
			t.Fatalf("no thread seen in nanosleep 20 times within 10 s: %v", seen)
		}
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range tasks {
			b, err := os.ReadFile("/proc/self/task/" + e.Name() + "/syscall")
			if err != nil {
				continue
			}
			if f := strings.Fields(string(b)); len(f) > 0 && f[0] == want {
				tid, _ := strconv.Atoi(e.Name())
				seen[tid]++
			}
		}
		time.Sleep(time.Millisecond)
	}
	got, err := Thread()
	if err != nil {
		t.Fatal(err)
	}
	if top := mostSeen(seen); got != top {
		t.Fatalf("Thread() = %d, but the thread seen in nanosleep was %d (%v)", got, top, seen)
	}
}

func mostSeen(seen map[int]int) int {
	best := 0
	for tid, n := range seen {
		if best == 0 || n > seen[best] {
			best = tid
		}
	}
	return best
}

// TestBatchKeepsOtherThreads puts the monitor thread under SCHED_BATCH,
// then puts another thread there too, as a thread the monitor starts
// inherits its policy: Batch puts that one back and leaves the monitor.
func TestBatchKeepsOtherThreads(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tid, err := Batch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := Policy(tid); err != nil || p != unix.SCHED_BATCH {
		t.Fatalf("monitor thread %d: policy %d, %v after Batch; want SCHED_BATCH", tid, p, err)
	}
	other := make(chan int)
	release := make(chan struct{})
	go func() {
		// A thread of its own, kept until the test ends.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		self := unix.Gettid()
		a, err := unix.SchedGetAttr(self, 0)
		if err == nil {
			a.Policy = unix.SCHED_BATCH
			err = unix.SchedSetAttr(self, a, 0)
		}
		if err != nil {
			t.Error(err)
		}
		other <- self
		<-release
	}()
	o := <-other
	defer close(release)
	waitPolicy(t, o, unix.SCHED_NORMAL)
	if p, _ := Policy(tid); p != unix.SCHED_BATCH {
		t.Fatalf("monitor thread %d under policy %d; want it left under SCHED_BATCH", tid, p)
	}
	cancel()
	waitPolicy(t, tid, unix.SCHED_NORMAL)
}

// TestBatchIsSharedByCallers: callers share one keeper, and the monitor
// thread stays under SCHED_BATCH until the last caller's context ends.
func TestBatchIsSharedByCallers(t *testing.T) {
	ctx1, cancel1 := context.WithCancel(context.Background())
	defer cancel1()
	ctx2, cancel2 := context.WithCancel(context.Background())
	defer cancel2()
	tid, err := Batch(ctx1)
	if err != nil {
		t.Fatal(err)
	}
	held.mu.Lock()
	keeper := held.done
	held.mu.Unlock()
	tid2, err := Batch(ctx2)
	if err != nil {
		t.Fatal(err)
	}
	held.mu.Lock()
	users, same := held.users, held.done == keeper
	held.mu.Unlock()
	if tid2 != tid || users != 2 || !same {
		t.Fatalf("second Batch: thread %d (first %d), %d users, same keeper %v; want one keeper for two users", tid2, tid, users, same)
	}

	cancel1()
	deadline := time.Now().Add(10 * time.Second)
	for {
		held.mu.Lock()
		users = held.users
		held.mu.Unlock()
		if users == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d users 10 s after the first context ended; want 1", users)
		}
		time.Sleep(time.Millisecond)
	}
	select {
	case <-keeper:
		t.Fatal("the keeper stopped while a caller still held it")
	default:
	}
	if p, _ := Policy(tid); p != unix.SCHED_BATCH {
		t.Fatalf("monitor thread under policy %d with a caller left; want SCHED_BATCH", p)
	}

	cancel2()
	select {
	case <-keeper:
	case <-time.After(10 * time.Second):
		t.Fatal("the keeper still runs 10 s after the last context ended")
	}
	if p, _ := Policy(tid); p != unix.SCHED_NORMAL {
		t.Fatalf("monitor thread under policy %d after the keeper stopped; want SCHED_NORMAL", p)
	}
}

// waitPolicy waits up to 10 s for a thread to be under policy want.
func waitPolicy(t *testing.T, tid int, want uint32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		p, err := Policy(tid)
		if err != nil {
			t.Fatal(err)
		}
		if p == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("thread %d under policy %d after 10 s; want %d", tid, p, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
