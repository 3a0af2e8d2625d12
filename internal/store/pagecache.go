package store

/*
int patinaPageCacheInstall(void);
long long patinaPageCacheSpareMoves(void);
*/
import "C"

// SQLite's page cache remembers the highest page number it has held, and
// at the end of every write transaction drops the pages above the
// database's size. When that highest number is far above the size, it
// does so by walking its whole hash table, every page the cache holds.
// One page number is far above the size in every database smaller than
// a gigabyte: when a B-tree split leaves its new pages out of order,
// SQLite swaps their numbers, parking one page for a moment at the
// number of the page that holds the file's lock bytes (PENDING_BYTE,
// which no database uses). Every commit that split a page that way then
// walked the cache: with the store's 64 MiB cache filled, 32,768 pages
// per commit, where a commit's own work is a few dozen.
//
// pagecache.c wraps SQLite's own cache and stores a page parked at that
// number under 0, which no page has, so the highest number stays where
// the data is. Nothing else changes: the same pages, the same eviction.
// SQLite takes a page cache only before it starts, so the layer is put in
// place when this package initializes; if SQLite had started already
// (it never has: nothing of ours opens a database before main runs), the
// default cache serves and pageCacheInstalled says so.
var pageCacheInstalled = C.patinaPageCacheInstall() == 0

// pageCacheSpareMoves counts the times the layer stored or looked up a
// page under the parked number, process-wide.
func pageCacheSpareMoves() int64 { return int64(C.patinaPageCacheSpareMoves()) }
