package store

import (
	"context"
	"fmt"
	"testing"
)

// A commit reaches the WAL in one write, not two per frame, and what it
// wrote is there for every other connection when it returns.
func TestWALWritesOncePerCommit(t *testing.T) {
	s := regionalStore(t, t.TempDir(), "w")
	defer s.Close()
	ctx := context.Background()
	in0, out0 := walWrites()
	const commits = 200
	for i := 0; i < commits; i++ {
		exec(t, s, stmt(`INSERT INTO machines (id, app) VALUES (?, 'w')`, fmt.Sprintf("m%d", i)))
		var n int
		if err := s.readers.QueryRowContext(ctx, `SELECT count(*) FROM machines`).Scan(&n); err != nil || n != i+1 {
			t.Fatalf("after commit %d a reader sees %d rows (%v)", i, n, err)
		}
	}
	in, out := walWrites()
	in, out = in-in0, out-out0
	// Each commit writes several frames, two writes each; the WAL's own
	// header adds a write now and then.
	if in < 4*commits || out > commits+commits/10 {
		t.Fatalf("%d commits: SQLite made %d WAL writes, %d reached the file", commits, in, out)
	}
	t.Logf("%d commits: %d WAL writes from SQLite, %d to the file", commits, in, out)
}
