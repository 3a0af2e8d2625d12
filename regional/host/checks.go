package host

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/patina-db/patina/regional"
)

// A check run times out after its interval, within these bounds. Runs
// never overlap: the next is timed from the end of the last.
const (
	minCheckTimeout = time.Second
	maxCheckTimeout = 5 * time.Second
)

// minCheckInterval is the shortest interval a check may ask for.
const minCheckInterval = 50 * time.Millisecond

// Bounds on what a machine's spec may ask for, so that one record always
// fits a publish transaction with room to spare (see publishBatches).
const (
	maxCheckInterval = 24 * time.Hour
	maxChecks        = 16
	maxCheckName     = 63
	maxCheckPath     = 1024
	maxImage         = 1024
)

// maxOutput bounds a check's published output.
const maxOutput = 200

// Outputs of checks that have no result of their own: the machine does
// not run, or it has just started and the check has yet to run. Either
// is critical; a check's first result replaces them whatever its status.
const (
	outputNotRunning = "machine is not running"
	outputNotChecked = "not checked since the machine started"
)

// checkResult is one run's outcome.
type checkResult struct {
	status string
	output string
}

// newCheckClient is the HTTP client checks use: no connection reuse, so
// a check sees a server that stopped at once, and no redirects followed,
// so only the answer of the checked path counts.
func newCheckClient() *http.Client {
	return &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// runCheck runs c once against address:port: an HTTP GET of c.Path
// passes on a 2xx answer, a TCP check passes when it connects.
func runCheck(ctx context.Context, hc *http.Client, address string, port int, c regional.Check) checkResult {
	timeout := min(max(c.Interval(), minCheckTimeout), maxCheckTimeout)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	target := net.JoinHostPort(address, strconv.Itoa(port))
	switch c.Kind {
	case "tcp":
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", target)
		if err != nil {
			return checkResult{regional.CheckCritical, shorten(err.Error())}
		}
		conn.Close()
		return checkResult{regional.CheckPassing, "connected"}
	default:
		path := c.Path
		if path == "" {
			path = "/"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+target+path, nil)
		if err != nil {
			return checkResult{regional.CheckCritical, shorten(err.Error())}
		}
		req.Header.Set("User-Agent", "patina-host-check")
		resp, err := hc.Do(req)
		if err != nil {
			return checkResult{regional.CheckCritical, shorten(err.Error())}
		}
		resp.Body.Close()
		out := fmt.Sprintf("HTTP %d", resp.StatusCode)
		if resp.StatusCode >= 200 && resp.StatusCode < 300 {
			return checkResult{regional.CheckPassing, out}
		}
		return checkResult{regional.CheckCritical, out}
	}
}

func shorten(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > maxOutput {
		return s[:maxOutput-3] + "..."
	}
	return s
}

// startChecks starts one loop per check of m for its current start.
// Called with h.mu held.
func (h *Host) startChecks(m *machine) {
	ctx, cancel := context.WithCancel(h.ctx)
	m.stopChecks = cancel
	// Host-wide, so that a loop of a destroyed machine cannot pass for
	// one of a new machine given the same id.
	h.lastGen++
	m.gen = h.lastGen
	for _, c := range m.rec.Checks {
		h.wg.Add(1)
		go h.checkLoop(ctx, m.rec.ID, m.gen, m.rec.Address, m.rec.Port, c)
	}
}

// stopMachine stops m's server and check loops. Called with h.mu held;
// the loops finish on their own (their results are stale by then).
func (h *Host) stopMachine(m *machine) {
	m.gen = 0 // no start's
	if m.stopChecks != nil {
		m.stopChecks()
		m.stopChecks = nil
	}
	if m.server != nil {
		m.server.close()
		m.server = nil
	}
	m.listenErr = nil
}

// checkLoop runs check c at once, then every interval, until ctx ends.
func (h *Host) checkLoop(ctx context.Context, id string, gen uint64, address string, port int, c regional.Check) {
	defer h.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		res := runCheck(ctx, h.checkClient, address, port, c)
		if ctx.Err() != nil {
			return
		}
		h.checkResult(id, gen, c.Name, res)
		t.Reset(c.Interval())
	}
}

// checkResult records a check's outcome. Only a change of status changes
// the record (a new output alone does not), so a steady check consumes
// no version in the regional cluster; but the first result after a start
// replaces the placeholder, so that a failing check says why.
func (h *Host) checkResult(id string, gen uint64, name string, res checkResult) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m, ok := h.machines[id]
	if !ok || m.gen != gen || m.rec.State != regional.StateStarted || h.closed {
		return
	}
	if m.listenErr != nil {
		return // not this machine: resume recorded why its checks fail
	}
	i := checkIndex(m.rec.Checks, name)
	if i < 0 {
		return
	}
	if cur := m.rec.Checks[i]; cur.Status == res.status && cur.Output != outputNotChecked && cur.Output != outputNotRunning {
		return
	}
	next := cloneMachine(m.rec)
	now := h.stamp()
	next.Checks[i].Status, next.Checks[i].Output, next.Checks[i].UpdatedAt = res.status, res.output, now
	next.UpdatedAt = now
	if err := h.db.put(&next); err != nil {
		h.log.Error("host: check result not stored", "machine", id, "check", name, "err", err)
		return
	}
	h.log.Info("check status changed", "machine", id, "check", name, "from", m.rec.Checks[i].Status, "to", res.status, "output", res.output)
	m.rec = next
	h.pub.enqueue(next)
}

func checkIndex(checks []regional.Check, name string) int {
	for i, c := range checks {
		if c.Name == name {
			return i
		}
	}
	return -1
}
