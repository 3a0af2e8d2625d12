package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/internal/bench"
	"github.com/patina-db/patina/internal/sysmon"
	"github.com/patina-db/patina/schemas"
)

func regionFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "nodes", Value: 3, Usage: "agents in the region"},
		&cli.BoolFlag{Name: "in-process", Usage: "run the agents in this process instead of one process each"},
		&cli.StringFlag{Name: "dir", Usage: "working directory (default: a temporary one, removed after)"},
		&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
		&cli.IntFlag{Name: "procs", Usage: "GOMAXPROCS of each agent process (default: the machine's cores ÷ nodes, at least 1)"},
		&cli.StringFlag{Name: "agent-binary", Usage: "run the agents from this patina binary (default: this one), to compare two builds under one benchmark client"},
	}
}

// benchAction prepares the region options, runs a benchmark and prints
// its result, as JSON or through human.
func benchAction[R any](run func(c *cli.Context, opts bench.Options) (R, error), human func(c *cli.Context, r R)) cli.ActionFunc {
	return func(c *cli.Context) error {
		opts, cleanup, err := benchOptions(c)
		if err != nil {
			return err
		}
		defer cleanup()
		res, err := run(c, opts)
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
		return printResult(c, res, human)
	}
}

// printResult prints a benchmark's result as JSON (--json) or through
// human.
func printResult[R any](c *cli.Context, res R, human func(c *cli.Context, r R)) error {
	if c.Bool("json") {
		return json.NewEncoder(c.App.Writer).Encode(res)
	}
	human(c, res)
	return nil
}

