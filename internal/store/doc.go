// Package store owns patina's SQLite database: opening it (WAL, one writer
// connection, a pool of readers), validating and applying schema, the clock
// tables and the change-capture triggers that maintain them, local
// transactions that become versions, the atomic application of remote
// changesets, the reading back of a version's surviving changes, and the
// persisted version bookkeeping.
//
// The merge rules themselves live in internal/crdt; this package only reads
// what they need and writes what they decide. It starts no goroutines.
//
// On-disk layout, per replicated table T (every user table is one):
//
//	T                    the data, exactly as the schema declares it
//	__patina_clock_T     one row per primary key ever seen: the causal length
//	                     and the version credited with it, and per column
//	                     its col_version and the version that wrote it
//	__patina_vx_T        (site, version, key): which rows a version touched,
//	                     insert-only; entries whose row no longer holds a
//	                     change of that version are stale and ignored
//
// plus __patina_sites (actor ids by small ordinal; 0 is this node) and
// __patina_bookkeeping (known and cleared version ranges per actor).
//
// A store holds an advisory lock on <db>.lock from Open to Close, so two
// processes never write one database (they would hand out the same
// versions). Backup copies a live database with VACUUM INTO; CheckFile and
// Reidentify are what a restore needs: verify a copy, and give it a new
// actor id so the versions in it stay the original node's.
//
// Change capture is a set of TEMP triggers installed on the writer
// connection only, so the file on disk carries no triggers, other processes
// (sqlite3 CLI) can read it, and remote changesets are applied on a second
// connection that has no triggers at all.
package store
