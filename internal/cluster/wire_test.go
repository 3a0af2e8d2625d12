package cluster

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"testing"

	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"

	"github.com/patina-db/patina/internal/crdt"
	wirev1 "github.com/patina-db/patina/proto/patina/wire/v1"
)

// genChangeset draws a valid changeset whose changes run over a few
// tables and keys in any order, with sentinels, repeated keys, gaps in
// positions and every kind of value.
func genChangeset(t *rapid.T) *crdt.Changeset {
	cs := &crdt.Changeset{Actor: crdt.ActorID{1, 2, 3}, Version: rapid.Uint64Range(1, math.MaxInt64).Draw(t, "version")}
	n := rapid.IntRange(0, 40).Draw(t, "changes")
	seq := uint32(rapid.IntRange(0, 5).Draw(t, "seq0"))
	for i := 0; i < n; i++ {
		key := rapid.IntRange(0, 3).Draw(t, "key")
		pk := crdt.PackPK([]crdt.Value{crdt.TextValue(string(rune('a' + key)))})
		cl := uint64(rapid.SampledFrom([]int{1, 1, 1, 2, 3}).Draw(t, "cl"))
		c := crdt.Change{Table: rapid.SampledFrom([]string{"machines", "machine_checks"}).Draw(t, "table"), PK: pk, CL: cl, Seq: seq}
		if cl%2 == 1 && rapid.IntRange(0, 4).Draw(t, "sentinel?") > 0 {
			c.Column = rapid.SampledFrom([]string{"app", "state", "port", "image"}).Draw(t, "column")
			c.ColVersion = rapid.Uint64Range(1, 100).Draw(t, "col_version")
			c.Value = rapid.OneOf(
				rapid.Just(crdt.NullValue()),
				rapid.Map(rapid.Int64(), crdt.IntValue),
				rapid.Map(rapid.Float64Range(-1e300, 1e300), crdt.RealValue),
				rapid.Map(rapid.String(), crdt.TextValue),
				rapid.Map(rapid.SliceOfN(rapid.Byte(), 1, 8), crdt.BlobValue),
			).Draw(t, "value")
		}
		cs.Changes = append(cs.Changes, c)
		seq += uint32(rapid.SampledFrom([]int{1, 1, 1, 2}).Draw(t, "step"))
	}
	return cs
}

// TestWireRoundTrip: a changeset read back from its encoding, through
// protobuf bytes, is the changeset that was written, change for change.
func TestWireRoundTrip(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cs := genChangeset(t)
		if err := cs.Validate(); err != nil {
			t.Fatalf("generator made an invalid changeset: %v", err)
		}
		data, err := proto.Marshal(toWire(cs, 2, false, 7))
		if err != nil {
			t.Fatal(err)
		}
		var w wirev1.Changeset
		if err := proto.Unmarshal(data, &w); err != nil {
			t.Fatal(err)
		}
		got, err := fromWire(&w)
		if err != nil {
			t.Fatal(err)
		}
		if !sameChanges(got, cs) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, cs)
		}
		if w.GetHops() != 2 || w.GetCommittedUnixNano() != 7 || len(w.GetChanges()) != 0 {
			t.Fatalf("envelope: %+v", &w)
		}
	})
}

