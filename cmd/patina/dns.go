package main

import (
	"time"

	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/dns"
	"github.com/patina-db/patina/internal/watchdog"
)

func dnsCommand() *cli.Command {
	return &cli.Command{
		Name:  "dns",
		Usage: "serve the fleet's DNS zone (.internal): where each app's machines are",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "DNS TOML config file", Required: true, EnvVars: []string{"PATINA_CONFIG"}},
		},
		Action: func(c *cli.Context) error {
			cfg, err := dns.LoadConfig(c.String("config"))
			if err != nil {
				return err
			}
			logger, err := agent.NewLogger(cfg.Log, c.App.ErrWriter)
			if err != nil {
				return err
			}
			s, err := dns.New(cfg, logger)
			if err != nil {
				return err
			}
			defer watchdog.Serve(c.Context, watchdog.Dials("tcp", s.Addr(), 5*time.Second), logger)()
			return s.Run(c.Context)
		},
	}
}
