package subs

import (
	"testing"

	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/internal/store"
)

func TestUpdatesFanOutAndCutOff(t *testing.T) {
	u := NewUpdates()
	fast := u.Subscribe("machines", 10)
	slow := u.Subscribe("machines", 1)
	other := u.Subscribe("machine_checks", 10)
	row := func(id string, del bool) store.RowChange {
		return store.RowChange{Table: "machines", PK: []crdt.Value{crdt.TextValue(id)}, Deleted: del}
	}
	u.Publish([]store.RowChange{row("m1", false), row("m2", true)})
	if n := <-fast.C; string(n.PK[0].Bytes) != "m1" || n.Deleted {
		t.Fatalf("first notify %+v", n)
	}
	if n := <-fast.C; string(n.PK[0].Bytes) != "m2" || !n.Deleted {
		t.Fatalf("second notify %+v", n)
	}
	if len(other.C) != 0 {
		t.Fatal("a follower of another table was notified")
	}
	// The slow follower's buffer held one; the second cut it off.
	<-slow.C
	if _, open := <-slow.C; open || !slow.Lagged {
		t.Fatal("a follower that fell behind was not cut off")
	}
	if u.Count() != 2 {
		t.Fatalf("%d followers, want 2", u.Count())
	}
	u.Unsubscribe(fast)
	u.Unsubscribe(fast)
	u.Unsubscribe(slow)
	if u.Count() != 1 {
		t.Fatalf("%d followers after unsubscribing, want 1", u.Count())
	}
}
