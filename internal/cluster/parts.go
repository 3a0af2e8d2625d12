package cluster

import (
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/patina-db/patina/internal/crdt"
	wirev1 "github.com/patina-db/patina/proto/patina/wire/v1"
)

// Versions larger than a message. One local transaction can change tens
// of thousands of rows (a host forgotten with all its machines, a bulk
// import), and its version then encodes to more than maxPart. Such a
// version is cut into parts of at most partBudget bytes, each a stretch
// of its rows under the version's own header, and the receiver joins the
// parts it got from one sender back into the version before anything
// else sees it: seen, inbox, apply and relay deal in whole versions only.
//
// Parts of one sender arrive on one stream in order (a broadcast stream,
// a sync exchange), but broadcasts may also go one message per stream,
// so the receiver keeps parts by sender and index. What it keeps is
// bounded (maxVersionBytes in all); a version whose parts were dropped
// is not seen, so a later copy is taken, and sync brings it otherwise.

const (
	// partBudget bounds one part: under maxPart, with room for the
	// message that carries it.
	partBudget = maxPart - 16<<10
	// maxVersionBytes bounds one version's encoding, and what a receiver
	// keeps of parts not yet joined. A larger version cannot replicate:
	// its writer logs it.
	maxVersionBytes = 256 << 20
	// maxParts bounds the parts a peer may announce: parts are filled
	// greedily, so two in a row hold more than partBudget.
	maxParts = 2*maxVersionBytes/partBudget + 2
	// partsTTL is how long a version's parts wait for the rest.
	partsTTL = time.Minute
)

// MaxValueBytes is the largest string, blob or row a local write should
// make (the store's MaxValueBytes): a cell with its row's key and
// names then fits in one part, so every version that stays under
// maxVersionBytes replicates.
const MaxValueBytes = partBudget - 48<<10

// errVersionTooLarge is a version whose encoding exceeds maxVersionBytes.
var errVersionTooLarge = errors.New("version too large to replicate")

// splitWire returns w as it goes on the wire: itself when it fits in
// limit bytes, else parts of at most limit bytes each; and w's encoded
// size, which a caller sending w whole need not compute again. A single
// cell too large for a part is an error (the store refuses to write
// one; see MaxValueBytes).
func splitWire(w *wirev1.Changeset, limit int) (_ []*wirev1.Changeset, size int, _ error) {
	size = proto.Size(w)
	if size <= limit {
		return []*wirev1.Changeset{w}, size, nil
	}
	if size > maxVersionBytes {
		return nil, size, fmt.Errorf("%w: %d bytes, above %d", errVersionTooLarge, size, maxVersionBytes)
	}
	header := func() *wirev1.Changeset {
		return &wirev1.Changeset{Actor: w.Actor, Version: w.Version, Hops: w.Hops, Cleared: w.Cleared, CommittedUnixNano: w.CommittedUnixNano}
	}
	budget := limit - proto.Size(header()) - 16 // the part fields
	var parts []*wirev1.Changeset
	cur, used := header(), 0
	next := func() {
		if len(cur.Rows) > 0 || len(cur.Changes) > 0 {
			parts = append(parts, cur)
		}
		cur, used = header(), 0
	}
	// The earlier per-cell form, which this node never sends, goes whole
	// into the first part.
	for _, c := range w.Changes {
		cur.Changes = append(cur.Changes, c)
		used += sizeInList(proto.Size(c))
	}
	if used > budget {
		return nil, size, fmt.Errorf("%w: %d bytes of changes in the earlier form, above the %d a message holds", errVersionTooLarge, used, budget)
	}
	for _, r := range w.Rows {
		n := sizeInList(proto.Size(r))
		if used+n > budget {
			next()
		}
		if n <= budget {
			cur.Rows = append(cur.Rows, r)
			used += n
			continue
		}
		// A row larger than a part: its cells in stretches, each a row of
		// its own at the seq it starts at.
		empty := &wirev1.Row{Table: r.Table, Pk: r.Pk, Cl: r.Cl, Seq: r.Seq}
		rowHead := sizeInList(proto.Size(empty)) + 8 // seq may grow
		piece := &wirev1.Row{Table: r.Table, Pk: r.Pk, Cl: r.Cl, Seq: r.Seq}
		pieceSize := rowHead
		for i, c := range r.Cells {
			cn := sizeInList(proto.Size(c))
			if rowHead+cn > budget {
				return nil, size, fmt.Errorf("%w: a cell of %d bytes, above the %d a message holds", errVersionTooLarge, cn, budget)
			}
			if len(piece.Cells) > 0 && used+pieceSize+cn > budget {
				cur.Rows = append(cur.Rows, piece)
				next()
				piece = &wirev1.Row{Table: r.Table, Pk: r.Pk, Cl: r.Cl, Seq: r.Seq + uint32(i)}
				pieceSize = rowHead
			}
			piece.Cells = append(piece.Cells, c)
			pieceSize += cn
		}
		cur.Rows = append(cur.Rows, piece)
		used += pieceSize
	}
	next()
	for i, p := range parts {
		p.Part, p.Parts = uint32(i), uint32(len(parts))
	}
	return parts, size, nil
}

