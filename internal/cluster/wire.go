package cluster

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/proto"

	"github.com/patina-db/patina/internal/crdt"
	wirev1 "github.com/patina-db/patina/proto/patina/wire/v1"
)

// maxFrame bounds one message on the wire; a peer announcing more is cut
// off. Senders split what they send into parts of at most maxPart bytes,
// so broadcasts and sync chunks are read under maxPartFrame (a part and
// its envelope): decoding a message allocates several times its size,
// and a peer gets no more room than a sender needs. Only a sync
// request, the requester's whole bookkeeping, may take maxFrame.
const (
	maxFrame     = 16 << 20
	maxPart      = 4 << 20
	maxPartFrame = maxPart + 64<<10
	// maxHello bounds the hello, read before the peer proved anything.
	maxHello = 4 << 10
)

// writeFrame writes a varint length and the message.
func writeFrame(w io.Writer, m proto.Message) error {
	buf, err := encodeFrame(m)
	if err != nil {
		return err
	}
	_, err = w.Write(buf)
	return err
}

// encodeFrame is m as a frame: its length, then m.
func encodeFrame(m proto.Message) ([]byte, error) {
	data, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", m, err)
	}
	if len(data) > maxFrame {
		return nil, fmt.Errorf("encode %T: %d bytes, above the %d-byte frame limit", m, len(data), maxFrame)
	}
	buf := binary.AppendUvarint(make([]byte, 0, len(data)+binary.MaxVarintLen32), uint64(len(data)))
	return append(buf, data...), nil
}

// errFrameTooLarge is a peer announcing a frame above maxFrame.
var errFrameTooLarge = errors.New("frame above the size limit")

// readFrame reads one frame into m.
func readFrame(r *bufio.Reader, m proto.Message) error {
	return readFrameLimit(r, m, maxFrame)
}

// smallFrame is the size up to which a frame is read into a buffer of
// its announced size at once (a broadcast of a few versions is a few
// hundred bytes).
const smallFrame = 64 << 10

// readFrameLimit reads one frame of at most limit bytes. Past smallFrame
// the buffer grows as bytes arrive: a peer announcing a large frame gets
// no memory for it until it sends it.
func readFrameLimit(r *bufio.Reader, m proto.Message, limit uint64) error {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return err
	}
	if n > limit {
		return fmt.Errorf("%w: %d bytes", errFrameTooLarge, n)
	}
	var data []byte
	if n <= smallFrame {
		data = make([]byte, n)
		if _, err := io.ReadFull(r, data); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	} else {
		// Grown as it arrives: a peer that announces a large frame and
		// sends little of it gets no more memory than it sent.
		var buf bytes.Buffer
		if _, err := io.CopyN(&buf, r, int64(n)); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		data = buf.Bytes()
	}
	if err := proto.Unmarshal(data, m); err != nil {
		return fmt.Errorf("decode %T: %w", m, err)
	}
	return nil
}

// fromWireValue is the value of a Change, the earlier per-cell form.
func fromWireValue(w *wirev1.Value) (crdt.Value, error) {
	if w == nil {
		return crdt.NullValue(), nil
	}
	return kindValue(w.GetKind(), w.GetInteger(), w.GetReal(), w.GetBytes())
}

// kindValue is the value a wire kind and its fields describe.
func kindValue(k wirev1.Kind, i int64, f float64, b []byte) (crdt.Value, error) {
	switch k {
	case wirev1.Kind_KIND_NULL:
		return crdt.NullValue(), nil
	case wirev1.Kind_KIND_INTEGER:
		return crdt.IntValue(i), nil
	case wirev1.Kind_KIND_REAL:
		return crdt.RealValue(f), nil
	case wirev1.Kind_KIND_TEXT:
		return crdt.Value{Kind: crdt.Text, Bytes: b}, nil
	case wirev1.Kind_KIND_BLOB:
		return crdt.Value{Kind: crdt.Blob, Bytes: b}, nil
	}
	return crdt.Value{}, fmt.Errorf("unknown value kind %d", k)
}

// toWire encodes a changeset with its hop count and commit time, as rows:
// each run of changes to one row (same table, key and causal length, at
// consecutive positions) carries its table and key once.
func toWire(cs *crdt.Changeset, hops uint32, cleared bool, committed int64) *wirev1.Changeset {
	w := &wirev1.Changeset{Actor: cs.Actor[:], Version: cs.Version, Hops: hops, Cleared: cleared, CommittedUnixNano: committed}
	cells := make([]wirev1.Cell, len(cs.Changes)) // one allocation for all
	var row *wirev1.Row
	for i, c := range cs.Changes {
		if row == nil || c.Table != row.Table || c.CL != row.Cl || c.Seq != row.Seq+uint32(len(row.Cells)) || !bytes.Equal(c.PK, row.Pk) {
			row = &wirev1.Row{Table: c.Table, Pk: c.PK, Cl: c.CL, Seq: c.Seq}
			w.Rows = append(w.Rows, row)
		}
		cell := &cells[i]
		cell.Column, cell.Kind, cell.ColVersion = c.Column, wirev1.Kind(c.Value.Kind), c.ColVersion
		cell.Integer, cell.Real, cell.Bytes = c.Value.Int, c.Value.Float, c.Value.Bytes
		row.Cells = append(row.Cells, cell)
	}
	return w
}

// fromWire decodes a changeset from a peer and validates it.
func fromWire(w *wirev1.Changeset) (*crdt.Changeset, error) {
	a, err := crdt.ActorIDFromBytes(w.GetActor())
	if err != nil {
		return nil, err
	}
	n := len(w.GetChanges())
	for _, r := range w.GetRows() {
		n += len(r.GetCells())
	}
	cs := &crdt.Changeset{Actor: a, Version: w.GetVersion(), Changes: make([]crdt.Change, 0, n)}
	for i, c := range w.GetChanges() {
		v, err := fromWireValue(c.GetValue())
		if err != nil {
			return nil, fmt.Errorf("change %d: %w", i, err)
		}
		cs.Changes = append(cs.Changes, crdt.Change{Table: c.GetTable(), PK: c.GetPk(), Column: c.GetColumn(), Value: v, ColVersion: c.GetColVersion(), CL: c.GetCl(), Seq: c.GetSeq()})
	}
	for i, r := range w.GetRows() {
		if uint64(r.GetSeq())+uint64(len(r.GetCells())) > 1<<32 {
			return nil, fmt.Errorf("row %d: positions past 2^32", i)
		}
		for j, c := range r.GetCells() {
			v, err := cellValue(c)
			if err != nil {
				return nil, fmt.Errorf("row %d, cell %d: %w", i, j, err)
			}
			cs.Changes = append(cs.Changes, crdt.Change{Table: r.GetTable(), PK: r.GetPk(), Column: c.GetColumn(), Value: v, ColVersion: c.GetColVersion(), CL: r.GetCl(), Seq: r.GetSeq() + uint32(j)})
		}
	}
	if err := cs.Validate(); err != nil {
		return nil, err
	}
	return cs, nil
}

// cellValue is a cell's inline value.
func cellValue(c *wirev1.Cell) (crdt.Value, error) {
	return kindValue(c.GetKind(), c.GetInteger(), c.GetReal(), c.GetBytes())
}
