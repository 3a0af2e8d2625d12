package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/watchdog"
	"github.com/patina-db/patina/regional/host"
)

func hostCommand() *cli.Command {
	return &cli.Command{
		Name:  "host",
		Usage: "run a host agent: this worker's machines, kept in bbolt and published to the regional agent",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "host TOML config file", Required: true, EnvVars: []string{"PATINA_HOST_CONFIG"}},
		},
		Action: func(c *cli.Context) error {
			cfg, err := host.LoadConfig(c.String("config"))
			if err != nil {
				return err
			}
			logger, err := agent.NewLogger(cfg.Log, c.App.ErrWriter)
			if err != nil {
				return err
			}
			h, err := host.New(c.Context, cfg, logger)
			if err != nil {
				return err
			}
			defer watchdog.Serve(c.Context, watchdog.Dials("tcp", h.APIAddr(), 5*time.Second), logger)()
			return h.Run(c.Context)
		},
	}
}
