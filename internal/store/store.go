package store

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"sync/atomic"

	"github.com/mattn/go-sqlite3"

	"github.com/patina-db/patina/internal/crdt"
)

// Config says where the database lives and how it is opened.
type Config struct {
	Path string
	// Readers is the size of the read-only connection pool (default 4).
	Readers int
	// BusyTimeoutMS bounds how long a connection waits for a lock held by
	// another process, e.g. a backup (default 5000).
	BusyTimeoutMS int
	// ManualCheckpoint keeps commits from checkpointing the WAL: the
	// owner calls Checkpoint from a loop of its own (the agent does).
	// Otherwise SQLite checkpoints on the committing connection once the
	// WAL passes 1000 pages, which stalls the single writer for longer the
	// larger the database grows.
	ManualCheckpoint bool
	// MaxValueBytes bounds the strings, blobs and rows a local write may
	// make: SQLite's length limit on the writer connection (0 leaves
	// SQLite's default, a billion bytes). A node whose messages cannot
	// carry a larger cell sets it, so that such a write fails alone
	// ("string or blob too big"), a client error, instead of committing
	// a version that cannot replicate.
	MaxValueBytes int
	// maxActors bounds the actors the store records (default MaxActors);
	// tests lower it.
	maxActors int
}

// MaxActors is how many actors (nodes, and their identities after
// restores) one store records at most: versions of another are refused
// for good. A peer's sync request lists them all, and is refused above
// this many, so the two bounds are one.
const MaxActors = 100_000

// Store is one node's replicated database.
type Store struct {
	cfg   Config
	actor crdt.ActorID
	lock  *DatabaseLock // held from Open to Close
	// unclean is the actor id given up at Open (wasUnclean), because the
	// last run ended with its host (see recoverUnclean).
	unclean    crdt.ActorID
	wasUnclean bool

	// mu serializes every write: local transactions on writer and remote
	// applies on applier. SQLite has one writer anyway; holding the lock in
	// Go keeps the two connections from ever waiting on each other inside
	// SQLite.
	mu      sync.Mutex
	writeDB *sql.DB
	writer  *sql.Conn // has the TEMP capture triggers
	applyDB *sql.DB
	applier *sql.Conn // no triggers: remote changes carry their own clocks
	ckptDB  *sql.DB   // Checkpoint's connection, with a cache of its own
	wint    *stmtConn // the writer, for the store's own statements
	aint    *stmtConn // the applier
	// clientStmts are client statements prepared under the client policy.
	clientStmts *stmtConn
	tables      map[string]*tableSQL // statements per table, for the current schema
	readers     *sql.DB              // API queries: the read-only authorizer, no transactions
	snap        *sql.DB              // the store's own multi-statement read transactions

	// Guarded by mu.
	schema    *Schema
	book      *crdt.Bookkeeping
	sites     map[crdt.ActorID]int64
	siteIDs   map[int64]crdt.ActorID
	head      uint64 // this node's last version
	clientSQL atomic.Bool
	closed    bool
	ckpt      checkpointer
	hooks     Hooks
	observer  WriteObserver
	broken    error // set when a rollback failed: the writer's state is unknown

	group committer // local transactions waiting to commit
}

func dsn(path string, params url.Values) string {
	// Without the VFS (SQLite refused to register it, which it does
	// only when it cannot start at all) the default one serves.
	if registerWAL() == nil {
		params.Set("vfs", walVFS)
	}
	return "file:" + (&url.URL{Path: path}).EscapedPath() + "?" + params.Encode()
}

