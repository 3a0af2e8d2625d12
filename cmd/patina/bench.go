package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/internal/bench"
	"github.com/patina-db/patina/schemas"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:  "bench",
		Usage: "benchmarks against a region started on this machine",
		Subcommands: []*cli.Command{{
			Name:  "propagation",
			Usage: "time writes from request to visibility on every node",
			Flags: []cli.Flag{
				&cli.IntFlag{Name: "nodes", Value: 3, Usage: "agents in the region"},
				&cli.IntFlag{Name: "rate", Value: 100, Usage: "writes per second, spread over the agents"},
				&cli.DurationFlag{Name: "duration", Value: 10_000_000_000, Usage: "how long to write"},
				&cli.BoolFlag{Name: "in-process", Usage: "run the agents in this process instead of one process each"},
				&cli.StringFlag{Name: "dir", Usage: "working directory (default: a temporary one, removed after)"},
				&cli.BoolFlag{Name: "json", Usage: "print the result as JSON"},
			},
			Action: func(c *cli.Context) error {
				opts, cleanup, err := benchOptions(c)
				if err != nil {
					return err
				}
				defer cleanup()
				res, err := bench.Propagation(c.Context, bench.PropagationOptions{Options: opts, Rate: c.Int("rate"), Duration: c.Duration("duration")}, c.App.ErrWriter)
				if err != nil {
					return cli.Exit(err.Error(), 1)
				}
				if c.Bool("json") {
					return json.NewEncoder(c.App.Writer).Encode(res)
				}
				mode := "one process per agent"
				if !res.Processes {
					mode = "agents in one process"
				}
				fmt.Fprintf(c.App.Writer, "propagation: %d nodes (%s), %d writes/s for %.0fs: %d versions (%.0f/s achieved)\n",
					res.Nodes, mode, res.Rate, res.DurationSec, res.Versions, res.AchievedRate)
				fmt.Fprintf(c.App.Writer, "  visible on every node  p50 %.2f ms  p99 %.2f ms  max %.2f ms\n", res.VisibleP50Ms, res.VisibleP99Ms, res.VisibleMaxMs)
				fmt.Fprintf(c.App.Writer, "  write acknowledged     p50 %.2f ms  p99 %.2f ms\n", res.AckP50Ms, res.AckP99Ms)
				fmt.Fprintf(c.App.Writer, "  data plane             %.0f bytes sent per version\n", res.BytesPerVersion)
				if res.NotVisible > 0 {
					fmt.Fprintf(c.App.Writer, "  %d versions not visible everywhere within 30 s\n", res.NotVisible)
				}
				return nil
			},
		}},
	}
}

// benchOptions prepares the working directory, the schema and the agent
// binary of a benchmark region.
func benchOptions(c *cli.Context) (bench.Options, func(), error) {
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
	opts := bench.Options{Nodes: c.Int("nodes"), Dir: filepath.Join(dir, "region"), SchemaPaths: []string{schemaDir}}
	if !c.Bool("in-process") {
		exe, err := os.Executable()
		if err != nil {
			return bench.Options{}, nil, err
		}
		opts.Binary = exe
	}
	return opts, cleanup, nil
}
