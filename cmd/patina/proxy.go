package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/proxy"
	"github.com/patina-db/patina/internal/watchdog"
)

func proxyCommand() *cli.Command {
	return &cli.Command{
		Name:  "proxy",
		Usage: "run the HTTP edge proxy: <app>.internal to the nearest healthy machine",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "proxy TOML config file", Required: true, EnvVars: []string{"PATINA_CONFIG"}},
		},
		Action: func(c *cli.Context) error {
			cfg, err := proxy.LoadConfig(c.String("config"))
			if err != nil {
				return err
			}
			logger, err := agent.NewLogger(cfg.Log, c.App.ErrWriter)
			if err != nil {
				return err
			}
			p, err := proxy.New(cfg, logger)
			if err != nil {
				return err
			}
			defer watchdog.Serve(c.Context, watchdog.Dials("tcp", p.Addr(), 5*time.Second), logger)()
			return p.Run(c.Context)
		},
	}
}