func mode(processes bool, procs int) string {
	if processes {
		return fmt.Sprintf("one process per agent, GOMAXPROCS %d", procs)
	}
	return "agents in one process"
}

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "benchmarks against a region started on this machine",
		// The load generator shares the cores with what it measures; its
		// runtime monitor thread yields to them as the agents' do.
		Before: func(c *cli.Context) error {
			_, _ = sysmon.Batch(c.Context)
			return nil
		},
		Subcommands: []*cli.Command{
			{
				Name:  "propagation",
				Usage: "time writes from commit (and from request) to visibility on every node",
				Flags: append(regionFlags(),
					&cli.IntFlag{Name: "rate", Value: 100, Usage: "writes per second, spread over the agents"},
					&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "how long to write"},
					&cli.BoolFlag{Name: "stream", Usage: "send the writes over one transaction stream per agent instead of a request each"}),
				Action: benchAction(func(c *cli.Context, opts bench.Options) (*bench.PropagationResult, error) {
					return bench.Propagation(c.Context, bench.PropagationOptions{Options: opts, Rate: c.Int("rate"), Duration: c.Duration("duration"), Stream: c.Bool("stream")}, c.App.ErrWriter)
				}, func(c *cli.Context, res *bench.PropagationResult) {
					w := c.App.Writer
					how := "a request each"
					if res.Stream {
						how = "one stream per agent"
					}
					fmt.Fprintf(w, "propagation: %d nodes (%s), %d writes/s (%s) for %.0fs: %d writes as %d versions (%.0f/s achieved)\n",
						res.Nodes, mode(res.Processes, res.Procs), res.Rate, how, res.DurationSec, res.Writes, res.Versions, res.AchievedRate)
					fmt.Fprintf(w, "  visible on every node, from the commit   p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", res.CommitVisibleP50Ms, res.CommitVisibleP99Ms, res.CommitVisibleMaxMs)
					fmt.Fprintf(w, "  visible on every node, from the request  p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", res.VisibleP50Ms, res.VisibleP99Ms, res.VisibleMaxMs)
					fmt.Fprintf(w, "  write acknowledged                       p50 %.2f ms  p99 %.2f ms\n", res.AckP50Ms, res.AckP99Ms)
					fmt.Fprintf(w, "  applied (agents' p99)                    %.2f ms, the worst agent\n", res.ApplyLagP99Ms)
					fmt.Fprintf(w, "  data plane                               %.0f bytes sent per version\n", res.BytesPerVersion)
					if res.NotVisible > 0 {
						fmt.Fprintf(w, "  %d writes not visible everywhere within 30 s (in the quantiles as the time waited for them, a lower bound)\n", res.NotVisible)
					}
				}),
			},
			{
				Name:  "subscriptions",
				Usage: "time subscription events from the write, against plain propagation under the same load",
				Flags: append(regionFlags(),
					&cli.IntFlag{Name: "subscriptions", Value: 100, Usage: "subscriptions, one per app, spread over the agents"},
					&cli.IntFlag{Name: "rate", Value: 1000, Usage: "writes per second, spread over the agents and apps"},
					&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "how long each phase writes"}),
				Action: benchAction(func(c *cli.Context, opts bench.Options) (*bench.SubscriptionsResult, error) {
					return bench.Subscriptions(c.Context, bench.SubscriptionsOptions{Options: opts, Subscriptions: c.Int("subscriptions"), Rate: c.Int("rate"), Duration: c.Duration("duration")}, c.App.ErrWriter)
				}, func(c *cli.Context, res *bench.SubscriptionsResult) {
					w := c.App.Writer
					fmt.Fprintf(w, "subscriptions: %d nodes (%s), %d subscriptions, %d writes/s for %.0fs per phase (%.0f/s achieved)\n",
						res.Nodes, mode(res.Processes, res.Procs), res.Subscriptions, res.Rate, res.DurationSec, res.AchievedRate)
					fmt.Fprintf(w, "  applied, no subscriptions    p50 %.2f ms  p99 %.2f ms\n", res.BaselineP50Ms, res.BaselineP99Ms)
					fmt.Fprintf(w, "  applied, with subscriptions  p50 %.2f ms  p99 %.2f ms\n", res.AppliedP50Ms, res.AppliedP99Ms)
					fmt.Fprintf(w, "  subscription event           p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", res.EventP50Ms, res.EventP99Ms, res.EventMaxMs)
					fmt.Fprintf(w, "  added to propagation         p99 %.2f ms (per write: p99 %.2f ms)\n", res.AddedP99Ms, res.PerWriteAddedP99Ms)
					if res.NotApplied > 0 {
						fmt.Fprintf(w, "  %d writes not reported by their node after 30 s (in the quantiles as the time waited, a lower bound)\n", res.NotApplied)
					}
					if res.Missing > 0 {
						fmt.Fprintf(w, "  %d events missing after 30 s (in the quantiles as the time waited, a lower bound)\n", res.Missing)
					}
				}),
			},
			{
				Name:  "throughput",
				Usage: "aggregate write throughput of concurrent writers spread over the agents",
				Flags: append(regionFlags(),
					&cli.IntFlag{Name: "writers", Value: 16, Usage: "concurrent writers"},
					&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "how long to write"},
					&cli.BoolFlag{Name: "stream", Usage: "send the writes over one transaction stream per agent instead of a request each"}),
				Action: benchAction(func(c *cli.Context, opts bench.Options) (*bench.ThroughputResult, error) {
					return bench.Throughput(c.Context, bench.ThroughputOptions{Options: opts, Writers: c.Int("writers"), Duration: c.Duration("duration"), Stream: c.Bool("stream")}, c.App.ErrWriter)
				}, func(c *cli.Context, res *bench.ThroughputResult) {
					how := "a request each"
					if res.Stream {
						how = "one stream per agent"
					}
					fmt.Fprintf(c.App.Writer, "throughput: %d nodes (%s), %d writers (%s): %d writes in %.1fs = %.0f writes/s; every node had them %.2fs after the last\n",
						res.Nodes, mode(res.Processes, res.Procs), res.Writers, how, res.Writes, res.DurationSec, res.WritesPerSec, res.ConvergedSec)
				}),
			},
			{
				Name:  "reseed",
				Usage: "reseed a region from hosts' bbolt files; time until every agent holds every row",
				Flags: append(regionFlags(),
					&cli.IntFlag{Name: "machines", Value: 1_000_000, Usage: "machine records in all"},
					&cli.IntFlag{Name: "hosts", Value: 100, Usage: "hosts' bbolt files the machines are spread over"},
					&cli.IntFlag{Name: "checks", Value: 0, Usage: "health checks per machine"},
					&cli.IntFlag{Name: "ranges", Value: 64, Usage: "ranges the ids are split into"},
					&cli.IntFlag{Name: "parallel", Value: 4, Usage: "ranges written at once"},
					&cli.IntFlag{Name: "batch", Value: 1000, Usage: "rows per transaction"},
					&cli.IntFlag{Name: "through", Usage: "write through this many of the agents (default: all)"}),
				Action: benchAction(func(c *cli.Context, opts bench.Options) (*bench.ReseedResult, error) {
					return bench.Reseed(c.Context, bench.ReseedOptions{Options: opts, Machines: c.Int("machines"), Hosts: c.Int("hosts"), Checks: c.Int("checks"),
						Ranges: c.Int("ranges"), Parallel: c.Int("parallel"), Batch: c.Int("batch"), Through: c.Int("through")}, c.App.ErrWriter)
				}, func(c *cli.Context, res *bench.ReseedResult) {
					fmt.Fprintf(c.App.Writer, "reseed: %d nodes (%s), through %d: %d machines (%d checks each) from %d hosts' files, %d ranges, %d in parallel, batches of %d\n",
						res.Nodes, mode(res.Processes, res.Procs), res.Through, res.Machines, res.Checks, res.Hosts, res.Ranges, res.Parallel, res.Batch)
					fmt.Fprintf(c.App.Writer, "  written in %.1fs (%.0f rows/s, %d transactions); every agent held every row %.1fs after the start\n",
						res.WriteSec, res.RowsPerSec, res.Transactions, res.ConvergedSec)
				}),
			},
			{
				Name:  "catchup",
				Usage: "time for a node that missed versions to catch up through sync",
				Flags: append(regionFlags(),
					&cli.IntFlag{Name: "versions", Value: 100_000, Usage: "versions the stopped node misses"}),
				Action: benchAction(func(c *cli.Context, opts bench.Options) (*bench.CatchUpResult, error) {
					return bench.CatchUp(c.Context, bench.CatchUpOptions{Options: opts, Versions: c.Int("versions")}, c.App.ErrWriter)
				}, func(c *cli.Context, res *bench.CatchUpResult) {
					fmt.Fprintf(c.App.Writer, "catch-up: %d nodes (%s): a node that missed %d versions (%d rows) caught up in %.2fs\n",
						res.Nodes, mode(res.Processes, res.Procs), res.Versions, res.Rows, res.CatchUpS)
				}),
			},
			etcdCommand(),
		},
	}
}

