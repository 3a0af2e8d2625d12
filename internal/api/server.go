package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/internal/subs"
)

// Store is what the handlers need of a node's database.
type Store interface {
	Transact(ctx context.Context, stmts []store.Statement) (*store.TxResult, error)
	// Submit queues a transaction behind those submitted before it and
	// calls done with its outcome.
	Submit(ctx context.Context, stmts []store.Statement, done func(*store.TxResult, error))
	Query(ctx context.Context, st store.Statement) (*store.Rows, error)
	Migrate(ctx context.Context, stmts []string) error
	ApplySchemaSQL(ctx context.Context, text string) error
	Backup(ctx context.Context) (*store.Snapshot, error)
	Actor() crdt.ActorID
	Gaps() uint64
	Head() uint64
	Schema() *store.Schema
}

// Cluster is what the handlers show of the agent's cluster.
type Cluster interface {
	Members() []Member
	AliveMembers() int
	QueueSize() int
	P99LagSeconds() float64
	Stats() map[string]uint64
}

// Updates is the fan-out of changed rows behind POST /v1/updates/{table}.
type Updates interface {
	Subscribe(table string, buffer int) *subs.UpdateSub
	Unsubscribe(s *subs.UpdateSub)
}

// Options configure the handlers.
type Options struct {
	// Updates feeds POST /v1/updates/{table}; nil disables the route.
	Updates Updates
	// Subscriptions serves /v1/subscriptions; nil disables the routes.
	Subscriptions Subscriptions
	// StreamWriteTimeout cuts off a following client whose reads stall
	// (default DefaultStreamWriteTimeout).
	StreamWriteTimeout time.Duration
	// Cluster is nil for an agent running alone.
	Cluster Cluster
	// MaxBodyBytes bounds every request body; larger ones get 413.
	MaxBodyBytes int64
	// BearerToken, when set, is required on every data route (see Access).
	BearerToken string
	// AdminToken, when set, is required on the admin routes
	// (/v1/admin/...) instead of BearerToken, which then does not grant
	// them. When only BearerToken is set, it guards the admin routes too.
	AdminToken string
	// SchemaPaths are the agent's schema files, re-read by
	// POST /v1/admin/reload; empty disables the reload.
	SchemaPaths []string
	Logger      *slog.Logger
	// Metrics serves GET /metrics, never behind the bearer token; nil:
	// no such route (metrics are served elsewhere or not at all).
	Metrics http.Handler
}

// Access is the token a route requires.
type Access int

const (
	// Open routes never need a token: health checks and metrics scrapes
	// come from load balancers and Prometheus, which hold no secrets.
	Open Access = iota
	// Data routes need the bearer token, when one is set.
	Data
	// Admin routes need the admin token, or the bearer token when no
	// admin token is set.
	Admin
)

func (a Access) String() string {
	return [...]string{"open", "data", "admin"}[a]
}

// Route is one route the server serves.
type Route struct {
	Method, Pattern string
	Access          Access
}

// DefaultMaxBodyBytes is the body limit when none is configured.
const DefaultMaxBodyBytes = 8 << 20

// Server serves the agent's HTTP API.
type Server struct {
	store   Store
	opts    Options
	mux     *http.ServeMux
	routes  []Route
	closing chan struct{} // closed to end the following streams
	once    sync.Once
}

