package main

import (
	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/internal/agent"
)

func agentCommand() *cli.Command {
	return &cli.Command{
		Name:  "agent",
		Usage: "run a patina agent",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "config", Aliases: []string{"c"}, Usage: "agent TOML config file", Required: true, EnvVars: []string{"PATINA_CONFIG"}},
		},
		Action: func(c *cli.Context) error {
			cfg, err := agent.LoadConfig(c.String("config"))
			if err != nil {
				return err
			}
			a, err := agent.New(c.Context, cfg, c.App.ErrWriter)
			if err != nil {
				return err
			}
			return a.Run(c.Context)
		},
	}
}
