package main

import (
	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/bridge"
	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/watchdog"
)

func bridgeCommand() *cli.Command {
	return &cli.Command{
		Name:  "bridge",
		Usage: "summarize a region's machines into the global cluster",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "bridge TOML config file", Required: true, EnvVars: []string{"PATINA_CONFIG"}},
		},
		Action: func(c *cli.Context) error {
			cfg, err := bridge.LoadConfig(c.String("config"))
			if err != nil {
				return err
			}
			logger, err := agent.NewLogger(cfg.Log, c.App.ErrWriter)
			if err != nil {
				return err
			}
			b, err := bridge.New(cfg, logger)
			if err != nil {
				return err
			}
			// Alive while its write loop turns (a flush tick per interval)
			// or tries the global agents.
			defer watchdog.Serve(c.Context, watchdog.Advances(b.Progress), logger)()
			return b.Run(c.Context)
		},
	}
}
