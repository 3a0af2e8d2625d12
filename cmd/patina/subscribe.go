package main

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/api"
)

func subscribeCommand() *cli.Command {
	return &cli.Command{
		Name:      "subscribe",
		Usage:     "follow a query: its rows, then every change to them, until interrupted",
		ArgsUsage: "'SQL'",
		Flags: append(sqlFlags(),
			&cli.Uint64Flag{Name: "from", Usage: "resume after this change id instead of starting with the rows"},
		),
		Action: sqlAction(func(c *cli.Context, cl *client.Client, st client.Statement) error {
			var sub *client.Subscription
			var err error
			if c.IsSet("from") {
				sub, err = cl.SubscribeFrom(c.Context, st, c.Uint64("from"))
			} else {
				sub, err = cl.Subscribe(c.Context, st)
			}
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			defer sub.Close()
			p := &subPrinter{out: c.App.Writer, json: c.Bool("json")}
			if !p.json {
				fmt.Fprintf(p.out, "subscription %s\n", sub.ID())
			}
			for sub.Next() {
				if err := p.print(sub); err != nil {
					return err
				}
			}
			if err := sub.Err(); err != nil {
				return cli.Exit(err.Error(), 1)
			}
			return nil // interrupted
		}),
	}
}

// subPrinter writes a subscription's events as readable lines or NDJSON.
type subPrinter struct {
	out     io.Writer
	json    bool
	columns bool
	rows    int
}

func (p *subPrinter) print(sub *client.Subscription) error {
	ev := sub.Event()
	if p.json {
		var qe api.QueryEvent
		switch {
		case ev.Row != nil:
			if !p.columns {
				p.columns = true
				if err := json.NewEncoder(p.out).Encode(api.QueryEvent{Columns: sub.Columns()}); err != nil {
					return err
				}
			}
			qe.Row = ev.Row
		case ev.Ready:
			last := sub.LastChange()
			qe.EOQ = &api.EOQ{ChangeID: &last}
		case ev.Change != nil:
			qe.Change = ev.Change
		}
		return json.NewEncoder(p.out).Encode(qe)
	}
	switch {
	case ev.Row != nil:
		if !p.columns {
			p.columns = true
			fmt.Fprintf(p.out, "columns: %s\n", strings.Join(sub.Columns(), " | "))
		}
		p.rows++
		_, err := fmt.Fprintf(p.out, "row %d: %s\n", ev.Row.RowID, formatCells(ev.Row.Cells))
		return err
	case ev.Ready:
		_, err := fmt.Fprintf(p.out, "-- %d rows, as of change %d; following changes\n", p.rows, sub.LastChange())
		return err
	case ev.Change != nil:
		ch := ev.Change
		_, err := fmt.Fprintf(p.out, "change %d: %s row %d: %s\n", ch.ChangeID, ch.Kind, ch.RowID, formatCells(ch.Cells))
		return err
	}
	return nil
}

func formatCells(cells []any) string {
	parts := make([]string, len(cells))
	for i, v := range cells {
		parts[i] = formatCell(v)
	}
	return strings.Join(parts, " | ")
}
