package locate_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/patina-db/patina/internal/devcluster/topology"
	"github.com/patina-db/patina/internal/locate"
)

func TestLocate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	topo, err := topology.Start(ctx, topology.Options{
		Dir: t.TempDir(), Regions: []string{"ams", "iad", "syd"}, AgentsPerRegion: 1, GlobalAgents: 1,
		Apps: []topology.App{
			{Name: "web", Machines: map[string]int{"ams": 1, "iad": 1, "syd": 2}},
			{Name: "worker", Machines: map[string]int{"syd": 1}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := topo.Stop(); err != nil {
			t.Error(err)
		}
	}()
	e := topo.Endpoints()
	l, err := locate.New(locate.Config{
		Region: "ams", Local: []string{e.Regions["ams"].Agents[0].GRPC}, Global: []string{e.Global.Agents[0].GRPC},
		TTL: time.Millisecond, Timeout: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	ans, err := l.Everywhere(ctx, "web", false)
	if err != nil {
		t.Fatal(err)
	}
	if got := regions(ans); !slices.Equal(got, []string{"ams:1", "iad:1", "syd:2"}) || len(ans.Unreachable) != 0 {
		t.Fatalf("web from ams: %v, unreachable %v", got, ans.Unreachable)
	}
	ans, err = l.Everywhere(ctx, "worker", false)
	if err != nil || !slices.Equal(regions(ans), []string{"syd:1"}) {
		t.Fatalf("worker: %v %v", regions(ans), err)
	}
	if _, err := l.Everywhere(ctx, "nope", false); !errors.Is(err, locate.ErrUnknownApp) {
		t.Fatalf("unknown app: %v", err)
	}
	dir, err := l.Regions(ctx)
	if err != nil || len(dir) != 3 || dir[0].GetName() != "ams" || dir[1].GetName() != "iad" {
		t.Fatalf("directory nearest first from ams: %v %v", dir, err)
	}

	// A region whose agents are all gone is skipped, not waited on.
	for _, r := range topo.Regions {
		if r.Name == "syd" {
			for _, h := range r.Hosts {
				h.Stop()
			}
			if err := r.Cluster.Stop(); err != nil {
				t.Fatal(err)
			}
		}
	}
	ans, err = l.Everywhere(ctx, "web", false)
	if err != nil {
		t.Fatal(err)
	}
	if got := regions(ans); !slices.Equal(got, []string{"ams:1", "iad:1"}) || !slices.Equal(ans.Unreachable, []string{"syd"}) {
		t.Fatalf("web with syd down: %v, unreachable %v", got, ans.Unreachable)
	}
	if l.Unreachable() == 0 {
		t.Fatal("the unreachable region was not counted")
	}
}

func regions(a locate.Answer) []string {
	var out []string
	for _, r := range a.Regions {
		out = append(out, r.Region+":"+string(rune('0'+len(r.Machines))))
	}
	return out
}
