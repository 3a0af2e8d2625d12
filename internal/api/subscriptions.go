package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/internal/store"
	"github.com/patina-db/patina/internal/subs"
)

// Subscriptions is the engine behind /v1/subscriptions.
type Subscriptions interface {
	Subscribe(ctx context.Context, q subs.Query) (*subs.Sub, bool, error)
	Find(q subs.Query) (*subs.Sub, error)
	Get(id string) *subs.Sub
	Attach(s *subs.Sub) (detach func())
}

// DefaultStreamWriteTimeout bounds how long one write to a following
// client (subscriptions, updates) may block before the client is cut off.
const DefaultStreamWriteTimeout = 10 * time.Second

// QueryIDHeader carries a subscription's id.
const QueryIDHeader = "patina-query-id"

func (s *Server) handleSubscribe(w http.ResponseWriter, r *http.Request) {
	if s.opts.Subscriptions == nil {
		writeJSON(w, http.StatusNotFound, ErrorResponse{Error: "subscriptions are not served by this agent"})
		return
	}
	var st Statement
	if status, err := decodeBody(r, &st); err != nil {
		writeQueryError(w, status, err)
		return
	}
	q, err := toSubsQuery(st)
	if err != nil {
		writeQueryError(w, http.StatusBadRequest, err)
		return
	}
	from, hasFrom, err := parseFrom(r)
	if err != nil {
		writeQueryError(w, http.StatusBadRequest, err)
		return
	}
	var sub *subs.Sub
	if hasFrom {
		// Resuming by query: the subscription must exist already.
		if sub, err = s.opts.Subscriptions.Find(q); err == nil && sub == nil {
			writeQueryError(w, http.StatusNotFound, errors.New("no subscription for this query to resume: subscribe without from"))
			return
		}
	} else {
		sub, _, err = s.opts.Subscriptions.Subscribe(r.Context(), q)
	}
	if err != nil {
		status := http.StatusInternalServerError
		var pe *subs.PlanError
		var qe *store.QueryError
		if errors.As(err, &pe) || errors.As(err, &qe) {
			status = http.StatusBadRequest
		} else {
			s.opts.Logger.Error("subscribe failed", "err", err)
		}
		writeQueryError(w, status, err)
		return
	}
	s.follow(w, r, sub, from, hasFrom)
}

func (s *Server) handleResume(w http.ResponseWriter, r *http.Request) {
	if s.opts.Subscriptions == nil {
		writeJSON(w, http.StatusNotFound, ErrorResponse{Error: "subscriptions are not served by this agent"})
		return
	}
	sub := s.opts.Subscriptions.Get(r.PathValue("id"))
	if sub == nil {
		writeQueryError(w, http.StatusNotFound, fmt.Errorf("no such subscription: %s", r.PathValue("id")))
		return
	}
	from, hasFrom, err := parseFrom(r)
	if err != nil {
		writeQueryError(w, http.StatusBadRequest, err)
		return
	}
	s.follow(w, r, sub, from, hasFrom)
}

// follow streams a subscription: its current rows unless resuming, then
// every change. The engine never waits for this client: a client that
// stops reading is cut off when a write blocks longer than the stream
// write timeout, or when it falls out of the retained window.
func (s *Server) follow(w http.ResponseWriter, r *http.Request, sub *subs.Sub, from uint64, hasFrom bool) {
	detach := s.opts.Subscriptions.Attach(sub)
	defer detach()
	start := nowFunc()
	after := from
	var rows []subs.Row
	if hasFrom {
		if _, _, err := sub.ChangesAfter(from, 0); err != nil {
			status := http.StatusGone
			if errors.Is(err, subs.ErrAhead) {
				status = http.StatusBadRequest
			}
			writeQueryError(w, status, err)
			return
		}
	} else {
		var err error
		if rows, after, err = sub.Snapshot(); err != nil {
			writeQueryError(w, http.StatusGone, err)
			return
		}
	}
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set(QueryIDHeader, sub.ID)
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	deadline := func() { _ = rc.SetWriteDeadline(time.Now().Add(s.opts.StreamWriteTimeout)) }
	deadline()
	defer deadline() // for the response's last chunk, written after this returns
	if !hasFrom {
		if enc.Encode(QueryEvent{Columns: nonNil(sub.Columns())}) != nil {
			return
		}
		for i, row := range rows {
			if i%256 == 0 {
				deadline()
			}
			if enc.Encode(QueryEvent{Row: &RowEvent{RowID: row.RowID, Cells: goValues(row.Cells)}}) != nil {
				return
			}
		}
		last := after
		if enc.Encode(QueryEvent{EOQ: &EOQ{Time: sinceSeconds(start), ChangeID: &last}}) != nil {
			return
		}
	}
	for {
		changes, wait, err := sub.ChangesAfter(after, 256)
		if err != nil {
			msg := err.Error()
			deadline()
			_ = enc.Encode(QueryEvent{Error: &msg})
			return
		}
		if len(changes) == 0 {
			deadline()
			if rc.Flush() != nil {
				return
			}
			select {
			case <-r.Context().Done():
				return
			case <-s.closing:
				return
			case <-wait:
			}
			continue
		}
		deadline()
		for _, c := range changes {
			ev := &ChangeEvent{Kind: c.Kind.String(), RowID: c.RowID, Cells: goValues(c.Cells), ChangeID: c.ID}
			if enc.Encode(QueryEvent{Change: ev}) != nil {
				return
			}
			after = c.ID
		}
	}
}

func writeQueryError(w http.ResponseWriter, status int, err error) {
	msg := err.Error()
	writeJSON(w, status, QueryEvent{Error: &msg})
}

// parseFrom reads the ?from=N resume point.
func parseFrom(r *http.Request) (uint64, bool, error) {
	q := r.URL.Query()
	if !q.Has("from") {
		return 0, false, nil
	}
	n, err := strconv.ParseUint(q.Get("from"), 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("from=%q: want a change id (a non-negative integer)", q.Get("from"))
	}
	return n, true, nil
}

func toSubsQuery(st Statement) (subs.Query, error) {
	q := subs.Query{SQL: st.Query}
	for i, p := range st.Params {
		v, err := crdt.FromGo(p)
		if err != nil {
			return q, fmt.Errorf("parameter %d: %w", i+1, err)
		}
		q.Args = append(q.Args, v)
	}
	for name, p := range st.NamedParams {
		v, err := crdt.FromGo(p)
		if err != nil {
			return q, fmt.Errorf("parameter %s: %w", name, err)
		}
		if q.Named == nil {
			q.Named = map[string]crdt.Value{}
		}
		q.Named[name] = v
	}
	return q, nil
}

func goValues(vals []crdt.Value) []any {
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = v.Go()
	}
	return out
}
