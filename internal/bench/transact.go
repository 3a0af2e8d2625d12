package bench

import (
	"context"

	"github.com/patina-db/patina/client"
	"github.com/patina-db/patina/internal/api"
)

// transactFunc runs one transaction on an agent.
type transactFunc func(context.Context, ...client.Statement) (*api.ExecResponse, error)

// transactors are the ways a benchmark's writes reach each agent: a
// request each, or one transaction stream per agent (which close
// closes).
func transactors(ctx context.Context, clients []*client.Client, stream bool) (_ []transactFunc, close func(), _ error) {
	out := make([]transactFunc, len(clients))
	var streams []*client.TxStream
	close = func() {
		for _, st := range streams {
			_ = st.Close()
		}
	}
	for i, c := range clients {
		out[i] = c.Transact
		if !stream {
			continue
		}
		st, err := c.OpenTxStream(ctx)
		if err != nil {
			close()
			return nil, nil, err
		}
		streams = append(streams, st)
		out[i] = st.Transact
	}
	return out, close, nil
}
