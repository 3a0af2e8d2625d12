package store

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/patina-db/patina/internal/crdt"
)

// Group commit. Local transactions that arrive while another is being
// written wait in a queue; the next writer takes the whole queue and
// commits it as one SQLite transaction and one version. A transaction
// that fails is rolled back alone and the others commit (see runGroup
// for how, cheaply while nothing fails). Nothing waits to
// fill a group: an idle store commits a transaction the moment it arrives,
// and groups form only from transactions that queued behind a commit.
//
// A group's transactions share a version: they become visible together,
// here and on every other node, which only strengthens what each one
// needed (its own changes applied atomically). The version is what each
// reports; a transaction grouped with others reports their version even
// if it changed nothing itself, and 0 only if the whole group changed
// nothing.

// Group limits: requests, and statement parameters, per group. A large
// batch (a reseed's 1,000 rows) is a group of its own.
const (
	maxGroupRequests = 64
	maxGroupWeight   = 4096
)

// writeReq is one local transaction waiting for, or in, a group.
type writeReq struct {
	ctx    context.Context
	fn     func(tx Tx) error
	client bool
	// alone: never grouped (Write's callers run arbitrary code in fn,
	// which a group would have to run again after a failure).
	alone  bool
	weight int

	lead    chan struct{} // this request's turn to commit the queue
	done    chan struct{} // closed when another request committed it
	version uint64
	// committed is when the transaction's commit returned (zero until
	// it has, and when it failed).
	committed time.Time
	err       error
}

// committer holds the queue of local transactions.
type committer struct {
	mu      sync.Mutex
	queue   []*writeReq
	leading bool // someone is committing; the queue waits for them
}

// write runs a local transaction, grouped with others that queue behind
// the one being committed, and then, outside the store's lock, tells the
// hooks about the new version.
func (s *Store) write(ctx context.Context, r *writeReq) (uint64, error) {
	return s.finish(r, s.enqueue(ctx, r))
}

// enqueue puts r at the back of the queue. It reports whether r leads:
// nobody was committing, so r must commit the queue itself.
func (s *Store) enqueue(ctx context.Context, r *writeReq) (lead bool) {
	r.ctx = ctx
	r.lead = make(chan struct{}, 1)
	r.done = make(chan struct{})
	c := &s.group
	c.mu.Lock()
	defer c.mu.Unlock()
	c.queue = append(c.queue, r)
	if c.leading {
		return false
	}
	c.leading = true
	return true
}

// finish waits for a queued request to be committed, by another request
// or, when its turn to lead comes, by itself.
func (s *Store) finish(r *writeReq, lead bool) (uint64, error) {
	c := &s.group
	if !lead {
		select {
		case <-r.done:
			return r.version, r.err
		case <-r.lead:
		}
	}
	// This request is first in the queue: take it and those behind it.
	c.mu.Lock()
	batch := takeGroup(c.queue)
	c.queue = c.queue[len(batch):]
	c.mu.Unlock()

	hooks, cs := s.commitGroup(batch)
	if cs != nil {
		if hooks.Committed != nil {
			hooks.Committed(cs)
		}
		if hooks.Rows != nil {
			hooks.Rows(rowsOf(cs))
		}
	}
	// Hand the queue to its first request, then release the group.
	c.mu.Lock()
	if len(c.queue) > 0 {
		c.queue[0].lead <- struct{}{}
	} else {
		c.leading = false
	}
	c.mu.Unlock()
	// batch[0] is r: a request leads only from the front of the queue.
	for _, m := range batch[1:] {
		close(m.done)
	}
	return r.version, r.err
}

// takeGroup is the front of the queue that commits together.
func takeGroup(queue []*writeReq) []*writeReq {
	if len(queue) == 0 || queue[0].alone {
		return queue[:min(1, len(queue))]
	}
	n, weight := 1, queue[0].weight
	for n < len(queue) && n < maxGroupRequests && !queue[n].alone && weight+queue[n].weight <= maxGroupWeight {
		weight += queue[n].weight
		n++
	}
	return queue[:n]
}

