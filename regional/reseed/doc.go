// Package reseed rebuilds a cluster's rows from its sources of truth —
// the hosts' bbolt files, or a SQLite database holding a table — by
// writing them through the agents' HTTP API, as any client would. It owns
// splitting the key space into ranges, running ranges in parallel under a
// rate limit, retrying a failed range without holding up the others,
// recording finished ranges so an interrupted run resumes, and the
// summary. It never opens an agent's database and never deletes a row
// that its sources do not say is gone.
package reseed
