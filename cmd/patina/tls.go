package main

import (
	"fmt"
	"net"

	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/internal/cluster"
)

func tlsCommand() *cli.Command {
	return &cli.Command{
		Name:  "tls",
		Usage: "create the cluster CA and node certificates for mutual TLS",
		Subcommands: []*cli.Command{
			{
				Name:  "ca",
				Usage: "create a cluster CA: DIR/ca.pem and DIR/ca-key.pem",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "out", Usage: "directory to write to", Required: true},
					&cli.StringFlag{Name: "name", Value: "patina cluster CA", Usage: "CA common name"},
				},
				Action: func(c *cli.Context) error {
					ca, err := cluster.NewCA(c.String("name"))
					if err != nil {
						return err
					}
					if err := ca.Write(c.String("out")); err != nil {
						return cli.Exit(err.Error(), 1)
					}
					fmt.Fprintf(c.App.Writer, "wrote %s/ca.pem and %s/ca-key.pem (keep the key private)\n", c.String("out"), c.String("out"))
					return nil
				},
			},
			{
				Name:  "cert",
				Usage: "issue a node certificate: DIR/NAME.pem and DIR/NAME-key.pem",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "ca", Usage: "directory holding ca.pem and ca-key.pem", Required: true},
					&cli.StringFlag{Name: "name", Usage: "node name", Required: true},
					&cli.StringSliceFlag{Name: "ip", Usage: "IP address the node is reached at (repeatable)"},
					&cli.StringSliceFlag{Name: "dns", Usage: "DNS name the node is reached at (repeatable)"},
					&cli.StringFlag{Name: "out", Usage: "directory to write to", Required: true},
				},
				Action: func(c *cli.Context) error {
					ca, err := cluster.LoadCA(c.String("ca"))
					if err != nil {
						return cli.Exit(err.Error(), 1)
					}
					var ips []net.IP
					for _, s := range splitList(c.StringSlice("ip")) {
						ip := net.ParseIP(s)
						if ip == nil {
							return cli.Exit(fmt.Sprintf("--ip %q is not an IP address", s), 2)
						}
						ips = append(ips, ip)
					}
					nc, err := ca.Issue(c.String("name"), ips, splitList(c.StringSlice("dns")))
					if err != nil {
						return cli.Exit(err.Error(), 1)
					}
					if err := nc.Write(c.String("out"), c.String("name")); err != nil {
						return cli.Exit(err.Error(), 1)
					}
					fmt.Fprintf(c.App.Writer, "wrote %s/%s.pem and %s/%s-key.pem\n", c.String("out"), c.String("name"), c.String("out"), c.String("name"))
					return nil
				},
			},
		},
	}
}