// Open opens (creating if needed) the database at cfg.Path, makes sure the
// internal tables exist and the node has an actor id, and installs change
// capture for the tables already there.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Path == "" {
		return nil, errors.New("store: no database path")
	}
	if cfg.Readers <= 0 {
		cfg.Readers = 4
	}
	if cfg.BusyTimeoutMS <= 0 {
		cfg.BusyTimeoutMS = 5000
	}
	lock, err := LockDatabase(cfg.Path)
	if err != nil {
		return nil, err
	}
	if err := createDatabase(ctx, cfg.Path); err != nil {
		lock.Release()
		return nil, fmt.Errorf("store: %w", err)
	}
	removeBackupLeftovers(cfg.Path)
	s := &Store{cfg: cfg, lock: lock}
	if s.unclean, s.wasUnclean, err = recoverUnclean(ctx, cfg.Path); err != nil {
		lock.Release()
		return nil, fmt.Errorf("store: %s: %w", cfg.Path, err)
	}
	s.ckpt.written = make(chan struct{}, 1)
	if err := s.open(ctx); err != nil {
		s.closeConns()
		return nil, err
	}
	// Recorded last: a store that failed to open was never in use.
	if err := s.markOpen(ctx); err != nil {
		s.closeConns()
		return nil, fmt.Errorf("store: %s: %w", cfg.Path, err)
	}
	return s, nil
}

func (s *Store) open(ctx context.Context) error {
	w := url.Values{}
	w.Set("_journal_mode", "WAL")
	w.Set("_synchronous", "NORMAL")
	w.Set("_busy_timeout", fmt.Sprint(s.cfg.BusyTimeoutMS))
	w.Set("_txlock", "immediate")
	w.Set("_foreign_keys", "0")
	w.Set("_cache_size", "-65536")
	// The writer and the applier share one page cache. They take turns
	// (s.mu), and with caches of their own each turn found the other's
	// commit had invalidated its whole cache and read its pages back from
	// the WAL. The checkpointer keeps a private cache: in a shared one its
	// fsyncs would hold the cache's locks against both.
	var err error
	if s.ckptDB, err = sql.Open("sqlite3", dsn(s.cfg.Path, w)); err != nil {
		return fmt.Errorf("open %s: %w", s.cfg.Path, err)
	}
	w.Set("cache", "shared")
	if s.writeDB, err = sql.Open("sqlite3", dsn(s.cfg.Path, w)); err != nil {
		return fmt.Errorf("open %s: %w", s.cfg.Path, err)
	}
	if s.writer, err = s.writeDB.Conn(ctx); err != nil {
		return fmt.Errorf("open %s: %w", s.cfg.Path, err)
	}
	if s.cfg.MaxValueBytes > 0 {
		err := s.writer.Raw(func(dc any) error {
			c, ok := dc.(*sqlite3.SQLiteConn)
			if !ok {
				return fmt.Errorf("writer is a %T", dc)
			}
			c.SetLimit(sqlite3.SQLITE_LIMIT_LENGTH, s.cfg.MaxValueBytes)
			return nil
		})
		if err != nil {
			return fmt.Errorf("open %s: limit values: %w", s.cfg.Path, err)
		}
	}
	if err := s.initInternal(ctx); err != nil {
		return err
	}
	if s.applyDB, err = sql.Open("sqlite3", dsn(s.cfg.Path, w)); err != nil {
		return fmt.Errorf("open %s: %w", s.cfg.Path, err)
	}
	if s.applier, err = s.applyDB.Conn(ctx); err != nil {
		return fmt.Errorf("open %s: %w", s.cfg.Path, err)
	}
	s.wint, s.aint = newStmtConn(s.writer), newStmtConn(s.applier)
	if s.cfg.ManualCheckpoint {
		for _, c := range []*stmtConn{s.wint, s.aint} {
			if _, err := c.ExecContext(ctx, "PRAGMA wal_autocheckpoint = 0"); err != nil {
				return fmt.Errorf("open %s: %w", s.cfg.Path, err)
			}
		}
	}
	r := url.Values{}
	r.Set("_busy_timeout", fmt.Sprint(s.cfg.BusyTimeoutMS))
	r.Set("_query_only", "1")
	// Readers only ever run read-only statements under one policy, so the
	// driver may keep them prepared.
	r.Set("_stmt_cache_size", "64")
	if s.readers, err = sql.Open(readerDriver, dsn(s.cfg.Path, r)); err != nil {
		return fmt.Errorf("open %s: %w", s.cfg.Path, err)
	}
	s.readers.SetMaxOpenConns(s.cfg.Readers)
	s.readers.SetMaxIdleConns(s.cfg.Readers)
	if s.snap, err = sql.Open("sqlite3", dsn(s.cfg.Path, r)); err != nil {
		return fmt.Errorf("open %s: %w", s.cfg.Path, err)
	}
	s.snap.SetMaxOpenConns(2)
	s.snap.SetMaxIdleConns(2)

	if err := s.installAuthorizer(ctx); err != nil {
		return err
	}
	if s.schema, err = readSchema(ctx, s.writer); err != nil {
		return fmt.Errorf("open %s: %w", s.cfg.Path, err)
	}
	for _, name := range s.schema.TableNames() {
		if err := s.installCapture(ctx, s.schema.Tables[name]); err != nil {
			return err
		}
	}
	return s.loadBookkeeping(ctx)
}