// sizeInList is what an element of encoded size n adds to a repeated
// field: its tag, its length and itself.
func sizeInList(n int) int { return 1 + protowire.SizeVarint(uint64(n)) + n }

// wholeVersion reports whether w is a version on its own or its last
// part: what an exchange counts as one version.
func wholeVersion(w *wirev1.Changeset) bool {
	return w.GetParts() <= 1 || w.GetPart()+1 == w.GetParts()
}

// wholeOnly is b without the parts of versions, for a peer that does
// not join them; nil when nothing is left.
func wholeOnly(b *wirev1.Broadcast) *wirev1.Broadcast {
	kept := make([]*wirev1.Changeset, 0, len(b.Changesets))
	for _, w := range b.Changesets {
		if w.GetParts() <= 1 {
			kept = append(kept, w)
		}
	}
	switch {
	case len(kept) == len(b.Changesets):
		return b
	case len(kept) == 0:
		return nil
	}
	return &wirev1.Broadcast{Changesets: kept}
}

// partsKey names the parts of one version from one sender.
type partsKey struct {
	from    string
	actor   crdt.ActorID
	version uint64
}

// partial is what has come of one version from one sender.
type partial struct {
	parts   []*wirev1.Changeset // by index; nil where still missing
	missing int
	bytes   int
	started time.Time
}

// assembler joins the parts of versions. It is not safe for concurrent
// use; times come from the caller.
type assembler struct {
	limit   int // bytes kept in all
	bytes   int
	pending map[partsKey]*partial
}

func newAssembler(limit int) *assembler {
	return &assembler{limit: limit, pending: map[partsKey]*partial{}}
}

// add takes one part of a version from a sender. It returns the whole
// version once every part has come, else nil. An error is a part no
// sender makes; nothing is kept of it.
func (a *assembler) add(from string, w *wirev1.Changeset, now time.Time) (*wirev1.Changeset, error) {
	actor, err := crdt.ActorIDFromBytes(w.GetActor())
	if err != nil {
		return nil, err
	}
	n, i := w.GetParts(), w.GetPart()
	if n < 2 || n > maxParts || i >= n {
		return nil, fmt.Errorf("part %d of %d: want 2 to %d parts", i, n, maxParts)
	}
	size := proto.Size(w)
	if size > maxPartFrame {
		return nil, fmt.Errorf("part %d of %d: %d bytes, above %d", i, n, size, maxPartFrame)
	}
	for k, p := range a.pending {
		if now.Sub(p.started) > partsTTL {
			a.drop(k)
		}
	}
	k := partsKey{from, actor, w.GetVersion()}
	p := a.pending[k]
	if p != nil && len(p.parts) != int(n) {
		a.drop(k) // cut another way: start again with this one
		p = nil
	}
	if p == nil {
		p = &partial{parts: make([]*wirev1.Changeset, n), missing: int(n), started: now}
		a.pending[k] = p
	}
	if p.parts[i] != nil {
		return nil, nil // a copy
	}
	for a.bytes+size > a.limit {
		if !a.dropOldest(k) {
			break
		}
	}
	if a.bytes+size > a.limit {
		// This version alone is over the limit: give it up.
		a.drop(k)
		return nil, fmt.Errorf("%w: parts of version %d above %d bytes", errVersionTooLarge, w.GetVersion(), a.limit)
	}
	p.parts[i] = w
	p.missing--
	p.bytes += size
	a.bytes += size
	if p.missing > 0 {
		return nil, nil
	}
	a.drop(k)
	first := p.parts[0]
	whole := &wirev1.Changeset{Actor: first.Actor, Version: first.Version, Hops: first.Hops, Cleared: first.Cleared, CommittedUnixNano: first.CommittedUnixNano}
	for _, part := range p.parts {
		whole.Changes = append(whole.Changes, part.Changes...)
		whole.Rows = append(whole.Rows, part.Rows...)
	}
	return whole, nil
}

func (a *assembler) drop(k partsKey) {
	if p := a.pending[k]; p != nil {
		a.bytes -= p.bytes
		delete(a.pending, k)
	}
}

// dropOldest drops the version whose parts began coming first, other
// than keep; false when there is none.
func (a *assembler) dropOldest(keep partsKey) bool {
	var oldest partsKey
	var at time.Time
	found := false
	for k, p := range a.pending {
		if k != keep && p.bytes > 0 && (!found || p.started.Before(at)) {
			oldest, at, found = k, p.started, true
		}
	}
	if found {
		a.drop(oldest)
	}
	return found
}

// kept is the bytes of parts waiting for the rest.
func (a *assembler) kept() int { return a.bytes }
