// Package deploy_test checks what deploy/ ships: every example
// configuration loads with its role's loader, the Kubernetes manifests
// and the Prometheus configuration are valid YAML whose embedded
// configurations load too, and every metric the Grafana dashboard
// queries is served by a real agent.
package deploy_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/patina-db/patina/bridge"
	"github.com/patina-db/patina/internal/agent"
	"github.com/patina-db/patina/internal/devcluster"
	"github.com/patina-db/patina/internal/dns"
	"github.com/patina-db/patina/internal/proxy"
	"github.com/patina-db/patina/regional/host"
)

var regions = []string{"ams", "iad", "syd"}

// loaded is one example configuration, loaded by its role's loader.
type loaded struct {
	agent  agent.Config
	host   host.Config
	bridge bridge.Config
	proxy  proxy.Config
	dns    dns.Config
}

// parseRole parses text as the configuration of the role its file name
// says (agent.toml, host.toml, ...).
func parseRole(file, text, name string) (loaded, error) {
	var l loaded
	var err error
	switch file {
	case "agent.toml":
		l.agent, err = agent.ParseConfig(text, name)
	case "host.toml":
		l.host, err = host.ParseConfig(text, name)
	case "bridge.toml":
		l.bridge, err = bridge.ParseConfig(text, name)
	case "proxy.toml":
		l.proxy, err = proxy.ParseConfig(text, name)
	case "dns.toml":
		l.dns, err = dns.ParseConfig(text, name)
	default:
		err = fmt.Errorf("%s: no role is configured by a file named %s", name, file)
	}
	return l, err
}

