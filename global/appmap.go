// Package global owns the global tier's read side: the AppMap gRPC
// service a global agent serves from its replica of app_regions and the
// region directory.
package global

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/patina-db/patina/internal/store"
	globalv1 "github.com/patina-db/patina/proto/patina/global/v1"
)

// Reader is the agent's read-only view of its database.
type Reader interface {
	Query(ctx context.Context, st store.Statement) (*store.Rows, error)
}

// Service implements globalv1.AppMapServer.
type Service struct {
	globalv1.UnimplementedAppMapServer
	db  Reader
	log *slog.Logger
}

// New returns the service reading db.
func New(db Reader, log *slog.Logger) *Service {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Service{db: db, log: log}
}

// Page sizes of ListApps.
const (
	defaultPageSize = 100
	maxPageSize     = 1000
)

// GetApp returns the regions that run an app.
func (s *Service) GetApp(ctx context.Context, req *globalv1.GetAppRequest) (*globalv1.App, error) {
	if req.GetApp() == "" {
		return nil, status.Error(codes.InvalidArgument, "app is empty")
	}
	apps, err := s.apps(ctx, `app = ?`, req.GetApp())
	if err != nil {
		return nil, err
	}
	if len(apps) == 0 {
		return nil, status.Errorf(codes.NotFound, "app %q runs in no region", req.GetApp())
	}
	return apps[0], nil
}

// ListApps pages through every app by name. The page token is opaque to
// clients: the last app of the previous page.
func (s *Service) ListApps(ctx context.Context, req *globalv1.ListAppsRequest) (*globalv1.ListAppsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = defaultPageSize
	case size > maxPageSize:
		size = maxPageSize
	}
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || len(b) == 0 {
			return nil, status.Errorf(codes.InvalidArgument, "page_token %q: not a token this service gave", tok)
		}
		after = string(b)
	}
	// One more app than the page holds says whether another page follows.
	apps, err := s.apps(ctx, `app IN (SELECT DISTINCT app FROM app_regions WHERE app > ? ORDER BY app LIMIT `+fmt.Sprint(size+1)+`)`, after)
	if err != nil {
		return nil, err
	}
	out := &globalv1.ListAppsResponse{Apps: apps}
	if len(apps) > size {
		out.Apps = apps[:size]
		out.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(apps[size-1].Name))
	}
	return out, nil
}

// apps reads the apps matching where (one parameter, arg) with their
// regions, ordered by app then region.
func (s *Service) apps(ctx context.Context, where string, arg any) ([]*globalv1.App, error) {
	rows, err := s.db.Query(ctx, store.Statement{
		SQL:  `SELECT app, region, machine_count, healthy_count, updated_at FROM app_regions WHERE ` + where + ` ORDER BY app, region`,
		Args: []any{arg},
	})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading app_regions: %v", err)
	}
	defer rows.Close()
	var out []*globalv1.App
	for rows.Next() {
		var name string
		r := &globalv1.AppRegion{}
		if err := rows.Scan(&name, &r.Region, &r.MachineCount, &r.HealthyCount, &r.UpdatedAt); err != nil {
			return nil, status.Errorf(codes.Internal, "reading app_regions: %v", err)
		}
		if n := len(out); n == 0 || out[n-1].Name != name {
			out = append(out, &globalv1.App{Name: name})
		}
		a := out[len(out)-1]
		a.Regions = append(a.Regions, r)
	}
	if err := rows.Err(); err != nil {
		return nil, status.Errorf(codes.Internal, "reading app_regions: %v", err)
	}
	return out, nil
}

// ListRegions returns the region directory.
func (s *Service) ListRegions(ctx context.Context, _ *globalv1.ListRegionsRequest) (*globalv1.ListRegionsResponse, error) {
	rows, err := s.db.Query(ctx, store.Statement{SQL: `SELECT name, lookup, api, latitude, longitude, bridge_heartbeat FROM regions ORDER BY name`})
	if err != nil {
		return nil, status.Errorf(codes.Internal, "reading regions: %v", err)
	}
	defer rows.Close()
	out := &globalv1.ListRegionsResponse{}
	for rows.Next() {
		r := &globalv1.Region{}
		var lookup, apis string
		if err := rows.Scan(&r.Name, &lookup, &apis, &r.Latitude, &r.Longitude, &r.BridgeHeartbeat); err != nil {
			return nil, status.Errorf(codes.Internal, "reading regions: %v", err)
		}
		if err := json.Unmarshal([]byte(lookup), &r.Lookup); err != nil {
			// A bad row is the writer's bug; the rest of the directory
			// still answers.
			s.log.Warn("region's lookup endpoints are not a JSON array of strings", "region", r.Name, "lookup", lookup, "err", err)
			r.Lookup = nil
		}
		if err := json.Unmarshal([]byte(apis), &r.Api); err != nil {
			s.log.Warn("region's agent APIs are not a JSON array of strings", "region", r.Name, "api", apis, "err", err)
			r.Api = nil
		}
		out.Regions = append(out.Regions, r)
	}
	if err := rows.Err(); err != nil {
		return nil, status.Errorf(codes.Internal, "reading regions: %v", err)
	}
	return out, nil
}
