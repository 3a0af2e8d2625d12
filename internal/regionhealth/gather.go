package regionhealth

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/api"
	globalv1 "github.com/patina-db/patina/proto/patina/global/v1"
)

// Tables are the regional tables whose row counts are compared.
var Tables = []string{"machines", "machine_checks"}

// Options say how to reach the agents.
type Options struct {
	// Token is the regional agents' bearer token.
	Token string
	// Timeout bounds each agent's answers (default 3s).
	Timeout time.Duration
	Limits  Limits
	// Now is the clock heartbeats are aged by (default time.Now).
	Now func() time.Time
}

// Regions gathers and judges every region of the global directory (or
// only the one named, when only is not empty), asking am for the
// directory and the app map.
func Regions(ctx context.Context, am globalv1.AppMapClient, only string, o Options) ([]Report, error) {
	dir, err := am.ListRegions(ctx, &globalv1.ListRegionsRequest{})
	if err != nil {
		return nil, fmt.Errorf("region health: the global directory: %w", err)
	}
	apps, err := globalApps(ctx, am)
	if err != nil {
		return nil, fmt.Errorf("region health: the global map: %w", err)
	}
	var out []Report
	for _, r := range dir.GetRegions() {
		if only != "" && r.GetName() != only {
			continue
		}
		out = append(out, Region(ctx, r.GetName(), r.GetApi(), r.GetBridgeHeartbeat(), apps[r.GetName()], o))
	}
	if only != "" && len(out) == 0 {
		return nil, fmt.Errorf("region health: region %q is not in the global directory", only)
	}
	return out, nil
}

// globalApps counts the apps the global map lists in each region.
func globalApps(ctx context.Context, am globalv1.AppMapClient) (map[string]int, error) {
	counts := map[string]int{}
	tok := ""
	for {
		resp, err := am.ListApps(ctx, &globalv1.ListAppsRequest{PageSize: 1000, PageToken: tok})
		if err != nil {
			return nil, err
		}
		for _, a := range resp.GetApps() {
			for _, r := range a.GetRegions() {
				counts[r.GetRegion()]++
			}
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			return counts, nil
		}
	}
}

