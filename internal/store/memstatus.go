package store

/*
int sqlite3_config(int, ...);

// SQLITE_CONFIG_MEMSTATUS is 9.
static int patinaMemStatusOff(void) { return sqlite3_config(9, 0); }
*/
import "C"

// SQLite keeps process-wide counts of the memory it allocates (for
// sqlite3_status and sqlite3_memory_used), taking a mutex and looking up
// the block's size on every allocation and free. Nothing here reads
// them, and SQLite's documentation names turning them off as a way to
// make its allocations faster: they were about 1% of an agent's CPU under
// load (the allocator's size lookups and that mutex, by perf). Like the
// page cache, this can be set only before SQLite starts, so it is set
// when the package initializes; memStatusOff says whether it took.
var memStatusOff = C.patinaMemStatusOff() == 0