// NewServer returns the API handler for one store.
func NewServer(st Store, opts Options) *Server {
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.StreamWriteTimeout <= 0 {
		opts.StreamWriteTimeout = DefaultStreamWriteTimeout
	}
	s := &Server{store: st, opts: opts, mux: http.NewServeMux(), closing: make(chan struct{})}
	s.handle("POST", "/v1/transactions", Data, s.handleTransactions)
	s.handleDuplex("POST", "/v1/transactions/stream", Data, s.handleTransactionStream)
	s.handle("POST", "/v1/queries", Data, s.handleQueries)
	s.handle("POST", "/v1/migrations", Data, s.handleMigrations)
	s.handle("GET", "/v1/health", Open, s.handleHealth)
	s.handle("GET", "/v1/members", Data, s.handleMembers)
	s.handle("POST", "/v1/updates/{table}", Data, s.handleUpdates)
	s.handle("POST", "/v1/subscriptions", Data, s.handleSubscribe)
	s.handle("GET", "/v1/subscriptions/{id}", Data, s.handleResume)
	s.handle("GET", "/v1/debug/cluster", Data, s.handleClusterStats)
	s.handle("POST", "/v1/admin/reload", Admin, s.handleReload)
	s.handle("GET", "/v1/admin/backup", Admin, s.handleBackup)
	if opts.Metrics != nil {
		s.handle("GET", "/metrics", Open, opts.Metrics.ServeHTTP)
	}
	return s
}

// handle registers a route; every route states the token it requires.
// Its request body is limited to MaxBodyBytes.
func (s *Server) handle(method, pattern string, access Access, h http.HandlerFunc) {
	s.register(method, pattern, access, s.auth(access, func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, s.opts.MaxBodyBytes)
		}
		h(w, r)
	}))
}

// handleDuplex registers a route whose request body is a stream read
// while the response is written, which limits its parts itself. Full
// duplex is on before anything else: otherwise an early answer (a refused
// token) would first wait for the end of a body that does not end until
// the client has its answer.
func (s *Server) handleDuplex(method, pattern string, access Access, h http.HandlerFunc) {
	allowed := s.authorizer(access)
	s.register(method, pattern, access, func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		if err := rc.EnableFullDuplex(); err != nil {
			writeJSON(w, http.StatusHTTPVersionNotSupported, ErrorResponse{Error: fmt.Sprintf("this route needs a connection that carries both directions at once: %v", err)})
			return
		}
		if !allowed(w, r) {
			// The client may be sending while it waits: send the answer,
			// then read what it sent, so that closing the connection
			// with unread bytes does not reset it before the answer is
			// read.
			_ = rc.Flush()
			_ = rc.SetReadDeadline(time.Now().Add(time.Second))
			_, _ = io.CopyN(io.Discard, r.Body, 1<<20)
			return
		}
		h(w, r)
	})
}

// register adds a route; h checks the token access requires.
func (s *Server) register(method, pattern string, access Access, h http.HandlerFunc) {
	s.routes = append(s.routes, Route{Method: method, Pattern: pattern, Access: access})
	s.mux.HandleFunc(method+" "+pattern, h)
}

// Routes lists the routes served, in registration order.
func (s *Server) Routes() []Route { return append([]Route(nil), s.routes...) }

// CloseStreams ends every following stream (subscriptions, updates), which
// never end by themselves; register it with http.Server.RegisterOnShutdown
// so that shutdown waits only for requests that finish.
func (s *Server) CloseStreams() { s.once.Do(func() { close(s.closing) }) }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mux.ServeHTTP(w, r)
}

// auth wraps a handler with the token check its access level requires.
func (s *Server) auth(access Access, next http.HandlerFunc) http.HandlerFunc {
	allowed := s.authorizer(access)
	return func(w http.ResponseWriter, r *http.Request) {
		if allowed(w, r) {
			next(w, r)
		}
	}
}