// TestExampleConfigs: every file in deploy/config loads with its role's
// loader (unknown keys and bad values are errors there), every region
// has every role, and the examples agree with each other: names,
// addresses and tokens that must match do.
func TestExampleConfigs(t *testing.T) {
	roles := []string{"agent.toml", "bridge.toml", "dns.toml", "host.toml", "proxy.toml"}
	cfgs := map[string]loaded{} // region/file
	dirs, err := os.ReadDir("config")
	if err != nil {
		t.Fatal(err)
	}
	var seen []string
	for _, d := range dirs {
		if !d.IsDir() {
			t.Errorf("config/%s: want only a directory per region and global/", d.Name())
			continue
		}
		seen = append(seen, d.Name())
		files, err := os.ReadDir(filepath.Join("config", d.Name()))
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			path := filepath.Join("config", d.Name(), f.Name())
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			l, err := parseRole(f.Name(), string(data), path)
			if err != nil {
				t.Error(err)
				continue
			}
			cfgs[d.Name()+"/"+f.Name()] = l
		}
	}
	if want := append(slices.Clone(regions), "global"); !slices.Equal(sorted(seen), sorted(want)) {
		t.Fatalf("config/ holds %v, want %v", seen, want)
	}
	for _, r := range regions {
		for _, f := range roles {
			if _, ok := cfgs[r+"/"+f]; !ok {
				t.Errorf("config/%s/%s is missing or does not load", r, f)
			}
		}
	}
	if t.Failed() {
		return
	}

	global := cfgs["global/agent.toml"].agent
	if global.Gossip.Cluster != "global" || !slices.Contains(global.DB.SchemaPaths, "/etc/patina/schemas/global") {
		t.Errorf("global agent: cluster %q, schemas %v: want the global cluster and schema", global.Gossip.Cluster, global.DB.SchemaPaths)
	}
	for _, r := range regions {
		a := cfgs[r+"/agent.toml"].agent
		h := cfgs[r+"/host.toml"].host
		b := cfgs[r+"/bridge.toml"].bridge
		p := cfgs[r+"/proxy.toml"].proxy
		if a.Gossip.Cluster != r || a.Gossip.Region != r || h.Host.Region != r || b.Bridge.Region != r || p.Region.Name != r {
			t.Errorf("%s: the agent's cluster/region (%s/%s), host, bridge and proxy regions (%s, %s, %s) must all be %s",
				r, a.Gossip.Cluster, a.Gossip.Region, h.Host.Region, b.Bridge.Region, p.Region.Name, r)
		}
		if !slices.Contains(a.DB.SchemaPaths, "/etc/patina/schemas/regional") {
			t.Errorf("%s agent: schemas %v, want /etc/patina/schemas/regional", r, a.DB.SchemaPaths)
		}
		api := "http://" + a.API.Addr
		if len(h.Agent.API) == 0 || h.Agent.API[0] != api {
			t.Errorf("%s host: agent.api %v should start with its own agent, %s", r, h.Agent.API, api)
		}
		if !slices.Contains(b.Region.Agents, api) {
			t.Errorf("%s bridge: region.agents %v lacks the agent %s", r, b.Region.Agents, api)
		}
		if h.Agent.Token != a.API.BearerToken || b.Region.Token != a.API.BearerToken {
			t.Errorf("%s: the host's and the bridge's region token must be the agents' bearer_token", r)
		}
		if b.Global.Token != global.API.BearerToken {
			t.Errorf("%s bridge: global.token must be the global agents' bearer_token", r)
		}
		// Local DNS, proxy and other regions all reach the region through
		// the same Lookup addresses.
		if !slices.Contains(b.Directory.Lookup, a.GRPC.Addr) || !slices.Equal(p.Region.Lookup, b.Directory.Lookup) {
			t.Errorf("%s: agent grpc %s, bridge directory.lookup %v and proxy region.lookup %v disagree",
				r, a.GRPC.Addr, b.Directory.Lookup, p.Region.Lookup)
		}
		// The region's own global agent comes first.
		if len(p.Global.Agents) != len(regions) || len(b.Global.Agents) != len(regions) {
			t.Errorf("%s: list every region's global agent in the proxy and the bridge", r)
		} else if !strings.HasPrefix(p.Global.Agents[0], hostOf(b.Global.Agents[0])) {
			t.Errorf("%s: proxy global.agents %v and bridge global.agents %v do not start at the same agent", r, p.Global.Agents, b.Global.Agents)
		}
		// gRPC is TLS with a fleet-wide token: the proxy (and DNS) use one
		// [grpc] section for every region's agents and the global ones.
		if a.GRPC.CertFile == "" || p.GRPC.CAFile == "" {
			t.Errorf("%s: the agent serves gRPC over TLS and the proxy checks it (agent cert_file, proxy ca_file)", r)
		}
		if a.GRPC.BearerToken == "" || p.GRPC.Token != a.GRPC.BearerToken || global.GRPC.BearerToken != a.GRPC.BearerToken {
			t.Errorf("%s: the agents' gRPC bearer_token, the global agents' and the proxy's [grpc] token must be one", r)
		}
		for _, f := range []string{a.Gossip.TLS.CAFile, a.Gossip.TLS.CertFile, a.Gossip.TLS.KeyFile, a.GRPC.CertFile, p.GRPC.CAFile} {
			if !strings.HasPrefix(f, "/etc/patina/tls/") {
				t.Errorf("%s: TLS file %q is not under /etc/patina/tls", r, f)
			}
		}
	}
	// The schema directories named exist in the repository, where
	// installation copies them from.
	for _, s := range []string{"regional", "global"} {
		if m, _ := filepath.Glob(filepath.Join("..", "schemas", s, "*.sql")); len(m) == 0 {
			t.Errorf("schemas/%s holds no .sql file", s)
		}
	}
}

func hostOf(u string) string {
	u = strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://")
	if i := strings.LastIndex(u, ":"); i >= 0 {
		return u[:i]
	}
	return u
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	sort.Strings(s)
	return s
}

