package lookup

import (
	"context"
	"errors"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patina-db/patina/internal/crdt"
	"github.com/patina-db/patina/internal/subs"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
	"github.com/patina-db/patina/regional"
)

// Watcher is the agent's subscription engine, as WatchApp uses it.
type Watcher interface {
	Subscribe(ctx context.Context, q subs.Query) (*subs.Sub, bool, error)
	Attach(s *subs.Sub) (detach func())
}

// watchSQL selects every column a machine's answer is made of, so that a
// change to any of them is a change to the subscription's result. The
// first column is the machine id the stream re-reads.
const watchSQL = `SELECT m.id, m.app, m.region, m.host, m.address, m.port, m.state, m.image, m.updated_at,
 c.name, c.status, c.output, c.updated_at
FROM machines m LEFT JOIN machine_checks c ON c.machine_id = m.id WHERE m.app = ?`

// watchBatch bounds how many changes one step of a stream handles.
const watchBatch = 1024

// WatchApp streams an app's machines and then their changes. It follows
// a subscription shared by every watcher of the app; each change names a
// machine, which is re-read whole, so an event always carries the
// machine as it is now, or says it is gone.
func (s *Service) WatchApp(req *regionalv1.WatchAppRequest, stream regionalv1.Lookup_WatchAppServer) error {
	ctx := stream.Context()
	app := req.GetApp()
	if !regional.ValidName(app) {
		return status.Errorf(codes.InvalidArgument, "app %q: want a DNS label", app)
	}
	sub, _, err := s.subs.Subscribe(ctx, subs.Query{SQL: watchSQL, Args: []crdt.Value{crdt.TextValue(app)}})
	if err != nil {
		return grpcError(err)
	}
	detach := s.subs.Attach(sub)
	defer detach()
	// Every change after last is followed; the machines read now may
	// already include some of them, which only repeats an UPSERT.
	last := sub.Last()
	ms, err := s.machines(ctx, "m.app = ?", app)
	if err != nil {
		return err
	}
	for _, m := range ms {
		if err := stream.Send(&regionalv1.WatchAppEvent{Kind: regionalv1.WatchAppEvent_KIND_UPSERT, Machine: m}); err != nil {
			return err
		}
	}
	if err := stream.Send(&regionalv1.WatchAppEvent{Kind: regionalv1.WatchAppEvent_KIND_READY}); err != nil {
		return err
	}
	for {
		changes, wake, err := sub.ChangesAfter(last, watchBatch)
		if err != nil {
			if errors.Is(err, subs.ErrNotRetained) {
				return status.Errorf(codes.DataLoss, "watch %s fell behind: %v; watch again", app, err)
			}
			return status.Errorf(codes.Unavailable, "watch %s: %v", app, err)
		}
		if len(changes) == 0 {
			select {
			case <-ctx.Done():
				return status.FromContextError(ctx.Err()).Err()
			case <-wake:
			}
			continue
		}
		last = changes[len(changes)-1].ID
		seen := map[string]bool{}
		for _, c := range changes {
			id := string(c.Cells[0].Bytes)
			if seen[id] {
				continue
			}
			seen[id] = true
			m, err := s.machine(ctx, id)
			if err != nil {
				return err
			}
			ev := &regionalv1.WatchAppEvent{Kind: regionalv1.WatchAppEvent_KIND_UPSERT, Machine: m}
			if m == nil || m.App != app {
				ev = &regionalv1.WatchAppEvent{Kind: regionalv1.WatchAppEvent_KIND_DELETE, Machine: &regionalv1.Machine{Id: id, App: app}}
			}
			if err := stream.Send(ev); err != nil {
				return err
			}
		}
	}
}
