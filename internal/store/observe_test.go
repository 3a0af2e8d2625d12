package store

import (
	"context"
	"slices"
	"testing"
	"time"
)

// recordingObserver keeps what it was told, under the store's lock.
type recordingObserver struct {
	events []string
	held   bool
	items  []int
}

func (o *recordingObserver) WriteStarted(kind WriteKind) {
	o.events = append(o.events, "start "+string(kind))
	o.held = true
}

func (o *recordingObserver) WriteFinished(kind WriteKind, d time.Duration, items int) {
	o.events = append(o.events, "end "+string(kind))
	o.held = false
	o.items = append(o.items, items)
}

// TestWriteObserver: every local transaction, committed, empty or rolled
// back, and every apply batch holds the write lock between a start and an
// end.
func TestWriteObserver(t *testing.T) {
	a, b := regionalPair(t)
	oa, ob := &recordingObserver{}, &recordingObserver{}
	a.SetWriteObserver(oa)
	b.SetWriteObserver(ob)
	v := exec(t, a, stmt(`INSERT INTO machines (id) VALUES ('m1')`)).Version
	exec(t, a, stmt(`UPDATE machines SET id = id`))
	if _, err := a.Transact(context.Background(), []Statement{stmt(`INSERT INTO nowhere VALUES (1)`)}); err == nil {
		t.Fatal("a bad statement committed")
	}
	if want := []string{"start local", "end local", "start local", "end local", "start local", "end local"}; !slices.Equal(oa.events, want) || oa.held {
		t.Fatalf("local writes observed as %v, want %v", oa.events, want)
	}
	cs, _, err := a.Changes(context.Background(), a.Actor(), v)
	if err != nil {
		t.Fatal(err)
	}
	apply(t, b, cs, cs)
	if want := []string{"start apply", "end apply"}; !slices.Equal(ob.events, want) {
		t.Fatalf("apply observed as %v, want %v", ob.events, want)
	}
	if want := []int{1, 1, 1}; !slices.Equal(oa.items, want) {
		t.Fatalf("local writes carried %v transactions, want %v", oa.items, want)
	}
	if want := []int{2}; !slices.Equal(ob.items, want) {
		t.Fatalf("the apply batch carried %v changesets, want %v", ob.items, want)
	}
}
