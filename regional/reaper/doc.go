// Package reaper forgets the machines of hosts that have stopped
// publishing. Every host agent records each full re-publish in the
// regional hosts table (regional.Heartbeat); a host whose row stops
// changing is gone, or cut off from the region, and its machines with
// it. After the configured time the reaper deletes their rows, as the
// host's own prune would, so that DNS, the proxy and the bridge's counts
// stop offering them; the host's next re-publish puts them back.
//
// The rules (watch.go) are pure: staleness is measured by the local
// clock from when this agent saw a host's row change, never from the
// host's own stamp, and nothing is forgotten unless most hosts are seen
// publishing, so that an agent cut off from the region does not take
// its own isolation for everyone else's death. The loop (reaper.go)
// polls the table, keeps the observations and deletes: the region's
// first alive agent by name as soon as a host is stale, each later one
// a little after, in case the ones before it do not.
package reaper