// etcdCommand runs the region benchmarks' workloads against an etcd
// cluster on this host, for a baseline measured in the same hour.
func etcdCommand() *cli.Command {
	flags := func(more ...cli.Flag) []cli.Flag {
		return append([]cli.Flag{
			&cli.IntFlag{Name: "members", Value: 3, Usage: "etcd members"},
			&cli.StringFlag{Name: "etcd", Value: "etcd", Usage: "the etcd executable"},
			&cli.StringFlag{Name: "dir", Usage: "working directory (default: a temporary one, removed after)"},
			&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
			&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "how long to write"},
			&cli.IntFlag{Name: "procs", Usage: "GOMAXPROCS of each member (default: the machine's cores ÷ members, at least 1)"},
		}, more...)
	}
	return &cli.Command{
		Name:  "etcd",
		Usage: "the same workloads against an etcd cluster started on this machine (a peer baseline)",
		Subcommands: []*cli.Command{
			{
				Name:  "propagation",
				Usage: "time puts from request to visibility in a watch on every member",
				Flags: flags(&cli.IntFlag{Name: "rate", Value: 100, Usage: "puts per second, spread over the members"}),
				Action: etcdAction(func(c *cli.Context, opts bench.EtcdOptions) (*bench.EtcdPropagationResult, error) {
					return bench.EtcdPropagation(c.Context, opts, c.Int("rate"), c.Duration("duration"), c.App.ErrWriter)
				}, func(c *cli.Context, res *bench.EtcdPropagationResult) {
					w := c.App.Writer
					fmt.Fprintf(w, "etcd propagation: %d members (GOMAXPROCS %d), %d puts/s for %.0fs: %d puts (%.0f/s achieved)\n", res.Members, res.Procs, res.Rate, res.DurationSec, res.Writes, res.AchievedRate)
					fmt.Fprintf(w, "  visible on every member, from the request  p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", res.VisibleP50Ms, res.VisibleP99Ms, res.VisibleMaxMs)
					fmt.Fprintf(w, "  put acknowledged                           p50 %.2f ms  p99 %.2f ms\n", res.AckP50Ms, res.AckP99Ms)
					if res.NotVisible > 0 {
						fmt.Fprintf(w, "  %d puts not visible everywhere within 30 s (in the quantiles as the time waited for them, a lower bound)\n", res.NotVisible)
					}
				}),
			},
			{
				Name:  "throughput",
				Usage: "aggregate put throughput of concurrent writers spread over the members",
				Flags: flags(&cli.IntFlag{Name: "writers", Value: 16, Usage: "concurrent writers"}),
				Action: etcdAction(func(c *cli.Context, opts bench.EtcdOptions) (*bench.EtcdThroughputResult, error) {
					return bench.EtcdThroughput(c.Context, opts, c.Int("writers"), c.Duration("duration"), c.App.ErrWriter)
				}, func(c *cli.Context, res *bench.EtcdThroughputResult) {
					fmt.Fprintf(c.App.Writer, "etcd throughput: %d members (GOMAXPROCS %d), %d writers: %d puts in %.1fs = %.0f puts/s\n",
						res.Members, res.Procs, res.Writers, res.Writes, res.DurationSec, res.WritesPerSec)
				}),
			},
		},
	}
}

