package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/backup"
)

// The admin commands call /v1/admin/... routes: when the agent has an
// [api] admin_token, --token (PATINA_TOKEN) must be that token.

func reloadCommand() *cli.Command {
	return &cli.Command{
		Name:  "reload",
		Usage: "make the agent re-read its schema files (additive changes only)",
		Flags: apiFlags(),
		Action: func(c *cli.Context) error {
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			res, err := cl.Reload(c.Context)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			what := "unchanged"
			if res.Changed {
				what = "changed"
			}
			fmt.Fprintf(c.App.Writer, "schema %s: tables %s\n", what, strings.Join(res.Tables, ", "))
			return nil
		},
	}
}

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:      "backup",
		Usage:     "write a consistent snapshot of a live agent's database to OUT",
		ArgsUsage: "OUT",
		Flags:     apiFlags(),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("want exactly one argument: the file to write", 2)
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			res, err := backup.Fetch(c.Context, cl, c.Args().First())
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "wrote %s: %d bytes, tables %s, from actor %s\n", res.Path, res.Bytes, strings.Join(res.Tables, ", "), res.Actor)
			return nil
		},
	}
}

func restoreCommand() *cli.Command {
	return &cli.Command{
		Name:      "restore",
		Usage:     "put a backup in place as a stopped agent's database, under a new actor id",
		ArgsUsage: "IN",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "the agent's TOML config file (its db.path is replaced)", Required: true, EnvVars: []string{"PATINA_CONFIG"}},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing database"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("want exactly one argument: the backup file", 2)
			}
			cfg, err := agent.LoadConfig(c.String("config"))
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			res, err := backup.Restore(c.Context, c.Args().First(), cfg.DB.Path, backup.RestoreOptions{Force: c.Bool("force"), SchemaPaths: cfg.DB.SchemaPaths})
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			fmt.Fprintf(c.App.Writer, "restored %s into %s\nactor id: %s (new; the backup's versions stay those of %s)\nstart the agent: it catches up with the cluster by sync\n",
				c.Args().First(), res.Path, res.Actor, res.From)
			return nil
		},
	}
}