// TestExamplesMatchUnits: every example starts with the command line
// that runs it, and that command line is a unit's ExecStart, so the file
// is installed where the unit reads it.
func TestExamplesMatchUnits(t *testing.T) {
	units, _ := filepath.Glob(filepath.Join("systemd", "*.service"))
	if len(units) == 0 {
		t.Fatal("no units in systemd/")
	}
	execs := map[string]string{}
	for _, u := range units {
		data, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			if cmd, ok := strings.CutPrefix(line, "ExecStart=/usr/local/bin/"); ok {
				execs[cmd] = u
			}
		}
	}
	examples, _ := filepath.Glob(filepath.Join("config", "*", "*.toml"))
	for _, e := range examples {
		f, err := os.Open(e)
		if err != nil {
			t.Fatal(err)
		}
		first, _ := bufio.NewReader(f).ReadString('\n')
		f.Close()
		cmd := strings.TrimSpace(strings.TrimPrefix(first, "#"))
		if _, ok := execs[cmd]; !ok {
			t.Errorf("%s: first line %q is no unit's ExecStart (units run %v)", e, cmd, keys(execs))
		}
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// placeholders are what the agents' init containers fill in per pod.
var (
	placeholders = strings.NewReplacer("@POD_IP@", "10.244.0.7", "@POD_NAME@", "patina-ams-0")
	placeholder  = regexp.MustCompile(`@[A-Z_]+@`)
)

// TestManifests: every YAML file under deploy/ parses; every Kubernetes
// object names its kind and itself; the kustomization lists files that
// exist; the configurations in ConfigMaps load with their roles'
// loaders (after the per-pod substitution); the agents' StatefulSets
// have a headless Service, volume claims, and probes on GET /v1/health.
func TestManifests(t *testing.T) {
	var files []string
	err := filepath.WalkDir(".", func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found only %v", files)
	}
	statefulSets := 0
	for _, path := range files {
		docs, err := yamlDocs(path)
		if err != nil {
			t.Errorf("%s: %v", path, err)
			continue
		}
		if !strings.HasPrefix(path, "k8s"+string(filepath.Separator)) {
			continue
		}
		headless := map[string]bool{}
		for _, d := range docs {
			if d.Kind == "Service" && d.Spec.ClusterIP == "None" {
				headless[d.Metadata.Name] = true
			}
		}
		for i, d := range docs {
			where := fmt.Sprintf("%s document %d", path, i+1)
			if d.APIVersion == "" || d.Kind == "" {
				t.Errorf("%s: no apiVersion or kind", where)
				continue
			}
			switch d.Kind {
			case "Kustomization":
				for _, r := range d.Resources {
					if _, err := os.Stat(filepath.Join(filepath.Dir(path), r)); err != nil {
						t.Errorf("%s: resource %s: %v", where, r, err)
					}
				}
				continue
			case "ConfigMap":
				for key, text := range d.Data {
					text = placeholders.Replace(text)
					if m := placeholder.FindString(text); m != "" {
						t.Errorf("%s: %s: unknown placeholder %s", where, key, m)
					}
					if _, err := parseRole(key, text, where+" "+key); err != nil {
						t.Error(err)
					}
				}
			case "StatefulSet":
				statefulSets++
				checkStatefulSet(t, where, d, headless)
			}
			if d.Metadata.Name == "" {
				t.Errorf("%s: %s without metadata.name", where, d.Kind)
			}
		}
	}
	if statefulSets < 2 {
		t.Errorf("%d StatefulSets, want the regional and the global agents'", statefulSets)
	}
}

func checkStatefulSet(t *testing.T, where string, d object, headless map[string]bool) {
	t.Helper()
	if !headless[d.Spec.ServiceName] {
		t.Errorf("%s: serviceName %q is no headless Service in the same file", where, d.Spec.ServiceName)
	}
	if len(d.Spec.VolumeClaimTemplates) == 0 {
		t.Errorf("%s: no volumeClaimTemplates: an agent's database must outlive its pod", where)
	}
	for _, c := range d.Spec.Template.Spec.Containers {
		ports := map[string]bool{}
		for _, p := range c.Ports {
			ports[p.Name] = true
		}
		for name, p := range map[string]*probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
			switch {
			case p == nil || p.HTTPGet == nil:
				t.Errorf("%s: container %s has no HTTP %s probe", where, c.Name, name)
			case p.HTTPGet.Path != "/v1/health":
				t.Errorf("%s: %s probe on %s, want /v1/health", where, name, p.HTTPGet.Path)
			case !ports[p.HTTPGet.Port]:
				t.Errorf("%s: %s probe on port %q, which the container does not name", where, name, p.HTTPGet.Port)
			}
		}
		if len(c.Args) < 3 || c.Args[0] != "agent" || c.Args[1] != "--config" {
			t.Errorf("%s: container args %v, want agent --config FILE", where, c.Args)
		}
	}
}

