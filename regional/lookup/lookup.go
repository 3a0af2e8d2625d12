// Package lookup serves the regional tier's Lookup gRPC service from an
// agent's local replica of the region's machines: an app's machines, one
// machine by id, and a stream of an app's changes fed by the agent's
// subscription engine.
package lookup

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patina-db/patina/internal/store"
	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
	"github.com/patina-db/patina/regional"
)

// Reader is the agent's read-only view of its database.
type Reader interface {
	Query(ctx context.Context, st store.Statement) (*store.Rows, error)
}

// Service implements regionalv1.LookupServer.
type Service struct {
	regionalv1.UnimplementedLookupServer
	db     Reader
	subs   Watcher
	region string
}

// New returns the service reading db; region is what ListMachines
// reports as the answering region. subs feeds WatchApp.
func New(db Reader, subs Watcher, region string) *Service {
	return &Service{db: db, subs: subs, region: region}
}

// machineSQL reads machines with their checks, one row per check (or one
// with NULL check columns for a machine without any), ordered so that a
// machine's rows are adjacent.
const machineSQL = `SELECT m.id, m.app, m.region, m.host, m.address, m.port, m.state, m.image, m.updated_at,
 c.name, c.status, c.output, c.updated_at
FROM machines m LEFT JOIN machine_checks c ON c.machine_id = m.id
WHERE %s ORDER BY m.id, c.name`

// ListMachines returns an app's machines in this region.
func (s *Service) ListMachines(ctx context.Context, req *regionalv1.ListMachinesRequest) (*regionalv1.ListMachinesResponse, error) {
	if !regional.ValidName(req.GetApp()) {
		return nil, status.Errorf(codes.InvalidArgument, "app %q: want a DNS label", req.GetApp())
	}
	where := "m.app = ?"
	if req.GetHealthyOnly() {
		where += " AND m.state = 'started'"
	}
	ms, err := s.machines(ctx, where, req.GetApp())
	if err != nil {
		return nil, err
	}
	out := &regionalv1.ListMachinesResponse{Region: s.region, Machines: make([]*regionalv1.Machine, 0, len(ms))}
	for _, m := range ms {
		if req.GetHealthyOnly() && !m.Healthy {
			continue
		}
		if req.GetLimit() > 0 && len(out.Machines) == int(req.GetLimit()) {
			break
		}
		out.Machines = append(out.Machines, m)
	}
	return out, nil
}

// GetMachine returns one machine by id.
func (s *Service) GetMachine(ctx context.Context, req *regionalv1.GetMachineRequest) (*regionalv1.Machine, error) {
	if req.GetId() == "" {
		return nil, status.Error(codes.InvalidArgument, "id is empty")
	}
	m, err := s.machine(ctx, req.GetId())
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, status.Errorf(codes.NotFound, "machine %q: not in region %s", req.GetId(), s.region)
	}
	return m, nil
}

// machine reads one machine, nil when there is none.
func (s *Service) machine(ctx context.Context, id string) (*regionalv1.Machine, error) {
	ms, err := s.machines(ctx, "m.id = ?", id)
	if err != nil || len(ms) == 0 {
		return nil, err
	}
	return ms[0], nil
}

// machines reads the machines matching where (one parameter, arg), each
// with its checks and whether it is healthy.
func (s *Service) machines(ctx context.Context, where string, arg any) ([]*regionalv1.Machine, error) {
	rows, err := s.db.Query(ctx, store.Statement{SQL: fmt.Sprintf(machineSQL, where), Args: []any{arg}})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading machines: %v", err)
	}
	defer rows.Close()
	var out []*regionalv1.Machine
	for rows.Next() {
		r := &regionalv1.Machine{}
		var cname, cstatus, coutput sql.NullString
		var cupdated sql.NullInt64
		if err := rows.Scan(&r.Id, &r.App, &r.Region, &r.Host, &r.Address, &r.Port, &r.State, &r.Image, &r.UpdatedAt,
			&cname, &cstatus, &coutput, &cupdated); err != nil {
			return nil, status.Errorf(codes.Internal, "reading machines: %v", err)
		}
		m := r
		if n := len(out); n > 0 && out[n-1].Id == r.Id {
			m = out[n-1]
		} else {
			out = append(out, m)
		}
		if cname.Valid {
			m.Checks = append(m.Checks, &regionalv1.Check{Name: cname.String, Status: cstatus.String, Output: coutput.String, UpdatedAt: cupdated.Int64})
		}
	}
	if err := rows.Err(); err != nil {
		return nil, status.Errorf(codes.Internal, "reading machines: %v", err)
	}
	for _, m := range out {
		m.Healthy = healthy(m)
	}
	return out, nil
}

// healthy is regional.Machine.Healthy for the wire type.
func healthy(m *regionalv1.Machine) bool {
	if m.State != regional.StateStarted {
		return false
	}
	for _, c := range m.Checks {
		if c.Status != regional.CheckPassing {
			return false
		}
	}
	return true
}

// grpcError keeps a status error as it is and makes any other one
// Internal.
func grpcError(err error) error {
	if _, ok := status.FromError(err); ok {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}
