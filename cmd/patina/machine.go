package main

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/regional"
	"github.com/patina-db/patina/regional/host"
)

// hostAPIFlags are taken by every command that talks to a host agent.
func hostAPIFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "host-api", Value: "http://127.0.0.1:8090", Usage: "host agent API address", EnvVars: []string{"PATINA_HOST_API"}},
		&cli.StringFlag{Name: "token", Usage: "host API bearer token", EnvVars: []string{"PATINA_HOST_TOKEN", "PATINA_TOKEN"}},
	}
}

func newHostClient(c *cli.Context) (*host.Client, error) {
	return host.NewClient(c.String("host-api"), c.String("token"))
}

func machineCommand() *cli.Command {
	return &cli.Command{
		Name:  "machine",
		Usage: "create, start, stop, destroy and list a host agent's machines",
		Subcommands: []*cli.Command{
			{
				Name:  "create",
				Usage: "create a machine",
				Flags: append(hostAPIFlags(),
					&cli.StringFlag{Name: "app", Usage: "the machine's app", Required: true},
					&cli.StringFlag{Name: "id", Usage: "machine id (default: 16 random hex characters)"},
					&cli.StringFlag{Name: "image", Usage: "image name, recorded and published"},
					&cli.IntFlag{Name: "port", Usage: "port to listen on (default: a free one, kept)"},
					&cli.StringSliceFlag{Name: "check", Usage: "health check KIND[:PATH][@INTERVAL], e.g. http:/healthz@5s or tcp (repeatable)"},
					&cli.BoolFlag{Name: "start", Usage: "start it at once"},
					&cli.BoolFlag{Name: "json", Usage: "print the record as JSON"},
				),
				Action: func(c *cli.Context) error {
					spec := host.MachineSpec{ID: c.String("id"), App: c.String("app"), Image: c.String("image"), Port: c.Int("port"), Start: c.Bool("start")}
					for _, s := range c.StringSlice("check") {
						check, err := host.ParseCheckSpec(s)
						if err != nil {
							return cli.Exit(err.Error(), 2)
						}
						spec.Checks = append(spec.Checks, check)
					}
					hc, err := newHostClient(c)
					if err != nil {
						return err
					}
					m, err := hc.Create(c.Context, spec)
					if err != nil {
						return err
					}
					return printMachine(c, "created", m)
				},
			},
			machineAction("start", "start a machine", (*host.Client).Start),
			machineAction("stop", "stop a machine", (*host.Client).Stop),
			machineAction("destroy", "destroy a machine", (*host.Client).Destroy),
			{
				Name:  "list",
				Usage: "list the host's machines",
				Flags: append(hostAPIFlags(), &cli.BoolFlag{Name: "json", Usage: "print the records as JSON"},
					&cli.StringFlag{Name: "app", Usage: "only this app's machines"},
					&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "only the ids, one per line"}),
				Action: func(c *cli.Context) error {
					hc, err := newHostClient(c)
					if err != nil {
						return err
					}
					machines, err := hc.List(c.Context)
					if err != nil {
						return err
					}
					if app := c.String("app"); app != "" {
						machines = slices.DeleteFunc(machines, func(m regional.Machine) bool { return m.App != app })
					}
					if c.Bool("quiet") {
						for _, m := range machines {
							fmt.Fprintln(c.App.Writer, m.ID)
						}
						return nil
					}
					if c.Bool("json") {
						enc := json.NewEncoder(c.App.Writer)
						enc.SetIndent("", "  ")
						return enc.Encode(machines)
					}
					tw := tabwriter.NewWriter(c.App.Writer, 0, 0, 2, ' ', 0)
					fmt.Fprintln(tw, "ID\tAPP\tSTATE\tADDRESS\tCHECKS\tUPDATED")
					for _, m := range machines {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s:%d\t%s\t%s\n", m.ID, m.App, m.State, m.Address, m.Port, checkSummary(m),
							time.UnixMilli(m.UpdatedAt).UTC().Format(time.RFC3339))
					}
					return tw.Flush()
				},
			},
		},
	}
}

// machineAction is a subcommand taking one machine id.
func machineAction(name, usage string, call func(*host.Client, context.Context, string) (regional.Machine, error)) *cli.Command {
	return &cli.Command{
		Name:      name,
		Usage:     usage,
		ArgsUsage: "ID",
		Flags:     append(hostAPIFlags(), &cli.BoolFlag{Name: "json", Usage: "print the record as JSON"}),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit(fmt.Sprintf("machine %s: want one machine id (flags go before it)", name), 2)
			}
			hc, err := newHostClient(c)
			if err != nil {
				return err
			}
			m, err := call(hc, c.Context, c.Args().First())
			if err != nil {
				return err
			}
			return printMachine(c, name, m)
		},
	}
}

func printMachine(c *cli.Context, verb string, m regional.Machine) error {
	if c.Bool("json") {
		enc := json.NewEncoder(c.App.Writer)
		enc.SetIndent("", "  ")
		return enc.Encode(m)
	}
	_, err := fmt.Fprintf(c.App.Writer, "%s %s: app %s, %s:%d, %s%s\n", verb, m.ID, m.App, m.Address, m.Port, m.State, checksPart(m))
	return err
}

func checksPart(m regional.Machine) string {
	if len(m.Checks) == 0 {
		return ""
	}
	return ", checks " + checkSummary(m)
}

func checkSummary(m regional.Machine) string {
	if len(m.Checks) == 0 {
		return "-"
	}
	parts := make([]string, len(m.Checks))
	for i, ch := range m.Checks {
		parts[i] = ch.Name + "=" + ch.Status
	}
	return strings.Join(parts, ",")
}
