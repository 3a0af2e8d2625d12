// Command patina is the single binary of patina: agents, clients and
// operator tools. It only parses flags and calls into the packages.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := newApp(os.Stdout, os.Stderr).RunContext(ctx, flagsFirst(os.Args)); err != nil {
		os.Exit(exitCode(err, os.Stderr))
	}
}

func newApp(stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:      "patina",
		Usage:     "SQLite replicated across a fleet without consensus",
		Writer:    stdout,
		ErrWriter: stderr,
		// A repeatable flag's value is taken whole: `--param "a, b"` is
		// one parameter. The flags that take lists split them themselves
		// (see splitList).
		DisableSliceFlagSeparator: true,
		Commands: []*cli.Command{
			agentCommand(),
			execCommand(),
			queryCommand(),
			subscribeCommand(),
			clusterCommand(),
			reloadCommand(),
			backupCommand(),
			restoreCommand(),
			tlsCommand(),
			benchCommand(),
			devCommand(),
			hostCommand(),
			machineCommand(),
			bridgeCommand(),
			appsCommand(),
			machinesCommand(),
			reseedCommand(),
			regionCommand(),
			proxyCommand(),
			dnsCommand(),
		},
		ExitErrHandler: func(c *cli.Context, err error) {
			if err == nil {
				return
			}
			var ee cli.ExitCoder
			if errors.As(err, &ee) && err.Error() != "" {
				msg := err.Error()
				// urfave/cli's words for an unknown command.
				if name, ok := strings.CutPrefix(msg, "No help topic for '"); ok {
					help := "patina"
					if c.Command != nil && c.Command.HelpName != "" {
						help = c.Command.HelpName
					}
					msg = fmt.Sprintf("unknown command %q (see %s --help)", strings.TrimSuffix(name, "'"), help)
				}
				fmt.Fprintln(stderr, "patina:", msg)
			}
		},
		OnUsageError: usageError,
	}
	// A flag that does not parse is a usage error in every command.
	var walk func([]*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			c.OnUsageError = usageError
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
	return app
}

// usageError makes a flag that does not parse (unknown, or a bad value)
// end the process with status 2, as other usage errors do.
func usageError(c *cli.Context, err error, _ bool) error {
	name := c.App.Name
	if c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	return cli.Exit(fmt.Sprintf("%v (see %s --help)", err, name), 2)
}

// exitCode is the status the process ends with for err: the code a
// command chose (region health's 1 for degraded, 2 for down; 2 for a
// usage error), else 1 after printing the error (an ExitCoder's message
// was printed by the app already). The command line library's own usage
// errors, a required flag left out and an unknown command, are 2 too.
func exitCode(err error, stderr io.Writer) int {
	var ee cli.ExitCoder
	if errors.As(err, &ee) {
		if ee.ExitCode() == 3 && strings.HasPrefix(err.Error(), "No help topic for") {
			return 2 // urfave/cli's code for an unknown command
		}
		return ee.ExitCode()
	}
	fmt.Fprintln(stderr, "patina:", err)
	if strings.HasPrefix(err.Error(), "Required flag") {
		return 2
	}
	return 1
}

// splitList reads a repeatable flag whose values may also be
// comma-separated lists (`--regions ams,iad`), as names and addresses
// never hold commas.
func splitList(values []string) []string {
	var out []string
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

// argCommands take a positional argument (a SQL statement, a file),
// which flags may follow.
var argCommands = map[string]bool{"apps": true, "exec": true, "query": true, "subscribe": true, "backup": true, "restore": true}

// boolFlags are the flags that take no value, for flagsFirst.
var boolFlags = map[string]bool{"processes": true, "verbose": true, "json": true, "force": true, "help": true, "h": true}

// flagsFirst lets flags follow positional arguments (`patina exec 'SQL'
// --param 1`), which urfave/cli stops parsing at: after the command name,
// it moves every flag (with its value) ahead of the positional arguments.
func flagsFirst(args []string) []string {
	if len(args) < 3 || !argCommands[args[1]] {
		return args
	}
	out := []string{args[0], args[1]}
	var flags, positional []string
	rest := args[2:]
	for i := 0; i < len(rest); i++ {
		a := rest[i]
		if a == "--" {
			positional = append(positional, rest[i+1:]...)
			break
		}
		if len(a) > 1 && a[0] == '-' {
			flags = append(flags, a)
			name := strings.TrimLeft(a, "-")
			if !strings.Contains(name, "=") && !boolFlags[name] && i+1 < len(rest) {
				flags = append(flags, rest[i+1])
				i++
			}
			continue
		}
		positional = append(positional, a)
	}
	out = append(out, flags...)
	if len(positional) > 0 {
		out = append(out, "--")
		out = append(out, positional...)
	}
	return out
}
