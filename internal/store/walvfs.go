package store

/*
int patinaWalRegister(const char *name);
void patinaWalCounters(long long *in, long long *out, long long *barrier);
*/
import "C"

import (
	"fmt"
	"sync"
)

// The store's connections open the database through walVFS, a thin layer
// over SQLite's default VFS (walvfs.c). SQLite writes each WAL frame with
// two writes, its 24-byte header and its page; a commit of a few rows is
// seven frames or more, so fourteen system calls, each costing about as
// much as copying the page. The layer holds a commit's WAL writes and
// passes them on as one write when the commit's last frame arrives (the
// one whose header carries the database size), so that a failure is
// still that write's and fails that commit. Nothing else changes: the
// same bytes reach the same offsets before the commit returns, and
// before any other connection can see the frames (SQLite publishes them
// after its writes, through the wal-index; the layer also writes out
// anything held when that happens, and before any read, sync, truncate
// or size of the WAL). Files other than the WAL pass straight through.
//
// The store never uses locking_mode=EXCLUSIVE, and the layer is not for
// it: SQLite then keeps the wal-index in process memory and calls
// neither the barrier nor the lock release the layer relies on.
const walVFS = "patina-wal"

var registerWAL = sync.OnceValue(func() error {
	name := C.CString(walVFS) // kept: SQLite holds the pointer
	if rc := C.patinaWalRegister(name); rc != 0 {
		return fmt.Errorf("store: register the %s VFS: SQLite error %d", walVFS, int(rc))
	}
	return nil
})

// walWrites reports the writes SQLite made to WAL files through walVFS,
// those passed on to the file system, and how many times bytes were
// still held when SQLite published frames, process-wide.
func walWrites() (in, out, atBarrier int64) {
	var i, o, b C.longlong
	C.patinaWalCounters(&i, &o, &b)
	return int64(i), int64(o), int64(b)
}