// etcdAction prepares the working directory, runs an etcd benchmark and
// prints its result, as JSON or through human.
func etcdAction[R any](run func(c *cli.Context, opts bench.EtcdOptions) (R, error), human func(c *cli.Context, r R)) cli.ActionFunc {
	return func(c *cli.Context) error {
		if err := checkProcs(c); err != nil {
			return err
		}
		dir := c.String("dir")
		if dir == "" {
			d, err := os.MkdirTemp("", "patina-bench-etcd-*")
			if err != nil {
				return err
			}
			defer os.RemoveAll(d)
			dir = d
		}
		res, err := run(c, bench.EtcdOptions{Binary: c.String("etcd"), Dir: dir, Members: c.Int("members"), Procs: c.Int("procs")})
		if err != nil {
			return cli.Exit(err.Error(), 1)
		}
		return printResult(c, res, human)
	}
}

// benchOptions prepares the working directory, the schema and the agent
// binary of a benchmark region.
func benchOptions(c *cli.Context) (bench.Options, func(), error) {
	if err := checkProcs(c); err != nil {
		return bench.Options{}, nil, err
	}
	dir := c.String("dir")
	cleanup := func() {}
	if dir == "" {
		d, err := os.MkdirTemp("", "patina-bench-*")
		if err != nil {
			return bench.Options{}, nil, err
		}
		dir, cleanup = d, func() { os.RemoveAll(d) }
	}
	schemaDir := filepath.Join(dir, "schema")
	if err := os.MkdirAll(schemaDir, 0o755); err != nil {
		return bench.Options{}, nil, err
	}
	if err := os.WriteFile(filepath.Join(schemaDir, "regional.sql"), []byte(schemas.Regional()), 0o644); err != nil {
		return bench.Options{}, nil, err
	}
	opts := bench.Options{Nodes: c.Int("nodes"), Dir: filepath.Join(dir, "region"), SchemaPaths: []string{schemaDir}, Procs: c.Int("procs")}
	switch agents := c.String("agent-binary"); {
	case agents != "" && c.Bool("in-process"):
		cleanup()
		return bench.Options{}, nil, cli.Exit("--agent-binary runs agents as processes: it does not go with --in-process", 2)
	case agents != "":
		if _, err := os.Stat(agents); err != nil {
			cleanup()
			return bench.Options{}, nil, cli.Exit(fmt.Sprintf("--agent-binary: %v", err), 2)
		}
		opts.Binary = agents
	case !c.Bool("in-process"):
		exe, err := os.Executable()
		if err != nil {
			return bench.Options{}, nil, err
		}
		opts.Binary = exe
	}
	return opts, cleanup, nil
}

// checkProcs refuses a negative --procs (0 is the default: a share of
// the cores).
func checkProcs(c *cli.Context) error {
	if n := c.Int("procs"); n < 0 {
		return cli.Exit(fmt.Sprintf("--procs must be at least 1, or 0 for the default (got %d)", n), 2)
	}
	return nil
}
