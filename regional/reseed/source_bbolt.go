package reseed

import (
	"bytes"
	"container/heap"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/regional"
)

// bboltSource reads machine records from hosts' bbolt files: the bucket
// regional.BucketMachines, keyed by machine id. The files are opened
// read-only, which bbolt refuses while a host agent holds one open for
// writing: reseed from copies, or from hosts that are stopped.
type bboltSource struct {
	files []*bboltFile
	log   *slog.Logger
	// hosts: the cluster has the hosts table, so each batch also records
	// the hosts whose machines it writes (see hostStatements).
	hosts bool
}

type bboltFile struct {
	path string
	db   *bolt.DB
}

func openBBolt(paths []string, log *slog.Logger) (*bboltSource, error) {
	s := &bboltSource{log: log}
	seen := map[string]bool{}
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("reseed: bbolt file %s: %w", p, err)
		}
		if seen[abs] {
			continue
		}
		seen[abs] = true
		db, err := bolt.Open(abs, 0o400, &bolt.Options{ReadOnly: true, Timeout: 2 * time.Second})
		if err != nil {
			s.Close()
			if errors.Is(err, berrors.ErrTimeout) {
				return nil, fmt.Errorf("reseed: bbolt file %s: locked (is a host agent running on it? reseed from a copy)", p)
			}
			return nil, fmt.Errorf("reseed: bbolt file %s: %w", p, err)
		}
		s.files = append(s.files, &bboltFile{path: abs, db: db})
		err = db.View(func(tx *bolt.Tx) error {
			if tx.Bucket(regional.BucketMachines) == nil {
				return fmt.Errorf("reseed: bbolt file %s: no bucket %q (not a host's file?)", p, regional.BucketMachines)
			}
			return nil
		})
		if err != nil {
			s.Close()
			return nil, err
		}
	}
	sort.Slice(s.files, func(i, j int) bool { return s.files[i].path < s.files[j].path })
	return s, nil
}

func (s *bboltSource) Identity() string {
	paths := make([]string, len(s.files))
	for i, f := range s.files {
		paths[i] = f.path
	}
	return "bbolt:" + strings.Join(paths, ",")
}

func (s *bboltSource) Close() error {
	var errs []error
	for _, f := range s.files {
		errs = append(errs, f.db.Close())
	}
	return errors.Join(errs...)
}

var (
	machineColumns = []string{"id", "app", "region", "host", "address", "port", "state", "image", "updated_at"}
	checkColumns   = []string{"machine_id", "name", "status", "output", "updated_at"}
	machineUpsert  = newUpsert("machines", machineColumns, []string{"id"})
	checkUpsert    = newUpsert("machine_checks", checkColumns, []string{"machine_id", "name"})
)

func (s *bboltSource) CheckTarget(ctx context.Context, cl cluster) error {
	if err := requireTable(ctx, cl, machineUpsert); err != nil {
		return err
	}
	if err := requireTable(ctx, cl, checkUpsert); err != nil {
		return err
	}
	// A schema from before the hosts table still takes the machines.
	have, err := cl.Columns(ctx, "hosts")
	if err != nil {
		return err
	}
	s.hosts = len(have) > 0
	if !s.hosts {
		s.log.Warn("reseed: the cluster has no hosts table: the machines of hosts that no longer publish will not be forgotten")
	}
	return nil
}

// Plan splits the sorted union of every file's keys into n ranges of
// about the same number of keys, whatever the keys look like.
func (s *bboltSource) Plan(ctx context.Context, n int) ([]Range, error) {
	var keys []string
	for _, f := range s.files {
		err := f.db.View(func(tx *bolt.Tx) error {
			return tx.Bucket(regional.BucketMachines).ForEach(func(k, _ []byte) error {
				keys = append(keys, string(k))
				return ctx.Err()
			})
		})
		if err != nil {
			return nil, fmt.Errorf("reseed: bbolt file %s: %w", f.path, err)
		}
	}
	slices.Sort(keys)
	keys = slices.Compact(keys)
	points := splitPoints(len(keys), n)
	splits := make([]Key, len(points))
	for i, p := range points {
		splits[i] = Key{keys[p]}
	}
	return rangesFromSplits(splits, points, len(keys)), nil
}

