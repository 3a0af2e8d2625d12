// Package crdt owns patina's replication rules: the value and change types,
// the last-write-wins merge decision, primary-key packing, and the per-actor
// version bookkeeping.
//
// Everything here is pure: no goroutines, no sockets, no clocks, no SQLite.
// The store feeds it what it read and writes back what it decided, which is
// what lets the rules be property-tested in isolation.
package crdt