// commitGroup writes a group as one transaction and one version, setting
// each request's version or error. It returns the hooks and the new
// version's changeset to announce, if anything changed.
func (s *Store) commitGroup(batch []*writeReq) (Hooks, *crdt.Changeset) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fail := func(err error) {
		for _, r := range batch {
			if r.err == nil {
				r.err = err
			}
		}
	}
	if s.closed {
		fail(ErrClosed)
		return Hooks{}, nil
	}
	observed := s.observeWrite(WriteLocal)
	defer func() { observed(len(batch)) }()
	if s.broken != nil {
		fail(fmt.Errorf("store: writer unusable: %w", s.broken))
		return Hooks{}, nil
	}
	// Only the clients' own statements run under their contexts: a client
	// that goes away interrupts those, never the bookkeeping, the commit
	// or a rollback.
	ictx := context.WithoutCancel(batch[0].ctx)
	next := s.head + 1
	ok, err := s.runGroup(ictx, batch, next)
	if err != nil {
		s.endTx(ictx)
		fail(err)
		return Hooks{}, nil
	}
	if !ok {
		// Every request failed on its own; nothing is open.
		return Hooks{}, nil
	}
	touched, err := s.versionTouched(ictx, next)
	if err != nil {
		s.endTx(ictx)
		fail(err)
		return Hooks{}, nil
	}
	var apply func()
	var cs *crdt.Changeset
	if len(touched) > 0 {
		if s.hooks.Committed != nil || s.hooks.Rows != nil {
			// Read the new version for the hooks now, on the writer, whose
			// pages are hot, rather than after commit on another connection.
			cs = &crdt.Changeset{Actor: s.actor, Version: next}
			for _, name := range touched {
				if err := readVersionRows(ictx, s.wint, s.tableSQL(name), 0, next, cs); err != nil {
					s.endTx(ictx)
					fail(fmt.Errorf("read version %d: %w", next, err))
					return Hooks{}, nil
				}
			}
			for i := range cs.Changes {
				cs.Changes[i].Seq = uint32(i)
			}
			// The group fails together: which of its transactions wrote
			// the cell is not known here. Only a peer's counter at the
			// bound leads to this.
			if err := checkCounters(cs); err != nil {
				s.endTx(ictx)
				fail(err)
				return Hooks{}, nil
			}
		}
		if apply, err = s.persistVersion(ictx, s.wint, s.actor, 0, next, false); err != nil {
			s.endTx(ictx)
			fail(err)
			return Hooks{}, nil
		}
	}
	if err := s.commit(ictx, s.wint); err != nil {
		s.endTx(ictx)
		fail(fmt.Errorf("commit: %w", err))
		return Hooks{}, nil
	}
	now := time.Now()
	for _, r := range batch {
		if r.err == nil {
			r.committed = now
		}
	}
	if len(touched) == 0 {
		return Hooks{}, nil
	}
	apply()
	s.head = next
	for _, r := range batch {
		if r.err == nil {
			r.version = next
		}
	}
	return s.hooks, cs
}

// runGroup opens the transaction and runs the group's requests in it. A
// request that fails is rolled back alone and keeps its error; ok is
// false when no request is left, and err is the node's own failure,
// after which the transaction must be ended.
//
// A group first runs without savepoints, since requests seldom fail and
// a savepoint and its release are two statements per request. When one
// does fail, the whole transaction is rolled back and the group runs
// again without it, each request under a savepoint of its own, so that
// a later failure is undone alone (or, if it ended the whole
// transaction, as with OR ROLLBACK, by running the others once more).
func (s *Store) runGroup(ictx context.Context, batch []*writeReq, next uint64) (ok bool, err error) {
	grouped := len(batch) > 1
	savepoints := false
restart:
	for {
		if _, err := s.wint.ExecContext(ictx, "BEGIN IMMEDIATE"); err != nil {
			return false, fmt.Errorf("begin: %w", err)
		}
		// Inside the transaction: written on its own, the pending version
		// would cost a transaction of the TEMP database per commit.
		if _, err := s.wint.ExecContext(ictx, `UPDATE temp.__patina_tx SET version = ?`, next); err != nil {
			return false, fmt.Errorf("set pending version: %w", err)
		}
		live := 0
		for _, r := range batch {
			if r.err != nil {
				continue
			}
			if err := r.ctx.Err(); err != nil {
				r.err = err
				continue
			}
			if savepoints {
				if _, err := s.wint.ExecContext(ictx, "SAVEPOINT w"); err != nil {
					return false, fmt.Errorf("savepoint: %w", err)
				}
			}
			s.clientSQL.Store(r.client)
			ferr := r.fn(s.writer)
			s.clientSQL.Store(false)
			if ferr == nil {
				// A client gone before its commit is rolled back, even if
				// its statements got through (the driver does not
				// always notice a context that ended).
				ferr = r.ctx.Err()
			}
			if ferr == nil {
				if savepoints {
					if _, err := s.wint.ExecContext(ictx, "RELEASE w"); err != nil {
						return false, fmt.Errorf("release savepoint: %w", err)
					}
				}
				live++
				continue
			}
			r.err = ferr
			if !grouped {
				s.endTx(ictx)
				return false, nil
			}
			if !savepoints || s.writerIdle() {
				// Its statements are mixed with the others' (no savepoint
				// yet), or the failure took the whole transaction with it:
				// run the others again, without this one.
				s.endTx(ictx)
				if s.broken != nil {
					return false, fmt.Errorf("store: writer unusable: %w", s.broken)
				}
				savepoints = true
				continue restart
			}
			// One statement each: a prepared statement runs only the first
			// of several.
			if _, err := s.wint.ExecContext(ictx, "ROLLBACK TO w"); err != nil {
				return false, fmt.Errorf("rollback to savepoint: %w", err)
			}
			if _, err := s.wint.ExecContext(ictx, "RELEASE w"); err != nil {
				return false, fmt.Errorf("release savepoint: %w", err)
			}
		}
		if live == 0 {
			s.endTx(ictx)
			return false, nil
		}
		return true, nil
	}
}

// groupWeight is what a transaction counts against maxGroupWeight.
func groupWeight(stmts []Statement) int {
	w := 0
	for _, st := range stmts {
		w += 1 + len(st.Args) + len(st.Named)
	}
	return w
}
