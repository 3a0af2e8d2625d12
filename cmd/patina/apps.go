package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/patina-db/patina/internal/rpc"
	globalv1 "github.com/patina-db/patina/proto/patina/global/v1"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
)

func grpcFlags(name, env, usage string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: name, Usage: usage, EnvVars: []string{env}},
		&cli.StringFlag{Name: "grpc-token", Usage: "gRPC bearer token", EnvVars: []string{"PATINA_GRPC_TOKEN"}},
		&cli.StringFlag{Name: "grpc-ca", Usage: "CA certificate to dial gRPC with TLS", EnvVars: []string{"PATINA_GRPC_CA"}},
		&cli.BoolFlag{Name: "json", Usage: "print JSON"},
	}
}

func dialFlag(c *cli.Context, name string) (*grpc.ClientConn, error) {
	addr := c.String(name)
	if addr == "" {
		return nil, cli.Exit(fmt.Sprintf("--%s is required (host:port of a gRPC endpoint)", name), 2)
	}
	return rpc.Dial(addr, rpc.DialOptions{Token: c.String("grpc-token"), CAFile: c.String("grpc-ca")})
}

func appsCommand() *cli.Command {
	return &cli.Command{
		Name:      "apps",
		Usage:     "the global map: every app and the regions it runs in, or one app",
		ArgsUsage: "[APP]",
		Flags:     grpcFlags("global", "PATINA_GLOBAL", "gRPC address of a global agent"),
		Action: func(c *cli.Context) error {
			cc, err := dialFlag(c, "global")
			if err != nil {
				return err
			}
			defer cc.Close()
			am := globalv1.NewAppMapClient(cc)
			var apps []*globalv1.App
			if app := c.Args().First(); app != "" {
				a, err := am.GetApp(c.Context, &globalv1.GetAppRequest{App: app})
				if err != nil {
					return cli.Exit(err.Error(), 1)
				}
				apps = append(apps, a)
			} else {
				tok := ""
				for {
					resp, err := am.ListApps(c.Context, &globalv1.ListAppsRequest{PageSize: 1000, PageToken: tok})
					if err != nil {
						return cli.Exit(err.Error(), 1)
					}
					apps = append(apps, resp.GetApps()...)
					if tok = resp.GetNextPageToken(); tok == "" {
						break
					}
				}
			}
			if c.Bool("json") {
				return writeJSONLines(c, apps)
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "APP\tREGION\tMACHINES\tHEALTHY\tUPDATED")
			for _, a := range apps {
				for _, r := range a.GetRegions() {
					fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\n", a.GetName(), r.GetRegion(), r.GetMachineCount(), r.GetHealthyCount(),
						time.UnixMilli(r.GetUpdatedAt()).UTC().Format(time.RFC3339))
				}
			}
			return tw.Flush()
		},
	}
}

func machinesCommand() *cli.Command {
	return &cli.Command{
		Name:  "machines",
		Usage: "an app's machines in one region, from that region's Lookup service",
		Flags: append(grpcFlags("lookup", "PATINA_LOOKUP", "gRPC address of a regional agent (or use --global and --region)"),
			&cli.StringFlag{Name: "app", Usage: "the app", Required: true},
			&cli.StringFlag{Name: "region", Usage: "ask this region, found in the global directory (needs --global)"},
			&cli.StringFlag{Name: "global", Usage: "gRPC address of a global agent", EnvVars: []string{"PATINA_GLOBAL"}},
			&cli.BoolFlag{Name: "healthy", Usage: "only healthy machines"},
		),
		Action: func(c *cli.Context) error {
			flag := "lookup"
			if region := c.String("region"); region != "" {
				addr, err := regionLookup(c, region)
				if err != nil {
					return err
				}
				if err := c.Set("lookup", addr); err != nil {
					return err
				}
			} else if c.String("lookup") == "" {
				return cli.Exit("--lookup, or --region with --global, is required", 2)
			}
			cc, err := dialFlag(c, flag)
			if err != nil {
				return err
			}
			defer cc.Close()
			resp, err := regionalv1.NewLookupClient(cc).ListMachines(c.Context, &regionalv1.ListMachinesRequest{App: c.String("app"), HealthyOnly: c.Bool("healthy")})
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			if c.Bool("json") {
				return writeJSONLines(c, resp.GetMachines())
			}
			tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "ID\tREGION\tHOST\tADDRESS\tSTATE\tHEALTHY\tCHECKS")
			for _, m := range resp.GetMachines() {
				var checks []string
				for _, ch := range m.GetChecks() {
					checks = append(checks, ch.GetName()+"="+ch.GetStatus())
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s:%d\t%s\t%v\t%s\n", m.GetId(), m.GetRegion(), m.GetHost(), m.GetAddress(), m.GetPort(),
					m.GetState(), m.GetHealthy(), strings.Join(checks, ","))
			}
			return tw.Flush()
		},
	}
}

// regionLookup finds a region's first Lookup endpoint in the global
// directory.
func regionLookup(c *cli.Context, region string) (string, error) {
	cc, err := dialFlag(c, "global")
	if err != nil {
		return "", err
	}
	defer cc.Close()
	resp, err := globalv1.NewAppMapClient(cc).ListRegions(c.Context, &globalv1.ListRegionsRequest{})
	if err != nil {
		return "", cli.Exit(err.Error(), 1)
	}
	for _, r := range resp.GetRegions() {
		if r.GetName() == region {
			if len(r.GetLookup()) == 0 {
				return "", cli.Exit(fmt.Sprintf("region %s lists no Lookup endpoints", region), 1)
			}
			return r.GetLookup()[0], nil
		}
	}
	return "", cli.Exit(fmt.Sprintf("region %s is not in the global directory", region), 1)
}

// writeJSONLines prints one protojson object per line.
func writeJSONLines[M interface{ ProtoReflect() protoreflect.Message }](c *cli.Context, ms []M) error {
	for _, m := range ms {
		data, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
		if err != nil {
			return err
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, data); err != nil {
			return err
		}
		if _, err := fmt.Fprintf(c.App.Writer, "%s\n", buf.Bytes()); err != nil {
			return err
		}
	}
	return nil
}
