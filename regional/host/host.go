// Package host is the host agent: the per-worker source of truth for the
// machines of one host. It keeps one record per machine in a bbolt file,
// creates, starts, stops and destroys machines (in dev a machine is a
// tiny HTTP server), runs their health checks, and publishes every
// changed record whole to the local regional agent, re-publishing all of
// them periodically. It serves an HTTP API for all of this and a client
// for that API. It never writes to the regional tables but through the
// statements of package regional, and never publishes a record it has
// not stored first.
package host

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/patina-db/patina/regional"
)

// Errors of the machine operations; the API maps them to statuses.
var (
	// ErrNotFound: no live machine has that id.
	ErrNotFound = errors.New("no such machine")
	// ErrConflict: the id or port is taken.
	ErrConflict = errors.New("conflict")
	// ErrInvalid: the request does not make a valid machine.
	ErrInvalid = errors.New("invalid machine")
	// ErrClosed: the host has stopped.
	ErrClosed = errors.New("host stopped")
)

// MachineSpec is what a machine is created from.
type MachineSpec struct {
	// ID names the machine; empty: 16 random hex characters.
	ID  string `json:"id,omitempty"`
	App string `json:"app"`
	// Image is recorded and published; dev machines do not run it.
	Image string `json:"image,omitempty"`
	// Port the machine listens on; 0: a free port, picked once and kept.
	Port int `json:"port,omitempty"`
	// Checks are the machine's health checks; none by default.
	Checks []CheckSpec `json:"checks,omitempty"`
	// Start starts the machine right away.
	Start bool `json:"start,omitempty"`
}

// CheckSpec is one health check to create.
type CheckSpec struct {
	// Name defaults to the kind ("http", then "http-2", ...).
	Name string `json:"name,omitempty"`
	// Kind is "http" or "tcp".
	Kind string `json:"kind"`
	// Path is the HTTP check's path (default "/").
	Path string `json:"path,omitempty"`
	// IntervalMS is how often it runs (default [host] check_interval).
	IntervalMS int64 `json:"interval_ms,omitempty"`
}

// Host is a running host agent.
type Host struct {
	cfg         Config
	log         *slog.Logger
	db          *db
	pub         *publisher
	apiLn       net.Listener
	api         *http.Server
	checkClient *http.Client
	// ctx owns the machines' check loops; cancel ends them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // check loops

	mu       sync.Mutex
	machines map[string]*machine
	// tombstones are destroyed machines whose removal the agent has not
	// yet confirmed; they stay in bbolt until it has.
	tombstones map[string]regional.Machine
	// unreadable are keys of records that did not decode: skipped, kept
	// in bbolt untouched, and kept out of the prune.
	unreadable map[string]error
	closed     bool
	lastStamp  int64
	lastGen    uint64 // the last start's generation (see machine.gen)
}

