package host

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/patina-db/patina/regional"
)

// Client talks to a host agent's API.
type Client struct {
	base  string
	token string
	http  *http.Client
}

// NewClient returns a client for the host API at baseURL (http://host:port).
func NewClient(baseURL, token string) (*Client, error) {
	baseURL = strings.TrimRight(baseURL, "/")
	if !strings.HasPrefix(baseURL, "http://") && !strings.HasPrefix(baseURL, "https://") {
		return nil, fmt.Errorf("host client: API address %q: want http://host:port", baseURL)
	}
	return &Client{base: baseURL, token: token, http: &http.Client{}}, nil
}

// APIError is a request the host refused, with its status and message.
type APIError struct {
	Status  int
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// Create creates a machine.
func (c *Client) Create(ctx context.Context, spec MachineSpec) (regional.Machine, error) {
	var m regional.Machine
	err := c.do(ctx, http.MethodPost, "/v1/machines", spec, &m)
	return m, err
}

// Get returns one machine.
func (c *Client) Get(ctx context.Context, id string) (regional.Machine, error) {
	var m regional.Machine
	err := c.do(ctx, http.MethodGet, "/v1/machines/"+url.PathEscape(id), nil, &m)
	return m, err
}

// List returns every machine of the host.
func (c *Client) List(ctx context.Context) ([]regional.Machine, error) {
	var out ListResponse
	err := c.do(ctx, http.MethodGet, "/v1/machines", nil, &out)
	return out.Machines, err
}

// Start starts a machine.
func (c *Client) Start(ctx context.Context, id string) (regional.Machine, error) {
	var m regional.Machine
	err := c.do(ctx, http.MethodPost, "/v1/machines/"+url.PathEscape(id)+"/start", nil, &m)
	return m, err
}

// Stop stops a machine.
func (c *Client) Stop(ctx context.Context, id string) (regional.Machine, error) {
	var m regional.Machine
	err := c.do(ctx, http.MethodPost, "/v1/machines/"+url.PathEscape(id)+"/stop", nil, &m)
	return m, err
}

// Destroy destroys a machine.
func (c *Client) Destroy(ctx context.Context, id string) (regional.Machine, error) {
	var m regional.Machine
	err := c.do(ctx, http.MethodDelete, "/v1/machines/"+url.PathEscape(id), nil, &m)
	return m, err
}

// Republish makes the host re-publish every record now.
func (c *Client) Republish(ctx context.Context) (RepublishStats, error) {
	var s RepublishStats
	err := c.do(ctx, http.MethodPost, "/v1/republish", nil, &s)
	return s, err
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("host client: encode request: %w", err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return fmt.Errorf("host client: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("host client: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return fmt.Errorf("host client: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		var e ErrorResponse
		if json.Unmarshal(data, &e) == nil && e.Error != "" {
			return &APIError{Status: resp.StatusCode, Message: e.Error}
		}
		return &APIError{Status: resp.StatusCode, Message: strings.TrimSpace(string(data))}
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("host client: %s %s: %w", method, path, err)
	}
	return nil
}

// ParseCheckSpec reads a check as the CLI writes it:
// KIND[:PATH][@INTERVAL], e.g. "http", "http:/healthz@5s", "tcp@2s".
func ParseCheckSpec(s string) (CheckSpec, error) {
	var spec CheckSpec
	rest, interval, hasInterval := strings.Cut(s, "@")
	if hasInterval {
		d, err := time.ParseDuration(interval)
		if err != nil || d < time.Millisecond {
			return CheckSpec{}, fmt.Errorf("check %q: interval %q: want a duration of at least 1ms, like 5s", s, interval)
		}
		spec.IntervalMS = d.Milliseconds()
	}
	spec.Kind, spec.Path, _ = strings.Cut(rest, ":")
	switch spec.Kind {
	case "http", "tcp":
	default:
		return CheckSpec{}, fmt.Errorf("check %q: kind %q: want http[:PATH][@INTERVAL] or tcp[@INTERVAL]", s, spec.Kind)
	}
	return spec, nil
}
