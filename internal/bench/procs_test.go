package bench

import (
	"runtime"
	"testing"
)

func TestSharedProcsSplitsTheCores(t *testing.T) {
	cores := runtime.NumCPU()
	for _, tc := range []struct{ n, want int }{
		{0, cores}, {1, cores}, {cores, 1}, {2 * cores, 1}, {10 * cores, 1},
	} {
		if got := SharedProcs(tc.n); got != tc.want {
			t.Errorf("SharedProcs(%d) = %d on %d cores, want %d", tc.n, got, cores, tc.want)
		}
	}
	if got := procsFor(3, 10); got != 3 {
		t.Errorf("procsFor(3, 10) = %d: a given count must win", got)
	}
	if got := procsFor(0, 2*cores); got != 1 {
		t.Errorf("procsFor(0, %d) = %d, want the shared default 1", 2*cores, got)
	}
	if (Options{Nodes: 3}).agentProcs() != 0 {
		t.Error("agents in this process must leave GOMAXPROCS alone")
	}
}