// New opens the bbolt file, resumes the machines it holds (a started
// machine listens again on its port) and binds the API listener. Run
// serves the API and publishes; call it next.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Host, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("host: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	pub, err := newPublisher(cfg, logger)
	if err != nil {
		return nil, err
	}
	d, err := openDB(cfg.Host.DB)
	if err != nil {
		return nil, err
	}
	records, bad, err := d.load()
	if err != nil {
		d.close()
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.API.Addr)
	if err != nil {
		d.close()
		return nil, fmt.Errorf("host: api listen: %w", err)
	}
	hctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &Host{
		cfg: cfg, log: logger, db: d, pub: pub, apiLn: ln, checkClient: newCheckClient(), ctx: hctx, cancel: cancel,
		machines: map[string]*machine{}, tombstones: map[string]regional.Machine{}, unreadable: map[string]error{},
	}
	pub.snapshot, pub.published = h.snapshot, h.published
	h.api = &http.Server{
		Handler:           h.apiHandler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	for _, b := range bad {
		logger.Error("host: skipping unreadable record", "key", b.key, "err", b.err)
		h.unreadable[b.key] = b.err
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	var started []*machine
	for _, rec := range records {
		h.lastStamp = max(h.lastStamp, rec.UpdatedAt)
		if rec.State == regional.StateDestroyed {
			h.tombstones[rec.ID] = rec
			continue
		}
		if rec.Host != cfg.Host.Name || rec.Region != cfg.Host.Region {
			logger.Warn("host: record of another host or region", "machine", rec.ID, "host", rec.Host, "region", rec.Region)
		}
		m := &machine{rec: rec}
		h.machines[rec.ID] = m
		if rec.State == regional.StateStarted {
			started = append(started, m)
		}
	}
	// After every record is loaded, so that a stamp resume makes follows
	// them all.
	for _, m := range started {
		h.resume(m)
	}
	logger.Info("host ready", "host", cfg.Host.Name, "region", cfg.Host.Region, "db", cfg.Host.DB, "api", ln.Addr().String(),
		"machines", len(h.machines), "tombstones", len(h.tombstones), "unreadable", len(bad))
	return h, nil
}

// resume serves a started machine again on its port. A machine that
// cannot listen stays started: its checks fail and say why, at once and
// on every run, whatever answers on its port meanwhile (another process
// may hold it).
func (h *Host) resume(m *machine) {
	ln, err := listenMachine(m.rec.Address, m.rec.Port)
	if err != nil {
		h.log.Error("host: started machine cannot listen", "machine", m.rec.ID, "err", err)
		m.listenErr = err
		h.failChecks(m, checkResult{regional.CheckCritical, shorten("machine cannot listen: " + err.Error())})
	} else {
		m.server = serveMachine(ln, &m.rec, h.log)
	}
	h.startChecks(m)
}

// failChecks records res as every check's outcome. Called with h.mu held.
func (h *Host) failChecks(m *machine, res checkResult) {
	next := cloneMachine(m.rec)
	now := h.stamp()
	changed := false
	for i := range next.Checks {
		c := &next.Checks[i]
		if c.Status != res.status || c.Output != res.output {
			c.Status, c.Output, c.UpdatedAt = res.status, res.output, now
			changed = true
		}
	}
	if !changed {
		return
	}
	next.UpdatedAt = now
	if err := h.db.put(&next); err != nil {
		h.log.Error("host: check results not stored", "machine", m.rec.ID, "err", err)
		return
	}
	m.rec = next
	h.pub.enqueue(next)
}

// APIAddr is the address the host's API listens on.
func (h *Host) APIAddr() string { return h.apiLn.Addr().String() }

// Run serves the API and publishes until ctx ends, then stops the
// machines' servers and checks (their records stay as they are, so a
// restarted host resumes them) and closes the bbolt file.
func (h *Host) Run(ctx context.Context) error {
	serveErr := make(chan error, 1)
	go func() { serveErr <- h.api.Serve(h.apiLn) }()
	pubCtx, stopPub := context.WithCancel(ctx)
	pubDone := make(chan struct{})
	go func() {
		defer close(pubDone)
		h.pub.run(pubCtx)
	}()
	var err error
	select {
	case <-ctx.Done():
	case err = <-serveErr:
	}
	h.log.Info("host stopping")
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	shutErr := h.api.Shutdown(sctx)
	if err == nil {
		err = <-serveErr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	stopPub()
	<-pubDone
	h.mu.Lock()
	h.closed = true
	for _, m := range h.machines {
		h.stopMachine(m)
	}
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
	closeErr := h.db.close()
	h.log.Info("host stopped")
	return errors.Join(err, shutErr, closeErr)
}

// stamp is the time of a change, unix milliseconds, later than every
// earlier stamp of this host (a record's UpdatedAt always grows). Called
// with h.mu held.
func (h *Host) stamp() int64 {
	now := time.Now().UnixMilli()
	if now <= h.lastStamp {
		now = h.lastStamp + 1
	}
	h.lastStamp = now
	return now
}

// Create makes a machine from spec, stores it and publishes it; with
// spec.Start it is started too.
func (h *Host) Create(ctx context.Context, spec MachineSpec) (regional.Machine, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return regional.Machine{}, ErrClosed
	}
	id := spec.ID
	if id == "" {
		for id == "" || h.taken(id) {
			id = newID()
		}
	} else if h.taken(id) {
		return regional.Machine{}, fmt.Errorf("machine %q: %w: the id is taken", id, ErrConflict)
	}
	now := h.stamp()
	rec := regional.Machine{
		V: regional.RecordVersion, ID: id, App: spec.App, Region: h.cfg.Host.Region, Host: h.cfg.Host.Name,
		Address: h.cfg.Host.Address, Port: spec.Port, State: regional.StateCreated, Image: spec.Image, UpdatedAt: now,
	}
	if len(spec.Image) > maxImage {
		return regional.Machine{}, fmt.Errorf("machine %q: %w: image longer than %d bytes", id, ErrInvalid, maxImage)
	}
	checks, err := h.buildChecks(spec.Checks, now)
	if err != nil {
		return regional.Machine{}, fmt.Errorf("machine %q: %w: %v", id, ErrInvalid, err)
	}
	rec.Checks = checks
	if err := rec.Validate(); err != nil {
		return regional.Machine{}, fmt.Errorf("machine %q: %w: %v", id, ErrInvalid, err)
	}
	if other := h.portUser(rec.Port); rec.Port != 0 && other != "" {
		return regional.Machine{}, fmt.Errorf("machine %q: %w: port %d is machine %q's", id, ErrConflict, rec.Port, other)
	}
	var ln net.Listener
	if rec.Port == 0 || spec.Start {
		if ln, err = h.bindPort(rec.Port); err != nil {
			return regional.Machine{}, fmt.Errorf("machine %q: %w", id, err)
		}
		rec.Port = ln.Addr().(*net.TCPAddr).Port
	}
	if spec.Start {
		rec.State = regional.StateStarted
		for i := range rec.Checks {
			rec.Checks[i].Output = outputNotChecked
		}
	} else if ln != nil {
		ln.Close()
		ln = nil
	}
	if err := h.db.put(&rec); err != nil {
		if ln != nil {
			ln.Close()
		}
		return regional.Machine{}, err
	}
	delete(h.tombstones, id)
	m := &machine{rec: rec}
	h.machines[id] = m
	if ln != nil {
		m.server = serveMachine(ln, &m.rec, h.log)
		h.startChecks(m)
	}
	h.log.Info("machine created", "machine", id, "app", rec.App, "port", rec.Port, "state", rec.State)
	h.pub.enqueue(rec)
	return cloneMachine(rec), nil
}

// bindPort listens on the host's address and port; port 0 picks a free
// port no other machine of this host has. Called with h.mu held.
func (h *Host) bindPort(port int) (net.Listener, error) {
	for range 20 {
		ln, err := listenMachine(h.cfg.Host.Address, port)
		if err != nil {
			return nil, fmt.Errorf("listen: %w", err)
		}
		if port != 0 || h.portUser(ln.Addr().(*net.TCPAddr).Port) == "" {
			return ln, nil
		}
		ln.Close()
	}
	return nil, errors.New("listen: no free port found")
}

// taken reports whether id names a live machine or an unreadable record.
func (h *Host) taken(id string) bool {
	_, live := h.machines[id]
	_, bad := h.unreadable[id]
	return live || bad
}

// portUser is the live machine that has port, or "".
func (h *Host) portUser(port int) string {
	for id, m := range h.machines {
		if m.rec.Port == port {
			return id
		}
	}
	return ""
}

// buildChecks fills in the defaults of check specs. Every check starts
// critical: a machine that does not run fails its checks.
func (h *Host) buildChecks(specs []CheckSpec, now int64) ([]regional.Check, error) {
	var out []regional.Check
	var errs []error
	if len(specs) > maxChecks {
		return nil, fmt.Errorf("%d checks: at most %d", len(specs), maxChecks)
	}
	names := map[string]bool{}
	for _, s := range specs {
		c := regional.Check{Name: s.Name, Kind: s.Kind, Path: s.Path, IntervalMS: s.IntervalMS,
			Status: regional.CheckCritical, Output: outputNotRunning, UpdatedAt: now}
		// Named before it is checked, so that errors name it.
		if c.Name == "" {
			c.Name = c.Kind
			for n := 2; names[c.Name]; n++ {
				c.Name = fmt.Sprintf("%s-%d", s.Kind, n)
			}
		}
		switch c.Kind {
		case "http":
			if c.Path == "" {
				c.Path = "/"
			}
			if !strings.HasPrefix(c.Path, "/") {
				errs = append(errs, fmt.Errorf("check %q: path %q must start with /", c.Name, c.Path))
			}
		case "tcp":
			if c.Path != "" {
				errs = append(errs, fmt.Errorf("check %q: a tcp check takes no path", c.Name))
			}
		default:
			errs = append(errs, fmt.Errorf("check %q: kind %q: want http or tcp", c.Name, c.Kind))
		}
		if c.IntervalMS == 0 {
			c.IntervalMS = h.cfg.checkInterval().Milliseconds()
		}
		if c.IntervalMS < minCheckInterval.Milliseconds() || c.IntervalMS > maxCheckInterval.Milliseconds() {
			errs = append(errs, fmt.Errorf("check %q: interval_ms %d: want %d to %d", c.Name, c.IntervalMS, minCheckInterval.Milliseconds(), maxCheckInterval.Milliseconds()))
		}
		if len(c.Name) > maxCheckName {
			errs = append(errs, fmt.Errorf("check name %.20q...: longer than %d bytes", c.Name, maxCheckName))
		}
		if len(c.Path) > maxCheckPath {
			errs = append(errs, fmt.Errorf("check %q: path longer than %d bytes", c.Name, maxCheckPath))
		}
		names[c.Name] = true
		out = append(out, c)
	}
	return out, errors.Join(errs...)
}

// Start starts a machine: its server listens on its port and its checks
// run. Starting a started machine changes nothing.
func (h *Host) Start(ctx context.Context, id string) (regional.Machine, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, err := h.live(id)
	if err != nil {
		return regional.Machine{}, err
	}
	if m.rec.State == regional.StateStarted {
		return cloneMachine(m.rec), nil
	}
	ln, err := listenMachine(m.rec.Address, m.rec.Port)
	if err != nil {
		return regional.Machine{}, fmt.Errorf("machine %q: start: %w", id, err)
	}
	next := cloneMachine(m.rec)
	now := h.stamp()
	next.State, next.UpdatedAt = regional.StateStarted, now
	for i := range next.Checks {
		c := &next.Checks[i]
		c.Status, c.Output, c.UpdatedAt = regional.CheckCritical, outputNotChecked, now
	}
	if err := h.db.put(&next); err != nil {
		ln.Close()
		return regional.Machine{}, err
	}
	m.rec = next
	m.server = serveMachine(ln, &m.rec, h.log)
	h.startChecks(m)
	h.log.Info("machine started", "machine", id, "port", next.Port)
	h.pub.enqueue(next)
	return cloneMachine(next), nil
}

// Stop stops a started machine: its server closes and its checks turn
// critical. Stopping a machine that does not run changes nothing.
func (h *Host) Stop(ctx context.Context, id string) (regional.Machine, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, err := h.live(id)
	if err != nil {
		return regional.Machine{}, err
	}
	if m.rec.State != regional.StateStarted {
		return cloneMachine(m.rec), nil
	}
	next := cloneMachine(m.rec)
	now := h.stamp()
	next.State, next.UpdatedAt = regional.StateStopped, now
	for i := range next.Checks {
		c := &next.Checks[i]
		if c.Status != regional.CheckCritical || c.Output != outputNotRunning {
			c.Status, c.Output, c.UpdatedAt = regional.CheckCritical, outputNotRunning, now
		}
	}
	if err := h.db.put(&next); err != nil {
		return regional.Machine{}, err
	}
	h.stopMachine(m)
	m.rec = next
	h.log.Info("machine stopped", "machine", id)
	h.pub.enqueue(next)
	return cloneMachine(next), nil
}

// Destroy stops a machine and removes it: a tombstone is stored and
// published, and deleted from bbolt once the agent has taken it. An
// unreadable record's id can be destroyed too, which deletes its bytes.
func (h *Host) Destroy(ctx context.Context, id string) (regional.Machine, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return regional.Machine{}, ErrClosed
	}
	if _, bad := h.unreadable[id]; bad {
		if err := h.db.delete(id); err != nil {
			return regional.Machine{}, err
		}
		delete(h.unreadable, id)
		// Not stored: if the host stops before this goes out, the next
		// full re-publish prunes the row, as the id is no longer kept.
		gone := regional.Machine{V: regional.RecordVersion, ID: id, Host: h.cfg.Host.Name, Region: h.cfg.Host.Region, State: regional.StateDestroyed, UpdatedAt: h.stamp()}
		h.log.Info("unreadable record destroyed", "machine", id)
		h.pub.enqueue(gone)
		return gone, nil
	}
	m, err := h.live(id)
	if err != nil {
		return regional.Machine{}, err
	}
	next := cloneMachine(m.rec)
	next.State, next.UpdatedAt = regional.StateDestroyed, h.stamp()
	if err := h.db.put(&next); err != nil {
		return regional.Machine{}, err
	}
	h.stopMachine(m)
	delete(h.machines, id)
	h.tombstones[id] = next
	h.log.Info("machine destroyed", "machine", id)
	h.pub.enqueue(next)
	return cloneMachine(next), nil
}