// Region gathers one region's report from its agents (apis: any of its
// agents' HTTP APIs; the others are found through membership) and judges
// it. heartbeatMS is the bridge's last heartbeat (0: never); appsGlobal
// how many apps the global map lists in the region.
func Region(ctx context.Context, name string, apis []string, heartbeatMS int64, appsGlobal int, o Options) Report {
	if o.Timeout == 0 {
		o.Timeout = 3 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Limits == (Limits{}) {
		o.Limits = DefaultLimits()
	}
	r := Report{Region: name, BridgeHeartbeatAge: -1, AppsGlobal: appsGlobal, AppsRegion: -1}
	if heartbeatMS > 0 {
		r.BridgeHeartbeatAge = max(0, o.Now().Sub(time.UnixMilli(heartbeatMS)).Seconds())
	}
	members, errs := membersOf(ctx, apis, o)
	if members == nil {
		for i, a := range apis {
			r.Agents = append(r.Agents, Agent{Name: a, API: a, State: "unknown", Error: errs[i].Error()})
		}
		Judge(&r, o.Limits)
		return r
	}
	for _, m := range members {
		switch m.State {
		case "alive":
			r.Alive++
		case "suspect":
			r.Suspect++
		default:
			r.Dead++
		}
		r.Agents = append(r.Agents, Agent{Name: m.Name, API: "http://" + m.Addrs.API, State: m.State})
	}
	var wg sync.WaitGroup
	for i := range r.Agents {
		a := &r.Agents[i]
		// A suspect agent is asked too: it is one this agent's data plane
		// cannot reach, and its API may still answer.
		if a.State != "alive" && a.State != "suspect" {
			a.Error = "not alive"
			continue
		}
		wg.Go(func() { agentFigures(ctx, a, o) })
	}
	wg.Wait()
	var answering []Agent
	for _, a := range r.Agents {
		if a.Error == "" {
			answering = append(answering, a)
		}
	}
	r.Tables = tableRows(answering)
	if len(answering) > 0 {
		if n, err := regionApps(ctx, answering[0].API, o); err == nil {
			r.AppsRegion = n
		}
		r.Hosts = regionHosts(ctx, answering[0].API, o)
	}
	Judge(&r, o.Limits)
	return r
}

// membersOf asks the given agents, in turn, for the region's members;
// when none answers, nil and each one's error.
func membersOf(ctx context.Context, apis []string, o Options) ([]api.Member, []error) {
	errs := make([]error, len(apis))
	for i, a := range apis {
		c, err := client.New(a, o.Token)
		if err != nil {
			errs[i] = err
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, o.Timeout)
		ms, err := c.Members(cctx)
		cancel()
		if err == nil {
			sort.Slice(ms, func(i, j int) bool { return ms[i].Name < ms[j].Name })
			if ms == nil {
				ms = []api.Member{}
			}
			return ms, nil
		}
		errs[i] = err
	}
	return nil, errs
}

// agentFigures reads one agent's health and row counts.
func agentFigures(ctx context.Context, a *Agent, o Options) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	c, err := client.New(a.API, o.Token)
	if err != nil {
		a.Error = err.Error()
		return
	}
	h, err := c.Health(ctx, "")
	if err != nil {
		a.Error = err.Error()
		return
	}
	a.Head, a.Gaps, a.P99Lag, a.QueueSize = h.Head, h.Gaps, h.P99Lag, h.QueueSize
	parts := make([]string, len(Tables))
	for i, t := range Tables {
		parts[i] = fmt.Sprintf("(SELECT count(*) FROM %s)", t)
	}
	counts, err := queryInts(ctx, c, "SELECT "+strings.Join(parts, ", "))
	if err != nil {
		a.Error = err.Error()
		return
	}
	a.Rows = map[string]int64{}
	for i, t := range Tables {
		a.Rows[t] = counts[i]
	}
}

// regionApps counts the apps the region's own tables hold.
func regionApps(ctx context.Context, apiURL string, o Options) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	c, err := client.New(apiURL, o.Token)
	if err != nil {
		return 0, err
	}
	n, err := queryInts(ctx, c, "SELECT count(DISTINCT app) FROM machines WHERE state != 'destroyed'")
	if err != nil {
		return 0, err
	}
	return int(n[0]), nil
}

// regionHosts reads the hosts table; nil when it cannot (a schema
// without one, or an agent that stopped answering meanwhile).
func regionHosts(ctx context.Context, apiURL string, o Options) []Host {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	c, err := client.New(apiURL, o.Token)
	if err != nil {
		return nil
	}
	rows, err := c.Query(ctx, client.Statement{Query: "SELECT name, seen_at, republish_ms FROM hosts ORDER BY name"})
	if err != nil {
		return nil
	}
	defer rows.Close()
	now := o.Now()
	out := []Host{}
	for rows.Next() {
		row := rows.Row()
		name, _ := row[0].(string)
		seen, ok1 := row[1].(int64)
		ms, ok2 := row[2].(int64)
		if !ok1 || !ok2 {
			return nil
		}
		out = append(out, Host{Name: name, Age: max(0, now.Sub(time.UnixMilli(seen)).Seconds()), Interval: float64(ms) / 1000})
	}
	if rows.Err() != nil {
		return nil
	}
	return out
}

// queryInts runs a one-row query of integers.
func queryInts(ctx context.Context, c *client.Client, q string) ([]int64, error) {
	rows, err := c.Query(ctx, client.Statement{Query: q})
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s: no row", q)
	}
	var out []int64
	for _, v := range rows.Row() {
		n, ok := v.(int64)
		if !ok {
			return nil, fmt.Errorf("%s: %T is not an integer", q, v)
		}
		out = append(out, n)
	}
	return out, nil
}