func (s *bboltSource) OpenRange(ctx context.Context, r Range) (rangeReader, error) {
	rr := &bboltRange{src: s}
	// A range from a state file may say anything: a key is one id.
	id := func(k Key) ([]byte, error) {
		if len(k) != 1 {
			return nil, fmt.Errorf("reseed: %s: not a machine id range", r)
		}
		v, ok := k[0].(string)
		if !ok {
			return nil, fmt.Errorf("reseed: %s: not a machine id range", r)
		}
		return []byte(v), nil
	}
	var err error
	if r.Hi != nil {
		if rr.hi, err = id(r.Hi); err != nil {
			return nil, err
		}
	}
	var lo []byte
	if r.Lo != nil {
		if lo, err = id(r.Lo); err != nil {
			return nil, err
		}
	}
	for i, f := range s.files {
		tx, err := f.db.Begin(false)
		if err != nil {
			rr.Close()
			return nil, fmt.Errorf("reseed: bbolt file %s: %w", f.path, err)
		}
		rr.txs = append(rr.txs, tx)
		c := tx.Bucket(regional.BucketMachines).Cursor()
		var k, v []byte
		if lo == nil {
			k, v = c.First()
		} else {
			k, v = c.Seek(lo)
		}
		rr.push(&cursorHead{file: i, c: c, k: k, v: v})
	}
	return rr, nil
}

// bboltRange merges the files' cursors in key order over one range.
type bboltRange struct {
	src  *bboltSource
	txs  []*bolt.Tx
	hi   []byte // nil: no end
	heap cursorHeap
}

type cursorHead struct {
	file int
	c    *bolt.Cursor
	k, v []byte
}

// push queues a cursor unless it has left the range.
func (r *bboltRange) push(h *cursorHead) {
	if h.k == nil || (r.hi != nil && bytes.Compare(h.k, r.hi) >= 0) {
		return
	}
	heap.Push(&r.heap, h)
}

func (r *bboltRange) Next(ctx context.Context, maxRows, maxBytes int) (*batch, error) {
	if len(r.heap) == 0 {
		return nil, nil
	}
	b := &batch{}
	var machines []regional.Machine
	size := 0
	for len(r.heap) > 0 && len(machines) < maxRows && (size < maxBytes || len(machines) == 0) {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		key := r.heap[0].k
		var recs []regional.Machine
		found := 0
		for len(r.heap) > 0 && bytes.Equal(r.heap[0].k, key) {
			h := heap.Pop(&r.heap).(*cursorHead)
			found++
			m, err := regional.Decode(h.k, h.v)
			if err != nil {
				b.Corrupt++
				r.src.log.Warn("reseed: skipping a corrupt record", "file", r.src.files[h.file].path, "key", string(h.k), "err", err)
			} else {
				recs = append(recs, m)
			}
			h.k, h.v = h.c.Next()
			r.push(h)
		}
		if found > 1 {
			b.Duplicates += found - 1
		}
		best := newestRecord(recs)
		if best == nil {
			continue
		}
		if b.First == nil {
			b.First = Key{best.ID}
		}
		b.Last = Key{best.ID}
		machines = append(machines, *best)
		size += machineSize(best)
	}
	b.Rows = len(machines)
	if r.src.hosts {
		b.Stmts = hostStatements(machines, time.Now())
	}
	b.Stmts = append(b.Stmts, machineStatements(machines)...)
	return b, nil
}

func (r *bboltRange) Close() error {
	for _, tx := range r.txs {
		tx.Rollback()
	}
	r.txs = nil
	return nil
}

type cursorHeap []*cursorHead

