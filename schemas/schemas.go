// Package schemas embeds the SQL schemas of patina's two tiers, so a node
// can be started without schema files on disk.
package schemas

import (
	"embed"
	"io/fs"
	"sort"
	"strings"
)

//go:embed regional/*.sql global/*.sql
var files embed.FS

// Regional returns the regional cluster's schema (machines, machine_checks).
func Regional() string { return read("regional") }

// Global returns the global cluster's schema (app_regions, regions).
func Global() string { return read("global") }

func read(dir string) string {
	entries, err := fs.Glob(files, dir+"/*.sql")
	if err != nil {
		panic(err) // the pattern is constant
	}
	sort.Strings(entries)
	var b strings.Builder
	for _, e := range entries {
		data, err := files.ReadFile(e)
		if err != nil {
			panic(err) // embedded at build time
		}
		b.Write(data)
		b.WriteString("\n")
	}
	return b.String()
}
