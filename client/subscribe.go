package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/patina-db/patina/internal/api"
)

// Subscription follows a query's result: first its current rows, then
// every change. After a disconnect (a network error, the agent
// restarting, the agent cutting off a slow reader) it resumes from the
// last change it delivered, so the caller sees every change exactly once.
// It gives up only when the agent no longer has the subscription or its
// retained window no longer reaches back far enough, or when ctx ends.
type Subscription struct {
	c       *Client
	ctx     context.Context
	cancel  context.CancelFunc // Close's: ends a reconnection under way too
	id      string
	columns []string
	last    uint64 // last change id delivered (or included in the rows)
	sc      *bufio.Scanner
	ev      SubEvent
	err     error
	// endedBy is the last error event the agent sent: why it ended the
	// stream. Reported if resuming is then refused.
	endedBy string

	mu     sync.Mutex // guards body and closed: Close may race Next
	body   io.Closer
	closed bool

	reconnects int
	rowsDone   bool          // the rows a stream started with have all arrived
	backoff    time.Duration // the wait before the next reconnection
	// MaxBackoff bounds the wait between reconnection attempts (default 2s).
	MaxBackoff time.Duration
}

// SubEvent is one event of a subscription. Exactly one of Row, Change is
// set, or Ready is true.
type SubEvent struct {
	// Row is a row of the result as it was when following started.
	Row *api.RowEvent
	// Ready marks the end of those rows; changes follow.
	Ready bool
	// Change is a change to the result.
	Change *api.ChangeEvent
}

// Subscribe starts following a query. Identical queries share one
// subscription on the agent.
func (c *Client) Subscribe(ctx context.Context, st Statement) (*Subscription, error) {
	resp, err := c.post(ctx, "/v1/subscriptions", st)
	if err != nil {
		return nil, err
	}
	s := newSubscription(c, ctx, "", 0, false)
	if err := s.start(resp); err != nil {
		s.cancel()
		return nil, err
	}
	return s, nil
}

func newSubscription(c *Client, ctx context.Context, id string, from uint64, rowsDone bool) *Subscription {
	ctx, cancel := context.WithCancel(ctx)
	return &Subscription{c: c, ctx: ctx, cancel: cancel, id: id, last: from, rowsDone: rowsDone}
}

// SubscribeFrom resumes the subscription of an identical query after
// change from, without rows: for a caller that kept its position but not
// the subscription id.
func (c *Client) SubscribeFrom(ctx context.Context, st Statement, from uint64) (*Subscription, error) {
	resp, err := c.post(ctx, fmt.Sprintf("/v1/subscriptions?from=%d", from), st)
	if err != nil {
		return nil, err
	}
	s := newSubscription(c, ctx, "", from, true)
	if err := s.start(resp); err != nil {
		s.cancel()
		return nil, err
	}
	return s, nil
}

// Resume follows subscription id from after change from, without rows.
func (c *Client) Resume(ctx context.Context, id string, from uint64) (*Subscription, error) {
	s := newSubscription(c, ctx, id, from, true)
	if err := s.resume(); err != nil {
		s.cancel()
		return nil, err
	}
	return s, nil
}

func (s *Subscription) resume() error {
	resp, err := s.c.get(s.ctx, fmt.Sprintf("/v1/subscriptions/%s?from=%d", url.PathEscape(s.id), s.last))
	if err != nil {
		return err
	}
	return s.start(resp)
}

func (s *Subscription) start(resp *http.Response) error {
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return readError(resp)
	}
	if id := resp.Header.Get(api.QueryIDHeader); id != "" {
		s.id = id
	}
	if s.id == "" {
		resp.Body.Close()
		return errors.New("client: subscription response has no query id")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		resp.Body.Close()
		return errClosed
	}
	s.body = resp.Body
	s.mu.Unlock()
	s.sc = bufio.NewScanner(resp.Body)
	s.sc.Buffer(make([]byte, 64<<10), 64<<20)
	return nil
}

// ID is the subscription's id on the agent.
func (s *Subscription) ID() string { return s.id }

// Columns names the result columns (known once the first rows arrived;
// empty when following started by Resume).
func (s *Subscription) Columns() []string { return s.columns }

// LastChange is the id of the last change delivered: where a later Resume
// would start.
func (s *Subscription) LastChange() uint64 { return s.last }

// Reconnects counts the times the subscription resumed after a disconnect.
func (s *Subscription) Reconnects() int { return s.reconnects }

// Event is the current event.
func (s *Subscription) Event() SubEvent { return s.ev }

// Err is what ended the subscription; nil when ctx ended it.
func (s *Subscription) Err() error { return s.err }

