package main

import (
	"encoding/json"
	"fmt"
	"log/slog"

	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/regional/reseed"
)

func reseedCommand() *cli.Command {
	return &cli.Command{
		Name:  "reseed",
		Usage: "rebuild a cluster's rows from hosts' bbolt files or a SQLite database's table",
		Description: `Reads the sources, splits their keys into ranges and writes them through the agents' API,
several ranges at once; a failed range is retried with backoff on the next agent. Ctrl-C stops
cleanly: the state file keeps the finished ranges, and running the same command again resumes.`,
		Flags: []cli.Flag{
			&cli.StringSliceFlag{Name: "bbolt", Usage: "a host's bbolt file (repeatable): its machines go to machines and machine_checks"},
			&cli.StringFlag{Name: "sqlite", Usage: "a SQLite database whose --table is copied into the cluster's table of that name"},
			&cli.StringFlag{Name: "table", Usage: "the table to copy from --sqlite"},
			&cli.StringSliceFlag{Name: "api", Value: cli.NewStringSlice("http://127.0.0.1:8080"), Usage: "an agent's API address (repeatable): ranges are spread over them", EnvVars: []string{"PATINA_API"}},
			&cli.StringFlag{Name: "token", Usage: "API bearer token", EnvVars: []string{"PATINA_TOKEN"}},
			&cli.IntFlag{Name: "ranges", Value: 64, Usage: "ranges the keys are split into"},
			&cli.IntFlag{Name: "parallel", Value: 4, Usage: "ranges written at once"},
			&cli.Float64Flag{Name: "rate", Usage: "most rows written per second (0: no limit)"},
			&cli.IntFlag{Name: "batch", Value: 1000, Usage: "most rows per transaction"},
			&cli.IntFlag{Name: "max-body", Value: 4 << 20, Usage: "most bytes of parameters per transaction (the agent refuses bodies over its api.max_body_bytes)"},
			&cli.IntFlag{Name: "attempts", Value: 8, Usage: "attempts of one batch before its range gives up"},
			&cli.DurationFlag{Name: "retry-base", Value: reseedDefaults.RetryBase, Usage: "delay before the first retry, doubled after each failure"},
			&cli.DurationFlag{Name: "retry-max", Value: reseedDefaults.RetryMax, Usage: "longest delay between retries"},
			&cli.StringFlag{Name: "state", Usage: "state file for resuming (default: reseed-<hash of the sources>.json in the current directory)"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bar"},
			&cli.BoolFlag{Name: "json", Usage: "print the summary as JSON"},
		},
		Action: func(c *cli.Context) error {
			opts := reseed.Options{
				BBolt: c.StringSlice("bbolt"), SQLite: c.String("sqlite"), Table: c.String("table"),
				APIs: splitList(c.StringSlice("api")), Token: c.String("token"),
				Ranges: c.Int("ranges"), Parallel: c.Int("parallel"), Rate: c.Float64("rate"), Batch: c.Int("batch"),
				MaxBodyBytes: c.Int("max-body"), MaxAttempts: c.Int("attempts"),
				RetryBase: c.Duration("retry-base"), RetryMax: c.Duration("retry-max"),
				StatePath: c.String("state"),
				Logger:    slog.New(slog.NewTextHandler(c.App.ErrWriter, nil)),
			}
			if !c.Bool("quiet") {
				opts.Progress = c.App.ErrWriter
			}
			sum, err := reseed.Run(c.Context, opts)
			if c.Bool("json") {
				if jerr := json.NewEncoder(c.App.Writer).Encode(sum); jerr != nil {
					return jerr
				}
			} else if sum.Ranges > 0 {
				fmt.Fprint(c.App.Writer, sum)
			}
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			return nil
		},
	}
}

// reseedDefaults are the package's defaults, shown in the flags' help.
var reseedDefaults = reseed.DefaultOptions()
