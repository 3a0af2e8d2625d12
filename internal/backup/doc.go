// Package backup moves a node's database in and out as files: Fetch takes
// a consistent snapshot from a live agent over its API into a checked
// file, and Restore puts such a file in place as an agent's database,
// under a new actor id. The SQL of both (VACUUM INTO, the checks, the new
// identity) is the store's; this package owns the files: temporary names,
// fsync, atomic renames, and leaving nothing partial behind.
package backup