const internalDDL = `
CREATE TABLE IF NOT EXISTS __patina_meta (
	key   TEXT NOT NULL PRIMARY KEY,
	value ANY
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS __patina_sites (
	ordinal INTEGER PRIMARY KEY,
	actor   BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS __patina_sites_actor ON __patina_sites (actor);
CREATE TABLE IF NOT EXISTS __patina_bookkeeping (
	actor   INTEGER NOT NULL, -- ordinal in __patina_sites
	cleared INTEGER NOT NULL, -- 0: known versions, 1: cleared versions
	start   INTEGER NOT NULL,
	"end"   INTEGER NOT NULL,
	PRIMARY KEY (actor, cleared, start)
) WITHOUT ROWID;
`

// formatVersion is the layout of patina's own tables and clocks. A
// database of another format is refused rather than misread.
const formatVersion = 1

func (s *Store) initInternal(ctx context.Context) error {
	var sites, meta int
	if err := queryRow(ctx, s.writer, `SELECT count(*) FILTER (WHERE name = '__patina_sites'), count(*) FILTER (WHERE name = '__patina_meta') FROM main.sqlite_master WHERE type = 'table'`, nil, &sites, &meta); err != nil {
		return fmt.Errorf("open %s: %w", s.cfg.Path, err)
	}
	if sites == 1 && meta == 0 {
		return fmt.Errorf("open %s: a patina database of an older development format; this patina reads format %d", s.cfg.Path, formatVersion)
	}
	if _, err := s.writer.ExecContext(ctx, internalDDL); err != nil {
		return fmt.Errorf("create internal tables: %w", err)
	}
	var format int
	err := queryRow(ctx, s.writer, `SELECT value FROM __patina_meta WHERE key = 'format'`, nil, &format)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := s.writer.ExecContext(ctx, `INSERT INTO __patina_meta (key, value) VALUES ('format', ?)`, formatVersion); err != nil {
			return fmt.Errorf("record format: %w", err)
		}
	case err != nil:
		return fmt.Errorf("read format: %w", err)
	case format != formatVersion:
		return fmt.Errorf("open %s: database format %d; this patina reads format %d", s.cfg.Path, format, formatVersion)
	}
	// REPLACE conflict resolution deletes rows; with recursive triggers
	// those deletes are captured like any other.
	if _, err := s.writer.ExecContext(ctx, `PRAGMA recursive_triggers = ON`); err != nil {
		return fmt.Errorf("recursive triggers: %w", err)
	}
	if _, err := s.writer.ExecContext(ctx, `CREATE TEMP TABLE IF NOT EXISTS __patina_tx (version INTEGER NOT NULL); DELETE FROM temp.__patina_tx; INSERT INTO temp.__patina_tx VALUES (0)`); err != nil {
		return fmt.Errorf("create pending-version table: %w", err)
	}
	var raw []byte
	err = queryRow(ctx, s.writer, `SELECT actor FROM __patina_sites WHERE ordinal = 0`, nil, &raw)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		var a crdt.ActorID
		if _, err := rand.Read(a[:]); err != nil {
			return fmt.Errorf("create actor id: %w", err)
		}
		if _, err := s.writer.ExecContext(ctx, `INSERT INTO __patina_sites (ordinal, actor) VALUES (0, ?)`, a[:]); err != nil {
			return fmt.Errorf("store actor id: %w", err)
		}
		s.actor = a
	case err != nil:
		return fmt.Errorf("read actor id: %w", err)
	default:
		if s.actor, err = crdt.ActorIDFromBytes(raw); err != nil {
			return fmt.Errorf("read actor id: %w", err)
		}
	}
	return nil
}