// TestWireReadsTheEarlierForm: a changeset sent one message per cell, as
// members did before rows, still decodes, and a peer's bad row is refused.
func TestWireReadsTheEarlierForm(t *testing.T) {
	pk := crdt.PackPK([]crdt.Value{crdt.TextValue("m1")})
	w := &wirev1.Changeset{Actor: make([]byte, 16), Version: 3, Changes: []*wirev1.Change{
		{Table: "machines", Pk: pk, Cl: 1, Seq: 0},
		{Table: "machines", Pk: pk, Column: "app", Value: &wirev1.Value{Kind: wirev1.Kind_KIND_TEXT, Bytes: []byte("web")}, ColVersion: 1, Cl: 1, Seq: 1},
	}}
	w.Actor[0] = 1
	cs, err := fromWire(w)
	if err != nil {
		t.Fatal(err)
	}
	if len(cs.Changes) != 2 || cs.Changes[1].Column != "app" || string(cs.Changes[1].Value.Bytes) != "web" || cs.Changes[1].Seq != 1 {
		t.Fatalf("decoded %+v", cs.Changes)
	}
	for name, row := range map[string]*wirev1.Row{
		"unknown kind":   {Table: "machines", Pk: pk, Cl: 1, Cells: []*wirev1.Cell{{Column: "app", Kind: 9, ColVersion: 1}}},
		"bad key":        {Table: "machines", Pk: []byte{0xff}, Cl: 1, Cells: []*wirev1.Cell{{}}},
		"positions wrap": {Table: "machines", Pk: pk, Cl: 1, Seq: math.MaxUint32, Cells: []*wirev1.Cell{{}, {}}},
		"no table":       {Pk: pk, Cl: 1, Cells: []*wirev1.Cell{{}}},
	} {
		bad := &wirev1.Changeset{Actor: w.Actor, Version: 4, Rows: []*wirev1.Row{row}}
		if _, err := fromWire(bad); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestReadFrameCutShort: a frame that ends before its announced length is
// an unexpected EOF, whether it is read at once (small) or as it arrives
// (large), and a whole one decodes.
func TestReadFrameCutShort(t *testing.T) {
	for _, size := range []int{100, 2 * smallFrame} {
		m := &wirev1.Changeset{Actor: make([]byte, 16), Version: 7, Rows: []*wirev1.Row{{Table: "machines", Pk: make([]byte, size)}}}
		frame, err := encodeFrame(m)
		if err != nil {
			t.Fatal(err)
		}
		var got wirev1.Changeset
		if err := readFrame(bufio.NewReader(bytes.NewReader(frame)), &got); err != nil || got.GetVersion() != 7 || len(got.GetRows()[0].GetPk()) != size {
			t.Fatalf("%d-byte key: read %v, %v", size, &got, err)
		}
		header := len(frame) - proto.Size(m)
		for _, cut := range []int{len(frame) - 1, len(frame) / 2, header} {
			err := readFrame(bufio.NewReader(bytes.NewReader(frame[:cut])), &wirev1.Changeset{})
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("%d-byte key, frame cut at %d of %d: %v, want an unexpected EOF", size, cut, len(frame), err)
			}
		}
	}
}

// TestLargestPartsFitTheirFrame: the largest broadcast and sync chunk a
// sender makes (parts of maxPart, and a chunk of syncChunkSize
// changesets) read under maxPartFrame; a frame announcing more is
// refused before it is read.
func TestLargestPartsFitTheirFrame(t *testing.T) {
	big := func(payload int) *wirev1.Changeset {
		return &wirev1.Changeset{Actor: make([]byte, 16), Version: math.MaxInt64, Rows: []*wirev1.Row{{Table: "machines", Pk: make([]byte, payload)}}}
	}
	// One changeset as large as a sender sends: just under maxPart.
	cs := big(maxPart - 64)
	for proto.Size(cs) > maxPart {
		cs = big(len(cs.Rows[0].Pk) - 1)
	}
	parts := splitBroadcast(&wirev1.Broadcast{Changesets: []*wirev1.Changeset{cs, big(maxPart / 2), big(maxPart / 2)}}, maxPart)
	// A sync chunk as handleSync fills it: changesets up to maxPart in all,
	// at most syncChunkSize of them.
	chunk := &wirev1.SyncChunk{Done: true}
	for size := 0; len(chunk.Changesets) < syncChunkSize; {
		c := big(maxPart/syncChunkSize - 40)
		if size+proto.Size(c) > maxPart {
			break
		}
		chunk.Changesets = append(chunk.Changesets, c)
		size += proto.Size(c)
	}
	msgs := []proto.Message{chunk}
	for _, p := range parts {
		msgs = append(msgs, p)
	}
	for _, m := range msgs {
		frame, err := encodeFrame(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := readFrameLimit(bufio.NewReader(bytes.NewReader(frame)), m.ProtoReflect().New().Interface(), maxPartFrame); err != nil {
			t.Fatalf("a %d-byte %T: %v", len(frame), m, err)
		}
	}
	over := binary.AppendUvarint(nil, maxPartFrame+1)
	if err := readFrameLimit(bufio.NewReader(bytes.NewReader(over)), &wirev1.Broadcast{}, maxPartFrame); !errors.Is(err, errFrameTooLarge) {
		t.Fatalf("a frame announcing %d bytes: %v", maxPartFrame+1, err)
	}
}
