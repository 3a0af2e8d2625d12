package cluster

import (
	"errors"
	"math"
	"reflect"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/patina-db/patina/internal/crdt"
	wirev1 "github.com/patina-db/patina/proto/patina/wire/v1"
)

// sameChanges compares decoded changesets, empty and nil bytes being the
// same value on the wire.
func sameChanges(a, b *crdt.Changeset) bool {
	norm := func(cs *crdt.Changeset) {
		if len(cs.Changes) == 0 {
			cs.Changes = nil
		}
		for i := range cs.Changes {
			if len(cs.Changes[i].Value.Bytes) == 0 {
				cs.Changes[i].Value.Bytes = nil
			}
		}
	}
	norm(a)
	norm(b)
	return reflect.DeepEqual(a, b)
}

// TestPartsRoundTrip: a changeset cut into parts of at most a limit, the
// parts sent through protobuf and taken in any order, with copies, joins
// back into the changeset, change for change, at its last new part and
// not before.
func TestPartsRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cs := genChangeset(t)
		// Long rows too, that a part cannot hold whole.
		for k := range rapid.IntRange(0, 3).Draw(t, "long rows") {
			pk := crdt.PackPK([]crdt.Value{crdt.IntValue(int64(100 + k))})
			for c := range rapid.IntRange(1, 60).Draw(t, "cells") {
				cs.Changes = append(cs.Changes, crdt.Change{Table: "machines", PK: pk, CL: 1, Column: "image",
					ColVersion: uint64(c + 1), Value: crdt.TextValue("some image name"), Seq: uint32(1000*(k+1) + c)})
			}
		}
		limit := rapid.IntRange(300, 3000).Draw(t, "limit")
		w := toWire(cs, 3, false, 9)
		parts, _, err := splitWire(w, limit)
		if err != nil {
			if !errors.Is(err, errVersionTooLarge) {
				t.Fatal(err)
			}
			return // a cell larger than a part; the generator makes some
		}
		if proto.Size(w) > limit && len(parts) < 2 {
			t.Fatalf("%d bytes in %d part(s) of at most %d", proto.Size(w), len(parts), limit)
		}
		var wire []*wirev1.Changeset
		for i, p := range parts {
			if n := proto.Size(p); n > limit {
				t.Fatalf("part %d: %d bytes, limit %d", i, n, limit)
			}
			data, err := proto.Marshal(p)
			if err != nil {
				t.Fatal(err)
			}
			var back wirev1.Changeset
			if err := proto.Unmarshal(data, &back); err != nil {
				t.Fatal(err)
			}
			wire = append(wire, &back)
		}
		want, err := fromWire(w)
		if err != nil {
			t.Fatal(err)
		}
		if len(wire) == 1 {
			got, err := fromWire(wire[0])
			if err != nil || !sameChanges(got, want) {
				t.Fatalf("one part: %v %+v", err, got)
			}
			return
		}
		order := rapid.Permutation(wire).Draw(t, "order")
		for _, i := range rapid.SliceOfN(rapid.IntRange(0, len(order)-1), 0, 3).Draw(t, "copies") {
			order = append(order[:i+1], order[i:]...) // a copy right after
		}
		a := newAssembler(maxVersionBytes)
		seen := map[uint32]bool{}
		now := time.Unix(1000, 0)
		for k, p := range order {
			whole, err := a.add("n1", p, now)
			if err != nil {
				t.Fatal(err)
			}
			seen[p.GetPart()] = true
			last := len(seen) == len(wire) && !seen[1<<31] // every part, first time
			if last {
				seen[1<<31] = true
				if whole == nil {
					t.Fatalf("all %d parts in, no version (step %d)", len(wire), k)
				}
				got, err := fromWire(whole)
				if err != nil {
					t.Fatal(err)
				}
				if !sameChanges(got, want) {
					t.Fatalf("joined:\n got %+v\nwant %+v", got, want)
				}
				if whole.GetHops() != 3 || whole.GetCommittedUnixNano() != 9 {
					t.Fatalf("header lost: %+v", whole)
				}
				if a.kept() != 0 || len(a.pending) != 0 {
					t.Fatalf("%d bytes kept after the join", a.kept())
				}
				continue
			}
			if whole != nil {
				t.Fatalf("a version at step %d, %d of %d parts in", k, len(seen), len(wire))
			}
		}
	})
}

func testParts(t *testing.T, version uint64, rows int) []*wirev1.Changeset {
	t.Helper()
	cs := &crdt.Changeset{Actor: crdt.ActorID{7}, Version: version}
	for i := range rows {
		cs.Changes = append(cs.Changes, crdt.Change{Table: "machines", PK: crdt.PackPK([]crdt.Value{crdt.IntValue(int64(i))}),
			CL: 1, Column: "image", ColVersion: 1, Value: crdt.TextValue("0123456789012345678901234567890123456789"), Seq: uint32(i)})
	}
	parts, _, err := splitWire(toWire(cs, 0, false, 0), 1000)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) < 3 {
		t.Fatalf("%d parts", len(parts))
	}
	return parts
}

