// Package locatetest serves stand-in regional Lookup services on
// loopback, for the tests of what asks them (the locator, DNS, the
// proxy).
package locatetest

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"

	regionalv1 "github.com/patina-db/patina/proto/patina/regional/v1"
)

// ListFunc answers ListMachines.
type ListFunc func(ctx context.Context, req *regionalv1.ListMachinesRequest) (*regionalv1.ListMachinesResponse, error)

type lookup struct {
	regionalv1.UnimplementedLookupServer
	list ListFunc
}

func (l lookup) ListMachines(ctx context.Context, req *regionalv1.ListMachinesRequest) (*regionalv1.ListMachinesResponse, error) {
	return l.list(ctx, req)
}

// Lookup serves a Lookup service answering with list on 127.0.0.1 until
// the test ends, and returns its address.
func Lookup(t testing.TB, list ListFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	regionalv1.RegisterLookupServer(s, lookup{list: list})
	go s.Serve(ln)
	t.Cleanup(s.Stop)
	return ln.Addr().String()
}

// App answers for one app of region with machines (healthy ones only
// when asked so), and with none for any other app.
func App(region, app string, machines ...*regionalv1.Machine) ListFunc {
	return func(_ context.Context, req *regionalv1.ListMachinesRequest) (*regionalv1.ListMachinesResponse, error) {
		resp := &regionalv1.ListMachinesResponse{Region: region}
		if req.GetApp() != app {
			return resp, nil
		}
		for _, m := range machines {
			if !req.GetHealthyOnly() || m.GetHealthy() {
				resp.Machines = append(resp.Machines, m)
			}
		}
		return resp, nil
	}
}
