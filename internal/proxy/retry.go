package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync/atomic"
)

// Headers the proxy speaks.
const (
	// RegionHeader and MachineHeader, on every proxied response, name
	// the region and the machine that answered.
	RegionHeader  = "Patina-Region"
	MachineHeader = "Patina-Machine"
	// GoneHeader, with any value but "" or "0", on a response from a
	// worker says the machine the request was sent to is not there (it
	// stopped, moved or was destroyed) and the request was not handed to
	// any app: the proxy retries it on the next candidate like a refused
	// connection, and never passes that response on.
	GoneHeader = "Patina-Machine-Gone"
)

// route is what the handler decided for a request: the app and the
// machines to try, in order.
type route struct {
	app   string
	cands []*target
}

type routeKey struct{}

// retrier sends a request to its route's machines in turn until one
// answers or a retry would not be safe.
type retrier struct {
	base      http.RoundTripper
	bodyLimit int64
	markDown  func(*target)
	retries   *atomic.Uint64
}

// RoundTrip implements http.RoundTripper. A retry happens on the next
// candidate when the machine refused the connection or said it is gone,
// and only when it is safe:
//   - nothing was sent (the connection failed): always;
//   - the request was sent: only for an idempotent method whose body
//     (if any) was buffered, so it can be sent again whole;
//   - a machine said it is gone (so no app saw the request): whenever
//     the body can be sent again whole.
//
// Only a refused connection or a gone machine marks the machine down; a
// failure after the request was sent may be the request's own doing.
func (rt *retrier) RoundTrip(req *http.Request) (*http.Response, error) {
	r, _ := req.Context().Value(routeKey{}).(*route)
	if r == nil || len(r.cands) == 0 {
		return nil, errors.New("no machine to send the request to")
	}
	body, err := newBodySource(req, rt.bodyLimit)
	if err != nil {
		return nil, fmt.Errorf("reading the request body: %w", err)
	}
	fail := &attemptsError{app: r.app}
	for i, t := range r.cands {
		if i > 0 {
			rt.retries.Add(1)
		}
		var wrote atomic.Bool
		out := req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			WroteHeaders: func() { wrote.Store(true) },
		}))
		u := *req.URL
		u.Scheme, u.Host = "http", t.addr
		out.URL = &u
		out.Body, out.GetBody = body.next()

		t.st.inflight.Add(1)
		resp, err := rt.base.RoundTrip(out)
		if err == nil && !gone(resp) {
			resp.Body = trackBody(resp.Body, t)
			resp.Header.Set(RegionHeader, t.region)
			resp.Header.Set(MachineHeader, t.id)
			return resp, nil
		}
		t.st.inflight.Add(-1)
		if err := req.Context().Err(); err != nil {
			return nil, err // the client went away: nothing to retry for
		}
		var safe bool
		if err == nil {
			io.CopyN(io.Discard, resp.Body, 4<<10) // lets the connection be reused
			resp.Body.Close()
			err = errGone
			rt.markDown(t)
			safe = body.replayable()
		} else {
			sent := wrote.Load()
			if !sent {
				rt.markDown(t) // refused, unreachable: not worth a first try for a while
			}
			safe = (!sent && body.untouched()) || (idempotent(req.Method) && body.replayable())
		}
		fail.add(t, err)
		if !safe {
			fail.notRetried = "not retried: " + unsafeWhy(req, body)
			return nil, fail
		}
	}
	return nil, fail
}

// gone reports whether a worker answered that the machine is not there.
func gone(resp *http.Response) bool {
	v := resp.Header.Get(GoneHeader)
	return v != "" && v != "0"
}

// idempotent methods may be sent twice (RFC 9110 §9.2.2).
func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

var errGone = errors.New("the machine is gone (" + GoneHeader + ")")

// unsafeWhy says why a request that was sent is not sent again.
func unsafeWhy(req *http.Request, b *bodySource) string {
	if !b.replayable() {
		return "the request body was streamed to the machine and cannot be sent again"
	}
	return "the request was sent and " + req.Method + " is not idempotent"
}

// bodySource gives each attempt the request body: none, the same bytes
// again (a body of known length up to the limit is read first), or the
// client's stream, which only the first attempt that reads it can have.
type bodySource struct {
	buf    []byte     // buffered body, when kept
	stream *countBody // the client's body, when not buffered
	empty  bool       // no body at all
}

func newBodySource(req *http.Request, limit int64) (*bodySource, error) {
	if req.Body == nil || req.Body == http.NoBody || req.ContentLength == 0 {
		return &bodySource{empty: true}, nil
	}
	if req.ContentLength > 0 && req.ContentLength <= limit {
		buf := make([]byte, req.ContentLength)
		if _, err := io.ReadFull(req.Body, buf); err != nil {
			return nil, err
		}
		return &bodySource{buf: buf}, nil
	}
	return &bodySource{stream: &countBody{r: req.Body}}, nil
}

// next returns the body and GetBody for one attempt.
func (b *bodySource) next() (io.ReadCloser, func() (io.ReadCloser, error)) {
	switch {
	case b.empty:
		return nil, nil
	case b.buf != nil:
		get := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.buf)), nil }
		body, _ := get()
		return body, get
	}
	return b.stream, nil
}

// replayable: the whole body can be sent again.
func (b *bodySource) replayable() bool { return b.empty || b.buf != nil || b.untouched() }

// untouched: not a byte of the body was read yet.
func (b *bodySource) untouched() bool { return b.stream == nil || !b.stream.read.Load() }

// countBody is the client's body as the attempts see it: it remembers
// being read, and closing it is left to the server that owns it.
type countBody struct {
	r    io.Reader
	read atomic.Bool
}

func (c *countBody) Read(p []byte) (int, error) {
	c.read.Store(true)
	return c.r.Read(p)
}

func (c *countBody) Close() error { return nil }

// trackBody wraps a response body so that the machine's in-flight count
// drops when the body is closed (the response is done); an upgraded
// connection's body stays writable.
func trackBody(body io.ReadCloser, t *target) io.ReadCloser {
	d := &doneBody{ReadCloser: body, t: t}
	if rwc, ok := body.(io.ReadWriteCloser); ok {
		return &doneRWBody{doneBody: d, w: rwc}
	}
	return d
}

type doneBody struct {
	io.ReadCloser
	t    *target
	done atomic.Bool
}

func (d *doneBody) Close() error {
	if d.done.CompareAndSwap(false, true) {
		d.t.st.inflight.Add(-1)
	}
	return d.ReadCloser.Close()
}

type doneRWBody struct {
	*doneBody
	w io.Writer
}

func (d *doneRWBody) Write(p []byte) (int, error) { return d.w.Write(p) }

// attemptsError is every failed attempt of one request.
type attemptsError struct {
	app        string
	attempts   []string
	notRetried string
}

func (e *attemptsError) add(t *target, err error) {
	e.attempts = append(e.attempts, fmt.Sprintf("machine %s (%s, %s): %v", t.id, t.region, t.addr, err))
}

func (e *attemptsError) Error() string {
	msg := fmt.Sprintf("app %q: no machine answered after %d attempt(s): %s", e.app, len(e.attempts), strings.Join(e.attempts, "; "))
	if e.notRetried != "" {
		msg += "; " + e.notRetried
	}
	return msg
}

// contextWithRoute attaches a route to a request's context.
func contextWithRoute(ctx context.Context, r *route) context.Context {
	return context.WithValue(ctx, routeKey{}, r)
}
