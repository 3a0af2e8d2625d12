// Package sysmon owns one piece of process tuning: the scheduling policy
// of the Go runtime's monitor thread (sysmon).
//
// sysmon is a thread of its own that wakes periodically to take the
// processor back from goroutines blocked in system calls or cgo, to
// preempt long-running goroutines and to poll the network when nobody
// else does. It sleeps 20 µs between rounds for as long as it keeps
// finding a goroutine in a call that has outlasted a round, and backs off
// towards 10 ms only after about fifty rounds without one. An agent makes
// a hundred thousand cgo calls a second into SQLite; on a busy host some
// are always descheduled mid-call, so sysmon stays at 20 µs: thousands of
// wake-ups a second per process, and on a saturated host each one
// preempts a thread doing real work.
//
// Under SCHED_BATCH the kernel does not let a thread's wake-up preempt
// the thread running: it runs at the next scheduling point (when the
// running thread blocks, which under such a load is every few tens of
// microseconds, or at the next tick), with the same share of the CPU as
// before. sysmon's duties are late by that much, and its wake-ups stop
// interrupting the agent. A lower priority (nice 19) saved as much CPU
// but delayed sysmon by milliseconds on a saturated host, and with it
// every goroutine waiting for a processor held in a system call: see
// docs/performance.md for both.
package sysmon
