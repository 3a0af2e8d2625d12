// Package client is the Go client for a patina agent's HTTP API. It
// depends only on the API's wire types, never on the agent.
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/patina-db/patina/internal/api"
)

// Statement is re-exported so callers need not import the wire package.
type Statement = api.Statement

// Client talks to one agent.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// New returns a client for the agent at baseURL (http://host:port).
func New(baseURL, token string) (*Client, error) {
	return NewWithHTTP(baseURL, token, &http.Client{})
}

// NewWithHTTP is New with the HTTP client to use (connection pooling,
// timeouts).
func NewWithHTTP(baseURL, token string, hc *http.Client) (*Client, error) {
	baseURL = strings.TrimRight(baseURL, "/")
	if !strings.HasPrefix(baseURL, "http://") && !strings.HasPrefix(baseURL, "https://") {
		return nil, fmt.Errorf("client: API address %q: want http://host:port", baseURL)
	}
	return &Client{base: baseURL, token: token, http: hc}, nil
}

// Error is a request the agent refused, with its status and message.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

func (c *Client) post(ctx context.Context, path string, body any) (*http.Response, error) {
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("client: encode request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return resp, nil
}

// Transact runs statements in one transaction on the agent.
func (c *Client) Transact(ctx context.Context, stmts ...Statement) (*api.ExecResponse, error) {
	resp, err := c.post(ctx, "/v1/transactions", stmts)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var out struct {
		api.ExecResponse
		// Error is an answer that is no transaction's (a refused token,
		// a body too large).
		Error string `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, &Error{Status: resp.StatusCode, Message: fmt.Sprintf("unreadable response: %v", err)}
	}
	if resp.StatusCode != http.StatusOK && len(out.Results) == 0 && out.Error != "" {
		return nil, &Error{Status: resp.StatusCode, Message: out.Error}
	}
	return &out.ExecResponse, txError(resp.StatusCode, &out.ExecResponse)
}

// txError is a transaction's failure as the agent answered it, or nil
// for a 200: the message is the failing statement's error.
func txError(status int, out *api.ExecResponse) error {
	if status == http.StatusOK {
		return nil
	}
	msg := "transaction failed"
	for _, r := range out.Results {
		if r.Error != "" {
			msg = r.Error
		}
	}
	return &Error{Status: status, Message: msg}
}

// Migrate applies schema statements.
func (c *Client) Migrate(ctx context.Context, stmts ...string) error {
	resp, err := c.post(ctx, "/v1/migrations", stmts)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readError(resp)
	}
	return nil
}

func readError(resp *http.Response) error {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e api.ErrorResponse
	if json.Unmarshal(data, &e) == nil && e.Error != "" {
		return &Error{Status: resp.StatusCode, Message: e.Error}
	}
	return &Error{Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
}

// Rows is a streaming query result.
type Rows struct {
	resp    *http.Response
	sc      *bufio.Scanner
	columns []string
	row     api.RowEvent
	err     error
	done    bool
}

// Query runs a read-only statement and streams its rows.
func (c *Client) Query(ctx context.Context, st Statement) (*Rows, error) {
	resp, err := c.post(ctx, "/v1/queries", st)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var ev api.QueryEvent
		if json.Unmarshal(data, &ev) == nil && ev.Error != nil {
			return nil, &Error{Status: resp.StatusCode, Message: *ev.Error}
		}
		return nil, &Error{Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	}
	r := &Rows{resp: resp, sc: bufio.NewScanner(resp.Body)}
	r.sc.Buffer(make([]byte, 64<<10), 64<<20)
	var ev api.QueryEvent
	if err := r.next(&ev); err != nil {
		resp.Body.Close()
		return nil, err
	}
	if ev.Columns == nil {
		resp.Body.Close()
		return nil, errors.New("client: query stream did not start with columns")
	}
	r.columns = ev.Columns
	return r, nil
}

func (r *Rows) next(ev *api.QueryEvent) error {
	if !r.sc.Scan() {
		if err := r.sc.Err(); err != nil {
			return fmt.Errorf("client: query stream: %w", err)
		}
		return errors.New("client: query stream ended early")
	}
	*ev = api.QueryEvent{}
	if err := json.Unmarshal(r.sc.Bytes(), ev); err != nil {
		return fmt.Errorf("client: query stream: %w", err)
	}
	if ev.Error != nil {
		return &Error{Status: http.StatusOK, Message: *ev.Error}
	}
	return nil
}

// Columns names the result columns.
func (r *Rows) Columns() []string { return r.columns }

// Next advances to the next row; false at the end or on error (see Err).
func (r *Rows) Next() bool {
	if r.done {
		return false
	}
	var ev api.QueryEvent
	if err := r.next(&ev); err != nil {
		r.err, r.done = err, true
		return false
	}
	if ev.EOQ != nil {
		r.done = true
		return false
	}
	if ev.Row == nil {
		r.err, r.done = errors.New("client: unexpected event in query stream"), true
		return false
	}
	r.row = *ev.Row
	return true
}

// Row returns the current row's cells: nil, int64, float64, string or []byte.
func (r *Rows) Row() []any { return r.row.Cells }

// Err is the error that ended the stream, if any.
func (r *Rows) Err() error { return r.err }

// Close ends the stream.
func (r *Rows) Close() error { return r.resp.Body.Close() }

// Health reads GET /v1/health with optional thresholds (query string
// without '?', e.g. "gaps=0"). A 503 returns the health and an *Error.
func (c *Client) Health(ctx context.Context, thresholds string) (*api.Health, error) {
	path := "/v1/health"
	if thresholds != "" {
		path += "?" + thresholds
	}
	resp, err := c.get(ctx, path)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return nil, readError(resp)
	}
	var h api.HealthResponse
	if err := json.NewDecoder(resp.Body).Decode(&h); err != nil {
		return nil, fmt.Errorf("client: health: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return &h.Response, &Error{Status: resp.StatusCode, Message: "unhealthy: " + resp.Header.Get("X-Patina-Unhealthy")}
	}
	return &h.Response, nil
}

// get sends a GET with the token; the caller closes the body.
func (c *Client) get(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+path, nil)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return resp, nil
}

// getJSON GETs path and decodes a 200 answer into out.
func (c *Client) getJSON(ctx context.Context, path string, out any) error {
	resp, err := c.get(ctx, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return readError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: %s: %w", path, err)
	}
	return nil
}

// Members lists the cluster as the agent sees it.
func (c *Client) Members(ctx context.Context) ([]api.Member, error) {
	var out api.MembersResponse
	if err := c.getJSON(ctx, "/v1/members", &out); err != nil {
		return nil, err
	}
	return out.Members, nil
}

// UpdateStream follows POST /v1/updates/{table}.
type UpdateStream struct {
	resp *http.Response
	sc   *bufio.Scanner
	ev   api.Notify
	err  error
}

// Updates follows the changes to a table's rows: every insert, update
// and delete, local or from peers, by primary key.
func (c *Client) Updates(ctx context.Context, table string) (*UpdateStream, error) {
	resp, err := c.post(ctx, "/v1/updates/"+table, nil)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	return &UpdateStream{resp: resp, sc: sc}, nil
}

// Next waits for the next change; false when the stream ends (see Err).
func (u *UpdateStream) Next() bool {
	if !u.sc.Scan() {
		u.err = u.sc.Err()
		return false
	}
	var ev api.UpdateEvent
	if err := json.Unmarshal(u.sc.Bytes(), &ev); err != nil {
		u.err = fmt.Errorf("client: updates: %w", err)
		return false
	}
	if ev.Error != nil {
		u.err = &Error{Status: http.StatusOK, Message: *ev.Error}
		return false
	}
	if ev.Notify == nil {
		u.err = errors.New("client: updates: empty event")
		return false
	}
	u.ev = *ev.Notify
	return true
}

// Notify is the current change: "update" or "delete" and the key values.
func (u *UpdateStream) Notify() api.Notify { return u.ev }

// Err is what ended the stream.
func (u *UpdateStream) Err() error { return u.err }

// Close stops following.
func (u *UpdateStream) Close() error { return u.resp.Body.Close() }

// ClusterStats reads the data plane's counters (GET /v1/debug/cluster).
func (c *Client) ClusterStats(ctx context.Context) (map[string]uint64, error) {
	var out api.ClusterStatsResponse
	if err := c.getJSON(ctx, "/v1/debug/cluster", &out); err != nil {
		return nil, err
	}
	return out.Stats, nil
}

// Reload makes the agent re-read its schema files (POST /v1/admin/reload).
// An admin route: when the agent has an admin token, the client's token
// must be that one.
func (c *Client) Reload(ctx context.Context) (*api.ReloadResponse, error) {
	resp, err := c.post(ctx, "/v1/admin/reload", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, readError(resp)
	}
	var out api.ReloadResponse
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("client: reload: %w", err)
	}
	return &out, nil
}

// BackupInfo describes a snapshot Backup received.
type BackupInfo struct {
	// Bytes is the snapshot's length.
	Bytes int64
	// Actor is the actor id of the node it was taken from.
	Actor string
}

// Backup streams a consistent snapshot of the agent's database, a plain
// SQLite file, into w (GET /v1/admin/backup). A stream cut short is an
// error. An admin route, like Reload.
func (c *Client) Backup(ctx context.Context, w io.Writer) (*BackupInfo, error) {
	resp, err := c.get(ctx, "/v1/admin/backup")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, readError(resp)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return nil, fmt.Errorf("client: backup: after %d bytes: %w", n, err)
	}
	if resp.ContentLength >= 0 && n != resp.ContentLength {
		return nil, fmt.Errorf("client: backup: got %d of %d bytes", n, resp.ContentLength)
	}
	return &BackupInfo{Bytes: n, Actor: resp.Header.Get(api.BackupActorHeader)}, nil
}
