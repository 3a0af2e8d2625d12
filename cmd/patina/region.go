package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/internal/devcluster/topology"
	"github.com/patina-db/patina/internal/regionhealth"
	globalv1 "github.com/patina-db/patina/proto/patina/global/v1"
)

func regionCommand() *cli.Command {
	return &cli.Command{
		Name:  "region",
		Usage: "operator views of regions",
		Subcommands: []*cli.Command{{
			Name:  "health",
			Usage: "every region's agents, lag, table agreement, bridge heartbeat and app count; exit 0 healthy, 1 degraded, 2 down",
			Flags: append(grpcFlags("global", "PATINA_GLOBAL", "gRPC address of a global agent"),
				&cli.StringFlag{Name: "endpoints", Usage: "endpoints.json of `patina dev` (instead of --global)"},
				&cli.StringFlag{Name: "region", Usage: "only this region"},
				&cli.StringFlag{Name: "token", Usage: "regional agents' API bearer token", EnvVars: []string{"PATINA_TOKEN"}},
				&cli.DurationFlag{Name: "timeout", Value: 3 * time.Second, Usage: "how long each agent may take to answer"},
				&cli.DurationFlag{Name: "heartbeat-max-age", Value: 30 * time.Second, Usage: "oldest acceptable bridge heartbeat"},
				&cli.Int64Flag{Name: "max-row-deviation", Value: 0, Usage: "largest acceptable spread of a table's row count across agents"},
				&cli.Float64Flag{Name: "max-lag", Value: 5, Usage: "largest acceptable p99 replication lag, seconds"},
			),
			Action: regionHealth,
		}},
	}
}

func regionHealth(c *cli.Context) error {
	if f := c.String("endpoints"); f != "" && c.String("global") == "" {
		addr, err := globalFromEndpoints(f)
		if err != nil {
			return cli.Exit(err.Error(), 2)
		}
		if err := c.Set("global", addr); err != nil {
			return err
		}
	}
	if c.String("global") == "" {
		return cli.Exit("--global (a global agent's gRPC address) or --endpoints (patina dev's endpoints.json) is required", 2)
	}
	cc, err := dialFlag(c, "global")
	if err != nil {
		return err
	}
	defer cc.Close()
	limits := regionhealth.Limits{
		HeartbeatMaxAge: c.Duration("heartbeat-max-age"), MaxRowDeviation: c.Int64("max-row-deviation"), MaxLag: c.Float64("max-lag"),
	}
	reports, err := regionhealth.Regions(c.Context, globalv1.NewAppMapClient(cc), c.String("region"),
		regionhealth.Options{Token: c.String("token"), Timeout: c.Duration("timeout"), Limits: limits})
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	if c.Bool("json") {
		if err := json.NewEncoder(c.App.Writer).Encode(map[string]any{"regions": reports, "verdict": regionhealth.Worst(reports)}); err != nil {
			return err
		}
	} else {
		printHealth(c.App.Writer, reports)
	}
	if code := regionhealth.ExitCode(regionhealth.Worst(reports)); code != 0 {
		return cli.Exit("", code)
	}
	return nil
}

func globalFromEndpoints(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	var e topology.Endpoints
	if err := json.Unmarshal(data, &e); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	if len(e.Global.Agents) == 0 || e.Global.Agents[0].GRPC == "" {
		return "", fmt.Errorf("%s lists no global agent with a gRPC address", path)
	}
	return e.Global.Agents[0].GRPC, nil
}

func printHealth(w io.Writer, reports []regionhealth.Report) {
	for i, r := range reports {
		if i > 0 {
			fmt.Fprintln(w)
		}
		hb := "never"
		if r.BridgeHeartbeatAge >= 0 {
			hb = fmt.Sprintf("%.0fs ago", r.BridgeHeartbeatAge)
		}
		fmt.Fprintf(w, "region %s: %d alive, %d suspect, %d dead; bridge heartbeat %s; apps %s in the global map, %s here\n",
			r.Region, r.Alive, r.Suspect, r.Dead, hb, count(r.AppsGlobal), count(r.AppsRegion))
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		header := []string{"AGENT", "STATE", "HEAD", "GAPS", "P99 LAG", "QUEUE"}
		tables := make([]string, 0, len(r.Tables))
		for _, t := range r.Tables {
			tables = append(tables, t.Table)
		}
		sort.Strings(tables)
		for _, t := range tables {
			header = append(header, strings.ToUpper(t))
		}
		fmt.Fprintln(tw, strings.Join(header, "\t"))
		for _, a := range r.Agents {
			if a.Error != "" {
				fmt.Fprintf(tw, "%s\t%s\t-\t-\t-\t-\t%s\n", a.Name, a.State, a.Error)
				continue
			}
			line := fmt.Sprintf("%s\t%s\t%d\t%d\t%.3fs\t%d", a.Name, a.State, a.Head, a.Gaps, a.P99Lag, a.QueueSize)
			for _, t := range tables {
				line += fmt.Sprintf("\t%d", a.Rows[t])
			}
			fmt.Fprintln(tw, line)
		}
		tw.Flush()
		for _, t := range r.Tables {
			if t.Deviation > 0 {
				fmt.Fprintf(w, "  %s: row counts differ by %d\n", t.Table, t.Deviation)
			}
		}
		if r.Hosts != nil {
			var silent []string
			for _, h := range r.Hosts {
				if h.Silent() {
					silent = append(silent, fmt.Sprintf("%s (%.0fs)", h.Name, h.Age))
				}
			}
			line := fmt.Sprintf("  hosts: %d, publishing %d", len(r.Hosts), len(r.Hosts)-len(silent))
			if len(silent) > 0 {
				line += ", silent " + strings.Join(silent, ", ")
			}
			fmt.Fprintln(w, line)
		}
		verdict := r.Verdict
		if len(r.Reasons) > 0 {
			verdict += ": " + strings.Join(r.Reasons, "; ")
		}
		fmt.Fprintf(w, "%s %s\n", r.Region, verdict)
	}
}

func count(n int) string {
	if n < 0 {
		return "?"
	}
	return fmt.Sprint(n)
}
