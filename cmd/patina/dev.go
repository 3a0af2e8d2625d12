package main

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/internal/devcluster/edge"
	"github.com/patina-db/patina/internal/devcluster/topology"
)

func devCommand() *cli.Command {
	return &cli.Command{
		Name:  "dev",
		Usage: "run the whole two-tier topology on loopback until Ctrl-C",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data", Value: ".demo", Usage: "directory for every component's files and endpoints.json (emptied first)"},
			&cli.StringSliceFlag{Name: "regions", Value: cli.NewStringSlice("ams", "iad", "syd"), Usage: "regions to run"},
			&cli.IntFlag{Name: "agents-per-region", Value: 3, Usage: "agents in each regional cluster"},
			&cli.IntFlag{Name: "global-agents", Value: 3, Usage: "agents in the global cluster"},
			&cli.IntFlag{Name: "base-port", Value: 0, Usage: "first port to hand out (0: ephemeral ports)"},
			&cli.BoolFlag{Name: "verbose", Usage: "every component's log on stderr"},
			&cli.DurationFlag{Name: "restart-delay", Value: 500 * time.Millisecond, Usage: "with --processes: the wait before a child that exited is started again"},
			&cli.BoolFlag{Name: "processes", Usage: "every component in a child process of its own, restarted when it exits (logs in the data directory)"},
		},
		Action: func(c *cli.Context) error {
			dir := c.String("data")
			if err := os.RemoveAll(dir); err != nil {
				return fmt.Errorf("dev: %w", err)
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("dev: %w", err)
			}
			var log io.Writer = io.Discard
			if c.Bool("verbose") {
				log = c.App.ErrWriter
			}
			fmt.Fprintln(c.App.ErrWriter, "starting the topology...")
			binary := ""
			if c.Bool("processes") {
				exe, err := os.Executable()
				if err != nil {
					return fmt.Errorf("dev: %w", err)
				}
				binary = exe
			}
			// Each region's machines listen on a loopback address of their
			// own (127.0.1.1, 127.0.2.1, ...), so that answers tell regions
			// apart.
			addrs := map[string]string{}
			for i, r := range splitList(c.StringSlice("regions")) {
				addrs[r] = fmt.Sprintf("127.0.%d.1", i+1)
			}
			t, err := topology.Start(c.Context, topology.Options{
				Binary: binary, RestartDelay: c.Duration("restart-delay"), HostAddresses: addrs, Dir: dir, Regions: splitList(c.StringSlice("regions")), AgentsPerRegion: c.Int("agents-per-region"),
				GlobalAgents: c.Int("global-agents"), BasePort: c.Int("base-port"), Log: log,
			})
			if err != nil {
				return err
			}
			e, err := edge.Start(c.Context, t, log)
			if err != nil {
				return errors.Join(err, t.Stop())
			}
			printEndpoints(c.App.Writer, t.Endpoints(), dir)
			<-c.Context.Done()
			fmt.Fprintln(c.App.ErrWriter, "stopping...")
			return errors.Join(e.Stop(), t.Stop())
		},
	}
}

// printEndpoints prints the endpoint table.
func printEndpoints(w io.Writer, e topology.Endpoints, dir string) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REGION\tCOMPONENT\tNAME\tHTTP\tGRPC")
	for _, a := range e.Global.Agents {
		fmt.Fprintf(tw, "global\tagent\t%s\t%s\t%s\n", a.Name, a.API, a.GRPC)
	}
	for _, name := range sortedKeys(e.Regions) {
		r := e.Regions[name]
		for _, a := range r.Agents {
			fmt.Fprintf(tw, "%s\tagent\t%s\t%s\t%s\n", name, a.Name, a.API, a.GRPC)
		}
		for _, h := range r.Hosts {
			fmt.Fprintf(tw, "%s\thost\t%s\t%s\t\n", name, h.Name, h.API)
		}
		if r.DNS != "" {
			fmt.Fprintf(tw, "%s\tdns\t%s-dns\t%s (udp, tcp)\t\n", name, name, r.DNS)
		}
		if r.Proxy != "" {
			fmt.Fprintf(tw, "%s\tproxy\t%s-proxy\t%s\t\n", name, name, r.Proxy)
		}
		if r.Bridge.Name != "" {
			fmt.Fprintf(tw, "%s\tbridge\t%s\t\t\n", name, r.Bridge.Name)
		}
	}
	tw.Flush()
	abs, _ := filepath.Abs(filepath.Join(dir, "endpoints.json"))
	fmt.Fprintf(w, "\napps: %s\nendpoints: %s\n", strings.Join(e.Apps, ", "), abs)
	regions := sortedKeys(e.Regions)
	if len(e.Global.Agents) > 0 && len(regions) > 0 {
		bin := os.Args[0]
		r := e.Regions[regions[0]]
		fmt.Fprintf(w, "\ntry, in another terminal:\n")
		fmt.Fprintf(w, "  %s apps --global %s\n", bin, e.Global.Agents[0].GRPC)
		fmt.Fprintf(w, "  %s machines --global %s --region %s --app web\n", bin, e.Global.Agents[0].GRPC, regions[len(regions)-1])
		if len(r.Agents) > 0 {
			fmt.Fprintf(w, "  %s query --api %s 'SELECT id, app, host, state FROM machines'\n", bin, r.Agents[0].API)
		}
		if r.DNS != "" {
			host, port, _ := strings.Cut(r.DNS, ":")
			fmt.Fprintf(w, "  dig @%s -p %s web.internal +short          # web's healthy machines, nearest region first\n", host, port)
			fmt.Fprintf(w, "  dig @%s -p %s regions.web.internal TXT +short\n", host, port)
		}
		if r.Proxy != "" {
			fmt.Fprintf(w, "  curl -i -H 'Host: web.internal' %s/    # served by the nearest healthy machine\n", r.Proxy)
		}
		if len(r.Hosts) > 0 {
			fmt.Fprintf(w, "  %s machine list --host-api %s\n", bin, r.Hosts[0].API)
			fmt.Fprintf(w, "  %s machine create --host-api %s --app blog --start\n", bin, r.Hosts[0].API)
		}
	}
	fmt.Fprintln(w, "\nCtrl-C stops everything.")
}

func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