// live returns the live machine id. Called with h.mu held.
func (h *Host) live(id string) (*machine, error) {
	if h.closed {
		return nil, ErrClosed
	}
	m, ok := h.machines[id]
	if !ok {
		return nil, fmt.Errorf("machine %q: %w", id, ErrNotFound)
	}
	return m, nil
}

// Get returns one live machine's record.
func (h *Host) Get(id string) (regional.Machine, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, err := h.live(id)
	if err != nil {
		return regional.Machine{}, err
	}
	return cloneMachine(m.rec), nil
}

// List returns the live machines' records by id.
func (h *Host) List() []regional.Machine {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]regional.Machine, 0, len(h.machines))
	for _, m := range h.machines {
		out = append(out, cloneMachine(m.rec))
	}
	slices.SortFunc(out, func(a, b regional.Machine) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// Republish sends every record to the agent now, as the periodic full
// re-publish does, and says what it took.
func (h *Host) Republish(ctx context.Context) (RepublishStats, error) {
	return h.pub.republish(ctx)
}

// Queued is how many changed records wait to reach the agent.
func (h *Host) Queued() int { return h.pub.queued() }

// snapshot is every record to publish and the ids the prune keeps: the
// live machines and the unreadable records (whose machines may well run;
// the host cannot tell).
func (h *Host) snapshot() ([]regional.Machine, []string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	records := make([]regional.Machine, 0, len(h.machines)+len(h.tombstones))
	keep := make([]string, 0, len(h.machines)+len(h.unreadable))
	for id, m := range h.machines {
		records = append(records, cloneMachine(m.rec))
		keep = append(keep, id)
	}
	for _, t := range h.tombstones {
		records = append(records, t)
	}
	for id := range h.unreadable {
		keep = append(keep, id)
	}
	slices.Sort(keep)
	return records, keep
}

// published deletes the tombstones the agent has taken, unless the id
// was used again since.
func (h *Host) published(records []regional.Machine) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range records {
		t, ok := h.tombstones[r.ID]
		if r.State != regional.StateDestroyed || !ok || t.UpdatedAt != r.UpdatedAt {
			continue
		}
		if h.closed {
			return
		}
		if err := h.db.delete(r.ID); err != nil {
			h.log.Error("host: tombstone not deleted", "machine", r.ID, "err", err)
			continue
		}
		delete(h.tombstones, r.ID)
	}
}

// cloneMachine copies a record so that no two holders share its checks.
func cloneMachine(m regional.Machine) regional.Machine {
	m.Checks = slices.Clone(m.Checks)
	return m
}

func newID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