// installCapture creates t's clock tables if missing and (re)creates its
// TEMP triggers on the writer connection.
func (s *Store) installCapture(ctx context.Context, t *Table) error {
	var n int
	if err := queryRow(ctx, s.writer, `SELECT count(*) FROM main.sqlite_master WHERE type = 'table' AND name = ?`, []any{clockTable(t.Name)}, &n); err != nil {
		return fmt.Errorf("capture %q: %w", t.Name, err)
	}
	var stmts []string
	if n == 0 {
		stmts = append(stmts, clockDDL(t)...)
	}
	stmts = append(stmts, dropTriggers(t.Name)...)
	stmts = append(stmts, captureTriggers(t)...)
	for _, q := range stmts {
		if _, err := s.writer.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("capture %q: %w (%s)", t.Name, err, q)
		}
	}
	return nil
}

// RowChange is a row that a commit changed, local or applied from a peer.
type RowChange struct {
	Table   string
	PK      []crdt.Value
	Deleted bool
}

// Hooks are told about commits. They are called outside the store's lock,
// after the commit, and must not block for long.
type Hooks struct {
	// Committed gets each local version's changeset.
	Committed func(cs *crdt.Changeset)
	// Rows gets the rows each commit changed, local or remote.
	Rows func(rows []RowChange)
}

// SetHooks registers the commit hooks. Set them before writing.
func (s *Store) SetHooks(h Hooks) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hooks = h
}

// rowsOf lists the rows a changeset touches.
func rowsOf(cs *crdt.Changeset) []RowChange {
	var out []RowChange
	index := map[string]int{}
	for _, c := range cs.Changes {
		k := c.Table + "\x00" + string(c.PK)
		i, ok := index[k]
		if !ok {
			pk, err := crdt.UnpackPK(c.PK)
			if err != nil {
				continue
			}
			i = len(out)
			index[k] = i
			out = append(out, RowChange{Table: c.Table, PK: pk})
		}
		if c.IsSentinel() && c.CL%2 == 0 {
			out[i].Deleted = true
		}
	}
	return out
}

// tableSQL returns the statements of a table of the current schema.
// Callers hold mu.
func (s *Store) tableSQL(name string) *tableSQL {
	if ts := s.tables[name]; ts != nil {
		return ts
	}
	if s.tables == nil {
		s.tables = map[string]*tableSQL{}
	}
	ts := newTableSQL(s.schema.Tables[name])
	s.tables[name] = ts
	return ts
}

// Actor is this node's actor id.
func (s *Store) Actor() crdt.ActorID { return s.actor }

// Path is the database file.
func (s *Store) Path() string { return s.cfg.Path }

// Schema returns the current replicated schema. Callers must not modify it.
func (s *Store) Schema() *Schema {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.schema
}

// Close closes every connection. It waits for a write in progress.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	// Best effort: a record left behind (a broken writer cannot write, or
	// a client's cancelled statement interrupted this one) reads, in the
	// same boot, as a crash of the process, which needs nothing, and
	// after a reboot costs a new actor id that was not needed.
	if s.broken == nil {
		_ = s.markClosed(context.Background())
	}
	return s.closeConns()
}

func (s *Store) closeConns() error {
	errs := []error{s.ckpt.close()}
	for _, c := range []*stmtConn{s.wint, s.aint, s.clientStmts} {
		if c != nil {
			c.reset()
		}
	}
	for _, c := range []*sql.Conn{s.writer, s.applier} {
		if c != nil {
			errs = append(errs, c.Close())
		}
	}
	for _, db := range []*sql.DB{s.readers, s.snap, s.applyDB, s.writeDB, s.ckptDB} {
		if db != nil {
			errs = append(errs, db.Close())
		}
	}
	// Only once every connection is closed may another process open it.
	errs = append(errs, s.lock.Release())
	return errors.Join(errs...)
}

// ErrClosed is returned by every operation on a closed store.
var ErrClosed = errors.New("store: closed")