// errClosed ends Next after Close.
var errClosed = errors.New("client: subscription closed")

// Close stops following; a Next waiting in another goroutine returns
// false.
func (s *Subscription) Close() error {
	s.cancel() // a reconnection under way, or its wait, ends too
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.body == nil {
		return nil
	}
	return s.body.Close()
}

func (s *Subscription) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// Next waits for the next event, reconnecting as needed; false when the
// subscription has ended (see Err).
func (s *Subscription) Next() bool {
	for {
		if s.err != nil || s.ctx.Err() != nil || s.isClosed() {
			return false
		}
		ev, err := s.read()
		if err == nil {
			if ev != nil {
				s.ev = *ev
				s.backoff = 0
				return true
			}
			continue // a columns line
		}
		var apiErr *Error
		if errors.As(err, &apiErr) && apiErr.Status != http.StatusOK {
			s.err = err
			return false
		}
		if apiErr != nil {
			s.endedBy = apiErr.Message
		}
		if s.isClosed() {
			return false
		}
		if !s.rowsDone {
			// Resuming would repeat the changes the missing rows hold.
			s.err = fmt.Errorf("client: subscription %s: the stream broke before all its rows arrived (%v): subscribe again", s.id, err)
			return false
		}
		// A broken stream or an error event (cut off, agent stopping):
		// resume where we were.
		s.mu.Lock()
		if s.body != nil {
			s.body.Close()
			s.body = nil
		}
		s.mu.Unlock()
		if err := s.reconnect(); err != nil {
			if !errors.Is(err, errClosed) && !s.isClosed() {
				s.err = err
			}
			return false
		}
	}
}

// read returns the next event of the current stream; nil, nil for a line
// that is not one (the columns).
func (s *Subscription) read() (*SubEvent, error) {
	if s.sc == nil {
		return nil, errors.New("client: subscription: not connected")
	}
	if !s.sc.Scan() {
		if err := s.sc.Err(); err != nil {
			return nil, fmt.Errorf("client: subscription stream: %w", err)
		}
		return nil, errors.New("client: subscription stream ended")
	}
	var ev api.QueryEvent
	if err := json.Unmarshal(s.sc.Bytes(), &ev); err != nil {
		return nil, fmt.Errorf("client: subscription stream: %w", err)
	}
	switch {
	case ev.Error != nil:
		return nil, &Error{Status: http.StatusOK, Message: *ev.Error}
	case ev.Columns != nil:
		s.columns = ev.Columns
		return nil, nil
	case ev.Row != nil:
		return &SubEvent{Row: ev.Row}, nil
	case ev.EOQ != nil:
		if ev.EOQ.ChangeID != nil {
			s.last = *ev.EOQ.ChangeID
		}
		s.rowsDone = true
		return &SubEvent{Ready: true}, nil
	case ev.Change != nil:
		if ev.Change.ChangeID != s.last+1 {
			return nil, &Error{Status: http.StatusConflict, Message: fmt.Sprintf("change %d after %d: the stream skipped changes", ev.Change.ChangeID, s.last)}
		}
		s.last = ev.Change.ChangeID
		return &SubEvent{Change: ev.Change}, nil
	}
	return nil, errors.New("client: subscription stream: empty event")
}

// reconnect resumes after the last change, retrying with backoff until it
// succeeds, the agent refuses for good, or ctx ends.
func (s *Subscription) reconnect() error {
	limit := s.MaxBackoff
	if limit <= 0 {
		limit = 2 * time.Second
	}
	for {
		// The wait grows across attempts until an event is read, so a
		// stream that breaks as soon as it opens is not retried in a
		// tight loop.
		if s.backoff > 0 {
			t := time.NewTimer(s.backoff)
			select {
			case <-s.ctx.Done():
				t.Stop()
				return nil
			case <-t.C:
			}
		}
		s.backoff = min(max(2*s.backoff, 50*time.Millisecond), limit)
		err := s.resume()
		if err == nil {
			s.reconnects++
			s.endedBy = ""
			return nil
		}
		if errors.Is(err, errClosed) {
			return err
		}
		var apiErr *Error
		if errors.As(err, &apiErr) && apiErr.Status < 500 {
			if s.endedBy != "" && !strings.Contains(apiErr.Message, s.endedBy) {
				// The agent ended it and said why; the refusal to resume
				// ("no such subscription") follows from that.
				return fmt.Errorf("client: %s (resuming after change %d: %w)", s.endedBy, s.last, err)
			}
			return fmt.Errorf("client: resuming subscription %s after change %d: %w", s.id, s.last, err)
		}
	}
}
