package bench

import "runtime"

// SharedProcs is the GOMAXPROCS each of n server processes gets when a
// benchmark runs them side by side on this machine: its share of the
// cores, at least one. The processes stand for n hosts; left at Go's
// default, each would size its scheduler for every core of the machine,
// and n such schedulers on two cores spend much of their time waking
// threads for one another. etcd members get the same share as agents.
func SharedProcs(n int) int {
	if n < 1 {
		n = 1
	}
	return max(1, runtime.NumCPU()/n)
}

// procsFor is the GOMAXPROCS for n server processes: procs when given,
// SharedProcs otherwise.
func procsFor(procs, n int) int {
	if procs > 0 {
		return procs
	}
	return SharedProcs(n)
}