// authorizer returns the token check an access level requires: it
// reports whether a request may go on, and answers 401 if not.
func (s *Server) authorizer(access Access) func(w http.ResponseWriter, r *http.Request) bool {
	token, what := "", ""
	switch access {
	case Data:
		token, what = s.opts.BearerToken, "bearer token"
	case Admin:
		token, what = s.opts.BearerToken, "bearer token"
		if s.opts.AdminToken != "" {
			token, what = s.opts.AdminToken, "admin token"
		}
	}
	if token == "" {
		return func(http.ResponseWriter, *http.Request) bool { return true }
	}
	// Compared as hashes, so the time taken says nothing about the
	// token's length either.
	want := sha256.Sum256([]byte("Bearer " + token))
	return func(w http.ResponseWriter, r *http.Request) bool {
		got := sha256.Sum256([]byte(r.Header.Get("Authorization")))
		if subtle.ConstantTimeCompare(got[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="patina"`)
			// With its length given, the answer is complete as soon as it
			// is sent, even while a stream's body is still being read.
			body, _ := json.Marshal(ErrorResponse{Error: "missing or wrong " + what + " (Authorization: Bearer <token>)"})
			body = append(body, '\n')
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write(body)
			return false
		}
		return true
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decodeBody reads a JSON body into v, telling an oversized body (413)
// from a malformed one (400).
func decodeBody(r *http.Request, v any) (status int, err error) {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return http.StatusRequestEntityTooLarge, fmt.Errorf("request body larger than %d bytes", tooBig.Limit)
		}
		return http.StatusBadRequest, fmt.Errorf("request body is not valid JSON for this route: %v", err)
	}
	// Token, not More: More takes a stray ] or } for the end of a value.
	if _, err := dec.Token(); err != io.EOF {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return http.StatusRequestEntityTooLarge, fmt.Errorf("request body larger than %d bytes", tooBig.Limit)
		}
		return http.StatusBadRequest, errors.New("request body has data after the JSON value")
	}
	return 0, nil
}

func toStoreStatement(st Statement) store.Statement {
	return store.Statement{SQL: st.Query, Args: st.Params, Named: st.NamedParams}
}

func (s *Server) handleTransactions(w http.ResponseWriter, r *http.Request) {
	var stmts []Statement
	if status, err := decodeBody(r, &stmts); err != nil {
		writeJSON(w, status, ExecResponse{Results: []ExecResult{{Error: err.Error()}}, ActorID: s.store.Actor().String()})
		return
	}
	if len(stmts) == 0 {
		writeJSON(w, http.StatusBadRequest, ExecResponse{Results: []ExecResult{{Error: "no statements: the body must be a non-empty array"}}, ActorID: s.store.Actor().String()})
		return
	}
	in := make([]store.Statement, len(stmts))
	for i, st := range stmts {
		in[i] = toStoreStatement(st)
	}
	status, out := s.txResponse(s.store.Transact(r.Context(), in))
	writeJSON(w, status, out)
}

// txResponse is the answer to a transaction: its status and body.
func (s *Server) txResponse(res *store.TxResult, err error) (int, ExecResponse) {
	if err != nil {
		var se *store.StatementError
		status := http.StatusInternalServerError
		var results []ExecResult
		if errors.As(err, &se) {
			if se.Client {
				status = http.StatusBadRequest
			}
			// Statements before the failing one ran, then were rolled back.
			results = make([]ExecResult, se.Index+1)
			results[se.Index] = ExecResult{Error: err.Error()}
		} else {
			results = []ExecResult{{Error: err.Error()}}
		}
		switch {
		case status >= 500 && errors.Is(err, context.Canceled):
			// The client went away (or the agent is stopping) before it
			// ran: nothing failed.
			s.opts.Logger.Debug("transaction abandoned", "err", err)
		case status >= 500:
			s.opts.Logger.Error("transaction failed", "err", err)
		}
		return status, ExecResponse{Results: results, ActorID: s.store.Actor().String()}
	}
	out := ExecResponse{Results: make([]ExecResult, len(res.Results)), Time: res.Elapsed.Seconds(), ActorID: s.store.Actor().String()}
	for i, sr := range res.Results {
		n := sr.RowsAffected
		out.Results[i] = ExecResult{RowsAffected: &n, Time: sr.Elapsed.Seconds()}
	}
	if res.Version != 0 {
		v := res.Version
		out.Version = &v
	}
	if !res.Committed.IsZero() {
		t := res.Committed.UTC()
		out.CommittedAt = &t
	}
	return http.StatusOK, out
}

func (s *Server) handleQueries(w http.ResponseWriter, r *http.Request) {
	var st Statement
	if status, err := decodeBody(r, &st); err != nil {
		msg := err.Error()
		writeJSON(w, status, QueryEvent{Error: &msg})
		return
	}
	start := nowFunc()
	rows, err := s.store.Query(r.Context(), toStoreStatement(st))
	if err != nil {
		msg := err.Error()
		status := http.StatusInternalServerError
		var qe *store.QueryError
		if errors.As(err, &qe) {
			status = http.StatusBadRequest
		}
		writeJSON(w, status, QueryEvent{Error: &msg})
		return
	}
	defer rows.Close()
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	// A client that stops reading would hold a reader, and its snapshot
	// of the database, for as long as it pleased: each write must go out
	// within the stream write timeout. The deadline is set just before
	// each row is written, so the time the query takes to make its rows
	// does not count.
	rc := http.NewResponseController(w)
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(s.opts.StreamWriteTimeout)) }
	deadline()
	defer deadline() // for the response's last chunk, written after this returns
	_ = enc.Encode(QueryEvent{Columns: nonNil(rows.Columns())})
	var id int64
	for rows.Next() {
		vals, err := rows.Values()
		deadline()
		if err != nil {
			msg := err.Error()
			_ = enc.Encode(QueryEvent{Error: &msg})
			return
		}
		id++
		if err := enc.Encode(QueryEvent{Row: &RowEvent{RowID: id, Cells: vals}}); err != nil {
			return // the client went away
		}
		if flusher != nil && id%512 == 0 {
			flusher.Flush()
		}
	}
	deadline()
	if err := rows.Err(); err != nil {
		// Headers are sent: the error travels in the stream.
		msg := err.Error()
		_ = enc.Encode(QueryEvent{Error: &msg})
		return
	}
	_ = enc.Encode(QueryEvent{EOQ: &EOQ{Time: sinceSeconds(start)}})
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func (s *Server) handleMigrations(w http.ResponseWriter, r *http.Request) {
	var raw []json.RawMessage
	if status, err := decodeBody(r, &raw); err != nil {
		writeJSON(w, status, ErrorResponse{Error: err.Error()})
		return
	}
	if len(raw) == 0 {
		writeJSON(w, http.StatusBadRequest, ErrorResponse{Error: "no statements: the body must be a non-empty array of schema statements"})
		return
	}
	stmts := make([]string, len(raw))
	for i, m := range raw {
		var st Statement
		if err := json.Unmarshal(m, &st); err != nil {
			writeJSON(w, http.StatusBadRequest, ErrorResponse{Error: fmt.Sprintf("statement %d: %v", i, err)})
			return
		}
		if len(st.Params) > 0 || len(st.NamedParams) > 0 {
			writeJSON(w, http.StatusBadRequest, ErrorResponse{Error: fmt.Sprintf("statement %d: schema statements take no parameters", i)})
			return
		}
		stmts[i] = st.Query
	}
	start := nowFunc()
	if err := s.store.Migrate(r.Context(), stmts); err != nil {
		var se *store.SchemaError
		status := http.StatusInternalServerError
		if errors.As(err, &se) {
			status = http.StatusBadRequest
		} else {
			s.opts.Logger.Error("migration failed", "err", err)
		}
		writeJSON(w, status, ErrorResponse{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, MigrationResponse{Time: sinceSeconds(start)})
}

func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	h := Health{Gaps: s.store.Gaps(), Members: 1, Head: s.store.Head(), ActorID: s.store.Actor().String()}
	if c := s.opts.Cluster; c != nil {
		h.Members, h.QueueSize, h.P99Lag = c.AliveMembers(), c.QueueSize(), c.P99LagSeconds()
	}
	q := r.URL.Query()
	var problems []string
	for _, key := range []string{"gaps", "p99_lag", "max_queue"} {
		if !q.Has(key) {
			continue
		}
		limit, err := strconv.ParseFloat(q.Get(key), 64)
		if err != nil || math.IsNaN(limit) || limit < 0 {
			writeJSON(w, http.StatusBadRequest, ErrorResponse{Error: fmt.Sprintf("health threshold %s=%q: want a non-negative number", key, q.Get(key))})
			return
		}
		var value float64
		switch key {
		case "gaps":
			value = float64(h.Gaps)
		case "p99_lag":
			value = h.P99Lag
		case "max_queue":
			value = float64(h.QueueSize)
		}
		if value > limit {
			problems = append(problems, fmt.Sprintf("%s %g > %g", key, value, limit))
		}
	}
	status := http.StatusOK
	if len(problems) > 0 {
		status = http.StatusServiceUnavailable
		w.Header().Set("X-Patina-Unhealthy", strings.Join(problems, "; "))
	}
	writeJSON(w, status, HealthResponse{Response: h})
}

// nowFunc and sinceSeconds time responses; the timings are reported to
// clients, never used to decide anything.
var nowFunc = time.Now

func sinceSeconds(t time.Time) float64 { return time.Since(t).Seconds() }

func (s *Server) handleMembers(w http.ResponseWriter, r *http.Request) {
	out := MembersResponse{Members: []Member{}}
	if c := s.opts.Cluster; c != nil {
		out.Members = append(out.Members, c.Members()...)
	} else {
		out.Members = append(out.Members, Member{ID: s.store.Actor().String(), Name: "self", State: "alive", Self: true})
	}
	writeJSON(w, http.StatusOK, out)
}

// updatesBuffer is how far a follower of /v1/updates may fall behind before
// it is cut off.
const updatesBuffer = 4096

func (s *Server) handleUpdates(w http.ResponseWriter, r *http.Request) {
	table := r.PathValue("table")
	if s.opts.Updates == nil {
		writeJSON(w, http.StatusNotFound, ErrorResponse{Error: "updates are not served by this agent"})
		return
	}
	if s.store.Schema().Tables[table] == nil {
		writeJSON(w, http.StatusNotFound, ErrorResponse{Error: fmt.Sprintf("no such table: %s", table)})
		return
	}
	// net/http notices a client gone only once the request body has been
	// read to its end: without this, a follower that left would be
	// noticed only at the next write to it, however long that takes.
	if _, err := io.Copy(io.Discard, io.LimitReader(r.Body, 64<<10)); err != nil {
		return
	}
	sub := s.opts.Updates.Subscribe(table, updatesBuffer)
	defer s.opts.Updates.Unsubscribe(sub)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	if flusher != nil {
		flusher.Flush()
	}
	enc := json.NewEncoder(w)
	rc := http.NewResponseController(w)
	// For the response's last chunk, written after this returns.
	defer func() { _ = rc.SetWriteDeadline(time.Now().Add(s.opts.StreamWriteTimeout)) }()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.closing:
			return
		case n, ok := <-sub.C:
			_ = rc.SetWriteDeadline(time.Now().Add(s.opts.StreamWriteTimeout))
			if !ok {
				if sub.Lagged {
					msg := "cut off: this consumer fell more than 4096 changes behind"
					_ = enc.Encode(UpdateEvent{Error: &msg})
				}
				return
			}
			if err := enc.Encode(NewUpdateEvent(n)); err != nil {
				return
			}
			// Flush when caught up, so bursts go out in few writes.
			if flusher != nil && len(sub.C) == 0 {
				flusher.Flush()
			}
		}
	}
}

// handleClusterStats shows the data plane's counters, for operators and
// benchmarks (Prometheus metrics will carry them too).
func (s *Server) handleClusterStats(w http.ResponseWriter, r *http.Request) {
	out := ClusterStatsResponse{Stats: map[string]uint64{}}
	if c := s.opts.Cluster; c != nil {
		out.Stats = c.Stats()
		out.Stats["queue_size"] = uint64(c.QueueSize())
	}
	writeJSON(w, http.StatusOK, out)
}