// TestAssemblerRefusesAndForgets: parts no sender makes are refused;
// what is kept stays under the limit, the oldest version's parts going
// first; parts wait a while for the rest, not for ever; senders do not
// mix.
func TestAssemblerRefusesAndForgets(t *testing.T) {
	now := time.Unix(1000, 0)
	a := newAssembler(maxVersionBytes)
	bad := []*wirev1.Changeset{
		{Actor: make([]byte, 16), Version: 1, Part: 2, Parts: 2},
		{Actor: make([]byte, 16), Version: 1, Part: 0, Parts: maxParts + 1},
		{Actor: []byte{1, 2}, Version: 1, Part: 0, Parts: 2},
	}
	for _, w := range bad {
		if whole, err := a.add("n1", w, now); err == nil || whole != nil {
			t.Errorf("part %d of %d accepted", w.GetPart(), w.GetParts())
		}
	}
	if a.kept() != 0 {
		t.Fatalf("%d bytes kept of refused parts", a.kept())
	}

	// Two senders' parts do not join each other's.
	p := testParts(t, 1, 60)
	for i, part := range p {
		from := "n1"
		if i == len(p)-1 {
			from = "n2"
		}
		if whole, err := a.add(from, part, now); err != nil || whole != nil {
			t.Fatalf("part %d from %s: %v, %v", i, from, whole, err)
		}
	}
	if whole, _ := a.add("n1", p[len(p)-1], now); whole == nil {
		t.Fatal("n1's last part did not complete n1's version")
	}

	// Past the TTL a version's parts are dropped, so its last part alone
	// completes nothing.
	a = newAssembler(maxVersionBytes)
	for _, part := range p[:len(p)-1] {
		a.add("n1", part, now)
	}
	later := now.Add(partsTTL + time.Second)
	if whole, _ := a.add("n1", p[len(p)-1], later); whole != nil {
		t.Fatal("a version joined from parts older than the TTL")
	}

	// Over the limit, the version whose parts came first is dropped.
	q := testParts(t, 2, 60)
	size := 0
	for _, part := range p[:len(p)-1] {
		size += proto.Size(part)
	}
	a = newAssembler(size + proto.Size(q[0]) - 1)
	for _, part := range p[:len(p)-1] {
		a.add("n1", part, now)
	}
	a.add("n1", q[0], now.Add(time.Second))
	if a.kept() > a.limit {
		t.Fatalf("%d bytes kept, limit %d", a.kept(), a.limit)
	}
	if whole, _ := a.add("n1", p[len(p)-1], now.Add(2*time.Second)); whole != nil {
		t.Fatal("version 1 joined, though its parts were dropped for version 2's")
	}
	// A version larger than the limit on its own is given up.
	a = newAssembler(proto.Size(p[0]) + 1)
	var err error
	for _, part := range p {
		if _, err = a.add("n1", part, now); err != nil {
			break
		}
	}
	if !errors.Is(err, errVersionTooLarge) || a.kept() != 0 {
		t.Fatalf("a version over the limit: %v, %d bytes kept", err, a.kept())
	}
}

// TestLargestCellFitsAPart: a row as large as a local write may make
// (MaxValueBytes for its key and values), with long names, still goes in
// a part, beside rows before it and after it.
func TestLargestCellFitsAPart(t *testing.T) {
	long := string(make([]byte, 255))
	pk := crdt.PackPK([]crdt.Value{crdt.TextValue(string(make([]byte, 1024)))})
	value := crdt.BlobValue(make([]byte, MaxValueBytes-1024))
	cs := &crdt.Changeset{Actor: crdt.ActorID{1}, Version: math.MaxInt64}
	for i := range 3 {
		cs.Changes = append(cs.Changes, crdt.Change{Table: long, PK: pk, CL: math.MaxUint32, Column: long, ColVersion: crdt.MaxCounter, Value: value, Seq: math.MaxUint32 - 3 + uint32(i)})
		pk = append([]byte(nil), pk...)
		pk[len(pk)-1]++
	}
	parts, _, err := splitWire(toWire(cs, math.MaxUint32, true, math.MaxInt64), partBudget)
	if err != nil {
		t.Fatal(err)
	}
	if len(parts) != 3 {
		t.Fatalf("%d parts, want 3", len(parts))
	}
	for i, p := range parts {
		if n := proto.Size(p); n > maxPart {
			t.Fatalf("part %d: %d bytes, above %d", i, n, maxPart)
		}
	}
	// One cell more than a part holds: an error, not a part too large.
	cs.Changes[1].Value = crdt.BlobValue(make([]byte, partBudget))
	if _, _, err := splitWire(toWire(cs, 0, false, 0), partBudget); !errors.Is(err, errVersionTooLarge) {
		t.Fatalf("a cell larger than a part: %v", err)
	}
}

// TestWholeOnlyLeavesOutParts: what a member that does not join parts
// is sent of a broadcast.
func TestWholeOnlyLeavesOutParts(t *testing.T) {
	whole := &wirev1.Changeset{Version: 1}
	p0, p1 := &wirev1.Changeset{Version: 2, Part: 0, Parts: 2}, &wirev1.Changeset{Version: 2, Part: 1, Parts: 2}
	if b := (&wirev1.Broadcast{Changesets: []*wirev1.Changeset{whole}}); wholeOnly(b) != b {
		t.Fatal("a broadcast without parts was copied")
	}
	if got := wholeOnly(&wirev1.Broadcast{Changesets: []*wirev1.Changeset{p0, whole, p1}}); len(got.GetChangesets()) != 1 || got.Changesets[0] != whole {
		t.Fatalf("kept %v", got)
	}
	if got := wholeOnly(&wirev1.Broadcast{Changesets: []*wirev1.Changeset{p0, p1}}); got != nil {
		t.Fatalf("parts alone: kept %v", got)
	}
}
