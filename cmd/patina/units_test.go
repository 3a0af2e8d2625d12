package main

import (
	"bufio"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// sdNotify are the commands that speak sd_notify (READY=1, WATCHDOG=1):
// only they may run as Type=notify with WatchdogSec.
var sdNotify = map[string]bool{"agent": true, "host": true, "bridge": true, "dns": true, "proxy": true}

// TestSystemdUnits: every unit in deploy/systemd runs
// /usr/local/bin/patina with an existing command and only flags that
// command has, restarts on failure, and is Type=notify with WatchdogSec
// exactly when its command speaks sd_notify.
func TestSystemdUnits(t *testing.T) {
	units, _ := filepath.Glob(filepath.Join("..", "..", "deploy", "systemd", "*.service"))
	if len(units) < 5 {
		t.Fatalf("found units %v, want one per role", units)
	}
	app := newApp(io.Discard, io.Discard)
	for _, u := range units {
		name := filepath.Base(u)
		svc := serviceSection(t, u)
		exec := strings.Fields(svc["ExecStart"])
		if len(exec) < 2 || exec[0] != "/usr/local/bin/patina" {
			t.Errorf("%s: ExecStart %q, want /usr/local/bin/patina COMMAND ...", name, svc["ExecStart"])
			continue
		}
		cmd, rest := findCommand(app.Commands, exec[1:])
		if cmd == nil {
			t.Errorf("%s: patina has no command %q", name, exec[1])
			continue
		}
		checkFlags(t, name, cmd, rest)
		if !slices.Contains(rest, "--config") {
			t.Errorf("%s: %s runs without --config", name, svc["ExecStart"])
		}
		notify := svc["Type"] == "notify"
		if notify != sdNotify[cmd.Name] {
			t.Errorf("%s: Type=%s, but patina %s speaks sd_notify: %v", name, svc["Type"], cmd.Name, sdNotify[cmd.Name])
		}
		if _, ok := svc["WatchdogSec"]; ok != notify {
			t.Errorf("%s: WatchdogSec needs a service that sends WATCHDOG=1 (Type=notify)", name)
		}
		if svc["Type"] != "notify" && svc["Type"] != "simple" {
			t.Errorf("%s: Type=%q", name, svc["Type"])
		}
		if svc["Restart"] == "" {
			t.Errorf("%s: no Restart=", name)
		}
	}
}

// serviceSection reads the key=value lines of a unit's [Service].
func serviceSection(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case line == "" || strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "["):
			section = line
		case section == "[Service]":
			if k, v, ok := strings.Cut(line, "="); ok {
				out[k] = v
			}
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// findCommand follows args through commands and their subcommands and
// returns the command reached and the arguments after it.
func findCommand(cmds []*cli.Command, args []string) (*cli.Command, []string) {
	var found *cli.Command
	for len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		var next *cli.Command
		for _, c := range cmds {
			if c.Name == args[0] || slices.Contains(c.Aliases, args[0]) {
				next = c
			}
		}
		if next == nil {
			break
		}
		found, cmds, args = next, next.Subcommands, args[1:]
	}
	return found, args
}

// checkFlags checks every --flag of args exists on cmd and that a flag
// taking a value has one.
func checkFlags(t *testing.T, unit string, cmd *cli.Command, args []string) {
	t.Helper()
	for i := 0; i < len(args); i++ {
		a := args[i]
		if !strings.HasPrefix(a, "-") {
			t.Errorf("%s: stray argument %q", unit, a)
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		var flag cli.Flag
		for _, f := range cmd.Flags {
			if slices.Contains(f.Names(), name) {
				flag = f
			}
		}
		if flag == nil {
			t.Errorf("%s: patina %s has no flag %s", unit, cmd.Name, a)
			continue
		}
		if _, isBool := flag.(*cli.BoolFlag); isBool || hasValue {
			continue
		}
		if i+1 >= len(args) || strings.HasPrefix(args[i+1], "-") {
			t.Errorf("%s: %s needs a value", unit, a)
		}
		i++
	}
}