// object is the part of a Kubernetes object (or kustomization) checked.
type object struct {
	APIVersion string `yaml:"apiVersion"`
	Kind       string `yaml:"kind"`
	Metadata   struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Resources []string          `yaml:"resources"`
	Data      map[string]string `yaml:"data"`
	Spec      struct {
		ClusterIP            string `yaml:"clusterIP"`
		ServiceName          string `yaml:"serviceName"`
		VolumeClaimTemplates []any  `yaml:"volumeClaimTemplates"`
		Template             struct {
			Spec struct {
				Containers []struct {
					Name  string   `yaml:"name"`
					Args  []string `yaml:"args"`
					Ports []struct {
						Name string `yaml:"name"`
					} `yaml:"ports"`
					ReadinessProbe *probe `yaml:"readinessProbe"`
					LivenessProbe  *probe `yaml:"livenessProbe"`
				} `yaml:"containers"`
			} `yaml:"spec"`
		} `yaml:"template"`
	} `yaml:"spec"`
}

type probe struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"`
	} `yaml:"httpGet"`
}

// yamlDocs parses every document of a YAML file, strictly enough to
// catch syntax errors and mistyped fields of the parts checked.
func yamlDocs(path string) ([]object, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []object
	dec := yaml.NewDecoder(f)
	for {
		var node yaml.Node
		if err := dec.Decode(&node); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, err
		}
		var o object
		if err := node.Decode(&o); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	if len(out) == 0 {
		return nil, errors.New("no YAML document")
	}
	return out, nil
}

// requiredMetrics are what the dashboard must show, at least.
var requiredMetrics = []string{
	"patina_changesets_applied_total", "patina_changesets_received_total", "patina_changesets_dropped_total",
	"patina_broadcasts_sent_total", "patina_broadcast_queue_size", "patina_sync_rounds_total",
	"patina_sync_versions_pulled_total", "patina_gaps", "patina_members", "patina_replication_lag_seconds_bucket",
	"patina_store_write_seconds_bucket", "patina_subscriptions", "patina_subscription_lag_seconds",
	"patina_watchdog_stalls_total",
}

var metricName = regexp.MustCompile(`\b(?:patina|go|process)_[a-zA-Z0-9_]+`)

// TestDashboardMetrics: every metric the Grafana dashboard queries is in
// a real agent's GET /metrics (an agent of a one-node region, with
// gossip, subscriptions and watchdog, like production), and the
// dashboard covers the metrics operators need.
func TestDashboardMetrics(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("grafana", "patina.json"))
	if err != nil {
		t.Fatal(err)
	}
	var dash any
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("grafana/patina.json: %v", err)
	}
	used := map[string]bool{}
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, x := range v {
				if s, ok := x.(string); ok && (k == "expr" || k == "query" || k == "definition") {
					for _, m := range metricName.FindAllString(s, -1) {
						used[m] = true
					}
				}
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(dash)
	for _, m := range requiredMetrics {
		if !used[m] {
			t.Errorf("the dashboard does not show %s", m)
		}
	}

	ctx := context.Background()
	r, err := devcluster.StartRegion(ctx, devcluster.RegionOptions{Nodes: 1, Dir: t.TempDir(),
		SchemaPaths: []string{filepath.Join("..", "schemas", "regional")}})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := r.Stop(); err != nil {
			t.Error(err)
		}
	}()
	served := scrape(t, r.Nodes[0].API+"/metrics")
	var missing []string
	for m := range used {
		if !served[m] {
			missing = append(missing, m)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("the dashboard queries metrics an agent does not serve: %v", missing)
	}
}

// scrape returns the names of the samples a /metrics endpoint serves.
func scrape(t *testing.T, url string) map[string]bool {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(names) == 0 {
		t.Fatalf("GET %s served no samples", url)
	}
	return names
}
