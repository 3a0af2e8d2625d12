package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode/utf8"

	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/api"
)

// apiFlags are taken by every command that talks to an agent.
func apiFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "api", Value: "http://127.0.0.1:8080", Usage: "agent API address", EnvVars: []string{"PATINA_API"}},
		&cli.StringFlag{Name: "token", Usage: "API bearer token", EnvVars: []string{"PATINA_TOKEN"}},
	}
}

func newClient(c *cli.Context) (*client.Client, error) {
	return client.New(c.String("api"), c.String("token"))
}

func sqlFlags() []cli.Flag {
	return append(apiFlags(),
		&cli.StringSliceFlag{Name: "param", Aliases: []string{"p"}, KeepSpace: true, Usage: "positional parameter (repeatable); numbers become INTEGER or REAL, 'null' NULL, anything else TEXT; prefix with s: to force TEXT"},
		&cli.BoolFlag{Name: "json", Usage: "print the raw JSON response"},
	)
}

// parseParam reads a --param value: 42 is an INTEGER, 1.5 a REAL, null is
// NULL, s:42 is the TEXT "42", anything else TEXT.
func parseParam(s string) any {
	if rest, ok := strings.CutPrefix(s, "s:"); ok {
		return rest
	}
	if s == "null" {
		return nil
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && strings.ContainsAny(s, ".eE") {
		return f
	}
	return s
}

// sqlAction parses the statement and its parameters, connects, and hands
// both to run.
func sqlAction(run func(c *cli.Context, cl *client.Client, st client.Statement) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		st, err := statementFromArgs(c)
		if err != nil {
			return err
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		return run(c, cl, st)
	}
}

func statementFromArgs(c *cli.Context) (client.Statement, error) {
	if c.NArg() != 1 {
		return client.Statement{}, cli.Exit("want exactly one SQL statement argument (quote it)", 2)
	}
	st := client.Statement{Query: c.Args().First()}
	for _, p := range c.StringSlice("param") {
		st.Params = append(st.Params, parseParam(p))
	}
	return st, nil
}

func execCommand() *cli.Command {
	return &cli.Command{
		Name:      "exec",
		Usage:     "run a write statement in one transaction",
		ArgsUsage: "'SQL'",
		Flags:     sqlFlags(),
		Action: sqlAction(func(c *cli.Context, cl *client.Client, st client.Statement) error {
			res, err := cl.Transact(c.Context, st)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			out := c.App.Writer
			if c.Bool("json") {
				return json.NewEncoder(out).Encode(res)
			}
			var rows int64
			for _, r := range res.Results {
				if r.RowsAffected != nil {
					rows += *r.RowsAffected
				}
			}
			version := "none (nothing changed)"
			if res.Version != nil {
				version = strconv.FormatUint(*res.Version, 10)
			}
			fmt.Fprintf(out, "rows affected: %d\nversion: %s\nactor: %s\ntime: %.3fms\n", rows, version, res.ActorID, res.Time*1000)
			return nil
		}),
	}
}

func queryCommand() *cli.Command {
	return &cli.Command{
		Name:      "query",
		Usage:     "run a read-only query and print its rows",
		ArgsUsage: "'SQL'",
		Flags:     sqlFlags(),
		Action: sqlAction(func(c *cli.Context, cl *client.Client, st client.Statement) error {
			rows, err := cl.Query(c.Context, st)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			defer rows.Close()
			if err := printRows(c.App.Writer, rows, c.Bool("json")); err != nil {
				return cli.Exit(err.Error(), 1)
			}
			return nil
		}),
	}
}

func printRows(out io.Writer, rows *client.Rows, asJSON bool) error {
	if asJSON {
		// One object a row, its keys in the columns' order. A name that
		// repeats (a join's two id columns) would lose a value: refused.
		cols := rows.Columns()
		keys := make([][]byte, len(cols))
		seen := map[string]bool{}
		for i, col := range cols {
			if seen[col] {
				return fmt.Errorf("column %q appears twice: --json needs distinct names (use AS)", col)
			}
			seen[col] = true
			keys[i], _ = json.Marshal(col)
		}
		var line []byte
		for rows.Next() {
			line = append(line[:0], '{')
			for i, v := range rows.Row() {
				val, err := json.Marshal(api.EncodeValue(v))
				if err != nil {
					return err
				}
				if i > 0 {
					line = append(line, ',')
				}
				line = append(append(append(line, keys[i]...), ':'), val...)
			}
			line = append(line, '}', '\n')
			if _, err := out.Write(line); err != nil {
				return err
			}
		}
		return rows.Err()
	}
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(rows.Columns(), "\t"))
	n := 0
	for rows.Next() {
		cells := make([]string, len(rows.Row()))
		for i, v := range rows.Row() {
			cells[i] = formatCell(v)
		}
		fmt.Fprintln(tw, strings.Join(cells, "\t"))
		n++
	}
	if err := rows.Err(); err != nil {
		tw.Flush()
		return err
	}
	tw.Flush()
	fmt.Fprintf(out, "(%d rows)\n", n)
	return nil
}

func formatCell(v any) string {
	switch x := v.(type) {
	case nil:
		return "NULL"
	case []byte:
		return fmt.Sprintf("x'%x'", x)
	case string:
		if !utf8.ValidString(x) {
			return strconv.Quote(x)
		}
		return strings.NewReplacer("\t", `\t`, "\n", `\n`).Replace(x)
	case float64:
		f := strconv.FormatFloat(x, 'g', -1, 64)
		if !strings.ContainsAny(f, ".eEn") {
			f += ".0" // keep REAL distinguishable from INTEGER
		}
		return f
	}
	return fmt.Sprint(v)
}
