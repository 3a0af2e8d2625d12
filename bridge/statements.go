package bridge

import (
	"encoding/json"
	"slices"
	"sort"

	"github.com/patina-db/patina/client"
)

// upsertCounts writes the rows listed in its JSON parameter, an array of
// [app, machine_count, healthy_count]. The WHERE keeps identical counts
// from touching any cell, updated_at included: such a write consumes no
// version, so two bridges writing the same counts add nothing. One
// statement for every row keeps a flush's request small.
const upsertCounts = `INSERT INTO app_regions (app, region, machine_count, healthy_count, updated_at)
SELECT json_extract(value, '$[0]'), ?1, json_extract(value, '$[1]'), json_extract(value, '$[2]'), ?2 FROM json_each(?3) WHERE true
ON CONFLICT (app, region) DO UPDATE SET machine_count = excluded.machine_count, healthy_count = excluded.healthy_count,
 updated_at = excluded.updated_at
WHERE app_regions.machine_count IS NOT excluded.machine_count OR app_regions.healthy_count IS NOT excluded.healthy_count`

// deleteApps removes the rows of the apps in its JSON array parameter.
const deleteApps = `DELETE FROM app_regions WHERE region = ?1 AND app IN (SELECT value FROM json_each(?2))`

// readRegion is the region's rows as the global cluster holds them.
const readRegion = `SELECT app, machine_count, healthy_count FROM app_regions WHERE region = ?`

// upsertDirectory writes the region's directory row, touching no cell
// when it already says the same.
const upsertDirectory = `INSERT INTO regions (name, lookup, api, latitude, longitude, bridge_heartbeat) VALUES (?1, ?2, ?6, ?3, ?4, ?5)
ON CONFLICT (name) DO UPDATE SET lookup = excluded.lookup, api = excluded.api, latitude = excluded.latitude, longitude = excluded.longitude
WHERE regions.lookup IS NOT excluded.lookup OR regions.api IS NOT excluded.api OR regions.latitude IS NOT excluded.latitude OR regions.longitude IS NOT excluded.longitude`

// beat advances the heartbeat only when it is older than half an
// interval, so that a second bridge of the region, beating a moment
// after the first, changes nothing.
const beat = `UPDATE regions SET bridge_heartbeat = ?1 WHERE name = ?2 AND bridge_heartbeat < ?3`

// diff lists what must change for the global rows to go from written to
// current: the apps whose counts differ or are new, and the apps gone.
func diff(written, current map[string]Counts) (upserts map[string]Counts, gone []string) {
	upserts = map[string]Counts{}
	for app, c := range current {
		if w, ok := written[app]; !ok || w != c {
			upserts[app] = c
		}
	}
	for app := range written {
		if _, ok := current[app]; !ok {
			gone = append(gone, app)
		}
	}
	sort.Strings(gone)
	return upserts, gone
}

// flushStatements is the one transaction that writes a diff; none when
// there is nothing to write.
func flushStatements(region string, upserts map[string]Counts, gone []string, nowMS int64) []client.Statement {
	var stmts []client.Statement
	if len(upserts) > 0 {
		apps := make([]string, 0, len(upserts))
		for app := range upserts {
			apps = append(apps, app)
		}
		sort.Strings(apps)
		rows := make([][3]any, len(apps))
		for i, app := range apps {
			c := upserts[app]
			rows[i] = [3]any{app, c.Machines, c.Healthy}
		}
		list, _ := json.Marshal(rows) // strings and integers always marshal
		stmts = append(stmts, client.Statement{Query: upsertCounts, Params: []any{region, nowMS, string(list)}})
	}
	if len(gone) > 0 {
		list, _ := json.Marshal(gone)
		stmts = append(stmts, client.Statement{Query: deleteApps, Params: []any{region, string(list)}})
	}
	return stmts
}

// directoryStatements refresh the region's directory row and heartbeat.
// The row lists the region's agents' HTTP APIs too (the bridge's own
// list), for operators' tools such as region health.
//
// Both lists are sorted: two bridges of one region that list the same
// agents in another order (each its nearest first) then write the same
// row, and their heartbeats change nothing else.
func directoryStatements(region string, d DirectoryConfig, agents []string, nowMS int64, interval int64) []client.Statement {
	list, _ := json.Marshal(sorted(d.Lookup))
	apis, _ := json.Marshal(sorted(agents))
	return []client.Statement{
		{Query: upsertDirectory, Params: []any{region, string(list), d.Latitude, d.Longitude, nowMS, string(apis)}},
		{Query: beat, Params: []any{nowMS, region, nowMS - interval/2}},
	}
}

// sorted is a sorted copy of s, never nil.
func sorted(s []string) []string {
	out := slices.Clone(nonNil(s))
	slices.Sort(out)
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