func (h cursorHeap) Len() int { return len(h) }
func (h cursorHeap) Less(i, j int) bool {
	if c := bytes.Compare(h[i].k, h[j].k); c != 0 {
		return c < 0
	}
	return h[i].file < h[j].file
}
func (h cursorHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *cursorHeap) Push(x any)   { *h = append(*h, x.(*cursorHead)) }
func (h *cursorHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// newestRecord picks, among the records of one machine id in several
// files, the one to write: the newest live record that no newer
// tombstone of its own host supersedes, or else the newest tombstone. A
// host's tombstone says only that this host no longer has the machine: a
// machine that moved keeps running on the host it moved to, whatever the
// order of the stamps. nil when there is no record.
func newestRecord(recs []regional.Machine) *regional.Machine {
	var live, dead *regional.Machine
	for i := range recs {
		m := &recs[i]
		if m.State == regional.StateDestroyed {
			if dead == nil || m.UpdatedAt > dead.UpdatedAt {
				dead = m
			}
			continue
		}
		superseded := false
		for j := range recs {
			t := &recs[j]
			if t.State == regional.StateDestroyed && t.Host == m.Host && t.UpdatedAt > m.UpdatedAt {
				superseded = true
				break
			}
		}
		if !superseded && (live == nil || m.UpdatedAt > live.UpdatedAt) {
			live = m
		}
	}
	if live != nil {
		return live
	}
	return dead
}

// machineSize estimates a record's parameters' weight in a request body.
func machineSize(m *regional.Machine) int {
	n := valueSize(m.ID)*2 + valueSize(m.App) + valueSize(m.Region) + valueSize(m.Host) + valueSize(m.Address) +
		valueSize(m.State) + valueSize(m.Image) + 2*21
	for _, c := range m.Checks {
		n += valueSize(m.ID)*2 + valueSize(c.Name)*2 + valueSize(c.Status) + valueSize(c.Output) + 21
	}
	return n
}

// machineStatements publish records whole, as regional.Publish does for
// one, for a whole batch at once: machine rows and check rows upserted by
// multi-row statements, check rows the records no longer have deleted,
// destroyed machines deleted with their checks.
func machineStatements(ms []regional.Machine) []client.Statement {
	if len(ms) == 0 {
		return nil
	}
	var machineVals, checkVals []any
	ids := make([]string, 0, len(ms))
	var keep []string
	var destroyed []regional.Owned
	for i := range ms {
		m := &ms[i]
		if m.State == regional.StateDestroyed {
			destroyed = append(destroyed, regional.Owned{ID: m.ID, Host: m.Host})
			continue
		}
		ids = append(ids, m.ID)
		machineVals = append(machineVals, m.ID, m.App, m.Region, m.Host, m.Address, int64(m.Port), m.State, m.Image, m.UpdatedAt)
		for _, c := range m.Checks {
			checkVals = append(checkVals, m.ID, c.Name, c.Status, c.Output, c.UpdatedAt)
			// A machine id has no '/', so id/name names one check.
			keep = append(keep, m.ID+"/"+c.Name)
		}
	}
	// Strings always marshal.
	idList, _ := json.Marshal(ids)
	keepList, _ := json.Marshal(nonNilStrings(keep))
	stmts := []client.Statement{{
		Query:  `DELETE FROM machine_checks WHERE machine_id IN (SELECT value FROM json_each(?)) AND machine_id || '/' || name NOT IN (SELECT value FROM json_each(?))`,
		Params: []any{string(idList), string(keepList)},
	}}
	if len(destroyed) > 0 {
		stmts = append(stmts, regional.UnpublishAll(destroyed)...)
	}
	stmts = append(stmts, machineUpsert.statements(machineVals)...)
	stmts = append(stmts, checkUpsert.statements(checkVals)...)
	return stmts
}

// hostStatements give every host whose machines the batch writes a row
// in the hosts table, if it has none, stamped at: a host that no longer
// publishes is then forgotten, its machines with it, forget_after later,
// as if it had stopped then, instead of its machines staying for good
// (the region's agents forget only hosts that have a row). A host that
// publishes has a row already, with its interval, which this leaves
// alone. The interval is 0: not known here.
//
// A row the reseed made (interval 0) is stamped again while the reseed
// goes on writing the host's machines, at most every restampAfter: a
// reseed that takes longer than forget_after must not see the machines
// it wrote forgotten while it writes the rest. The host is forgotten
// forget_after after the reseed last wrote its machines.
// restampAfter is how old a reseed's own stamp gets before a batch
// stamps it again; well under any sensible forget_after, and rare enough
// that a batch seldom rewrites a host's row.
const restampAfter = 30 * time.Second

// restampHosts ends the hosts insert: a host's own row wins, and a
// reseed's row is stamped again once older than restampAfter.
var restampHosts = fmt.Sprintf(" ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at"+
	" WHERE hosts.republish_ms = 0 AND excluded.republish_ms = 0 AND hosts.seen_at < excluded.seen_at - %d", restampAfter.Milliseconds())

func hostStatements(ms []regional.Machine, at time.Time) []client.Statement {
	seen := map[string]bool{}
	var vals []any
	for i := range ms {
		m := &ms[i]
		if m.Host == "" || m.State == regional.StateDestroyed || seen[m.Host] {
			continue
		}
		seen[m.Host] = true
		vals = append(vals, m.Host, m.Region, at.UnixMilli())
	}
	var out []client.Statement
	const width, perStmt = 3, maxVariables / 3
	for start := 0; start < len(vals); start += perStmt * width {
		end := min(start+perStmt*width, len(vals))
		rows := strings.TrimSuffix(strings.Repeat("(?, ?, ?, 0), ", (end-start)/width), ", ")
		out = append(out, client.Statement{
			Query:  "INSERT INTO hosts (name, region, seen_at, republish_ms) VALUES " + rows + restampHosts,
			Params: vals[start:end:end],
		})
	}
	return out
}

func nonNilStrings(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
