package main

import (
	"encoding/json"
	"fmt"
	"sort"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
)

func clusterCommand() *cli.Command {
	return &cli.Command{
		Name:  "cluster",
		Usage: "inspect the cluster an agent belongs to",
		Subcommands: []*cli.Command{{
			Name:  "members",
			Usage: "membership as the agent sees it",
			Flags: append(apiFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"}),
			Action: func(c *cli.Context) error {
				cl, err := newClient(c)
				if err != nil {
					return err
				}
				members, err := cl.Members(c.Context)
				if err != nil {
					return cli.Exit(err.Error(), 1)
				}
				if c.Bool("json") {
					return json.NewEncoder(c.App.Writer).Encode(members)
				}
				sort.Slice(members, func(i, j int) bool { return members[i].Name < members[j].Name })
				tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tSTATE\tREGION\tACTOR\tGOSSIP\tQUIC\tAPI\tRTT")
				for _, m := range members {
					name := m.Name
					if m.Self {
						name += " (self)"
					}
					rtt := "-"
					if m.RTTSec > 0 {
						rtt = (time.Duration(m.RTTSec * float64(time.Second))).Round(time.Microsecond).String()
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", name, m.State, m.Region, short(m.ID), m.Addrs.Gossip, m.Addrs.QUIC, m.Addrs.API, rtt)
				}
				return tw.Flush()
			},
		}},
	}
}

func short(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
