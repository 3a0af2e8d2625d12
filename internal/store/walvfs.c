// A VFS that writes each commit's WAL frames with one write instead of
// two per frame. See walvfs.go for why and for the rules it keeps.
//
// The declarations below are SQLite's VFS interface (sqlite3.h), which
// is stable across releases; the library itself is the one
// mattn/go-sqlite3 compiles into the binary.

#include <stdlib.h>
#include <string.h>

typedef long long sqlite3_int64;
typedef struct sqlite3_file sqlite3_file;
typedef struct sqlite3_io_methods sqlite3_io_methods;
typedef struct sqlite3_vfs sqlite3_vfs;
typedef void (*sqlite3_syscall_ptr)(void);

struct sqlite3_file {
	const struct sqlite3_io_methods *pMethods;
};

struct sqlite3_io_methods {
	int iVersion;
	int (*xClose)(sqlite3_file *);
	int (*xRead)(sqlite3_file *, void *, int iAmt, sqlite3_int64 iOfst);
	int (*xWrite)(sqlite3_file *, const void *, int iAmt, sqlite3_int64 iOfst);
	int (*xTruncate)(sqlite3_file *, sqlite3_int64 size);
	int (*xSync)(sqlite3_file *, int flags);
	int (*xFileSize)(sqlite3_file *, sqlite3_int64 *pSize);
	int (*xLock)(sqlite3_file *, int);
	int (*xUnlock)(sqlite3_file *, int);
	int (*xCheckReservedLock)(sqlite3_file *, int *pResOut);
	int (*xFileControl)(sqlite3_file *, int op, void *pArg);
	int (*xSectorSize)(sqlite3_file *);
	int (*xDeviceCharacteristics)(sqlite3_file *);
	int (*xShmMap)(sqlite3_file *, int iPg, int pgsz, int, void volatile **);
	int (*xShmLock)(sqlite3_file *, int offset, int n, int flags);
	void (*xShmBarrier)(sqlite3_file *);
	int (*xShmUnmap)(sqlite3_file *, int deleteFlag);
	int (*xFetch)(sqlite3_file *, sqlite3_int64 iOfst, int iAmt, void **pp);
	int (*xUnfetch)(sqlite3_file *, sqlite3_int64 iOfst, void *p);
};

struct sqlite3_vfs {
	int iVersion;
	int szOsFile;
	int mxPathname;
	sqlite3_vfs *pNext;
	const char *zName;
	void *pAppData;
	int (*xOpen)(sqlite3_vfs *, const char *zName, sqlite3_file *, int flags, int *pOutFlags);
	int (*xDelete)(sqlite3_vfs *, const char *zName, int syncDir);
	int (*xAccess)(sqlite3_vfs *, const char *zName, int flags, int *pResOut);
	int (*xFullPathname)(sqlite3_vfs *, const char *zName, int nOut, char *zOut);
	void *(*xDlOpen)(sqlite3_vfs *, const char *zFilename);
	void (*xDlError)(sqlite3_vfs *, int nByte, char *zErrMsg);
	void (*(*xDlSym)(sqlite3_vfs *, void *, const char *zSymbol))(void);
	void (*xDlClose)(sqlite3_vfs *, void *);
	int (*xRandomness)(sqlite3_vfs *, int nByte, char *zOut);
	int (*xSleep)(sqlite3_vfs *, int microseconds);
	int (*xCurrentTime)(sqlite3_vfs *, double *);
	int (*xGetLastError)(sqlite3_vfs *, int, char *);
	int (*xCurrentTimeInt64)(sqlite3_vfs *, sqlite3_int64 *);
	int (*xSetSystemCall)(sqlite3_vfs *, const char *zName, sqlite3_syscall_ptr);
	sqlite3_syscall_ptr (*xGetSystemCall)(sqlite3_vfs *, const char *zName);
	const char *(*xNextSystemCall)(sqlite3_vfs *, const char *zName);
};

extern sqlite3_vfs *sqlite3_vfs_find(const char *zVfsName);
extern int sqlite3_vfs_register(sqlite3_vfs *, int makeDflt);
extern sqlite3_file *sqlite3_database_file_object(const char *);
extern void sqlite3_log(int iErrCode, const char *zFormat, ...);

#define SQLITE_OK 0
#define SQLITE_NOMEM 7
#define SQLITE_IOERR 10
#define SQLITE_OPEN_MAIN_DB 0x00000100
#define SQLITE_OPEN_WAL 0x00080000
#define SQLITE_SHM_UNLOCK 1

// WAL frame header size; a commit frame's header carries the database
// size after the commit (non-zero) at bytes 4..7.
#define FRAME_HEADER 24
// Buffered WAL bytes are written out past this much. The unix VFS
// writes at most 128 KiB - 1 bytes per call (it masks the length).
#define MAX_BUFFER (64 << 10)

enum { KIND_OTHER, KIND_MAIN, KIND_WAL };

typedef struct walFile walFile;

// walFile wraps the base VFS's file, which follows it in memory.
struct walFile {
	sqlite3_file base;
	int kind;
	// WAL: the database file it belongs to, if that is ours.
	walFile *main;
	// Main database: its WAL, while open.
	walFile *wal;
	// WAL: bytes written but not yet passed on, for offset off.
	char *buf;
	int len, cap;
	sqlite3_int64 off;
	// WAL: the last write was a commit frame's header; its page
	// completes the commit.
	int commitNext;
};

static sqlite3_vfs walVfs;
static sqlite3_vfs *baseVfs;

// Counters for tests: writes passed to the base VFS for WAL files,
// writes SQLite made to them, and barriers that found bytes held.
static volatile long long walWritesOut, walWritesIn, walBarrierFlushes;

static sqlite3_file *realFile(walFile *p) { return (sqlite3_file *)&p[1]; }

static int flushWal(walFile *p) {
	if (p->len == 0) {
		return SQLITE_OK;
	}
	sqlite3_file *r = realFile(p);
	int rc = r->pMethods->xWrite(r, p->buf, p->len, p->off);
	__atomic_add_fetch(&walWritesOut, 1, __ATOMIC_RELAXED);
	p->len = 0;
	return rc;
}

// dropWal forgets what a WAL holds without writing it: frames of a
// transaction that rolled back.
static void dropWal(walFile *p) {
	p->len = 0;
	p->commitNext = 0;
}

// flushHeld writes out what a WAL file holds, when something other than
// its own frames needs the file as it is; other files hold nothing. A
// commit never has anything else between its last frame's header and
// its page, so no commit is pending afterwards. (The flushes inside
// wWrite, for a write that does not follow on or does not fit, keep the
// mark: a commit frame's page may be the write that does not fit.)
static int flushHeld(walFile *p) {
	if (p->kind != KIND_WAL) {
		return SQLITE_OK;
	}
	p->commitNext = 0;
	return flushWal(p);
}

static int wClose(sqlite3_file *f) {
	walFile *p = (walFile *)f;
	int rc = SQLITE_OK;
	if (p->kind == KIND_WAL) {
		rc = flushHeld(p);
		if (p->main) {
			p->main->wal = 0;
		}
		free(p->buf);
		p->buf = 0;
	} else if (p->kind == KIND_MAIN && p->wal) {
		p->wal->main = 0;
	}
	sqlite3_file *r = realFile(p);
	int rc2 = r->pMethods->xClose(r);
	return rc != SQLITE_OK ? rc : rc2;
}

static int wRead(sqlite3_file *f, void *b, int n, sqlite3_int64 off) {
	walFile *p = (walFile *)f;
	int rc = flushHeld(p);
	sqlite3_file *r = realFile(p);
	return rc != SQLITE_OK ? rc : r->pMethods->xRead(r, b, n, off);
}

static int wWrite(sqlite3_file *f, const void *b, int n, sqlite3_int64 off) {
	walFile *p = (walFile *)f;
	sqlite3_file *r = realFile(p);
	if (p->kind != KIND_WAL) {
		return r->pMethods->xWrite(r, b, n, off);
	}
	__atomic_add_fetch(&walWritesIn, 1, __ATOMIC_RELAXED);
	int rc;
	if (p->len > 0 && off != p->off + p->len) {
		if ((rc = flushWal(p)) != SQLITE_OK) {
			return rc;
		}
	}
	if (p->len + n > MAX_BUFFER) {
		if ((rc = flushWal(p)) != SQLITE_OK) {
			return rc;
		}
		if (n > MAX_BUFFER) {
			__atomic_add_fetch(&walWritesOut, 1, __ATOMIC_RELAXED);
			return r->pMethods->xWrite(r, b, n, off);
		}
	}
	if (p->len + n > p->cap) {
		int cap = p->cap ? p->cap : MAX_BUFFER;
		while (cap < p->len + n) {
			cap *= 2;
		}
		char *nb = realloc(p->buf, cap);
		if (!nb) {
			// Write what is held, then this, unbuffered.
			if ((rc = flushWal(p)) != SQLITE_OK) {
				return rc;
			}
			__atomic_add_fetch(&walWritesOut, 1, __ATOMIC_RELAXED);
			return r->pMethods->xWrite(r, b, n, off);
		}
		p->buf = nb;
		p->cap = cap;
	}
	if (p->len == 0) {
		p->off = off;
	}
	memcpy(p->buf + p->len, b, n);
	p->len += n;
	if (p->commitNext) {
		// The commit frame's page: the commit's frames are all here.
		// Written now, a failure is this write's and fails the commit.
		p->commitNext = 0;
		return flushWal(p);
	}
	if (n == FRAME_HEADER) {
		const unsigned char *h = b;
		p->commitNext = (h[4] | h[5] | h[6] | h[7]) != 0;
	}
	return SQLITE_OK;
}

static int wTruncate(sqlite3_file *f, sqlite3_int64 size) {
	walFile *p = (walFile *)f;
	int rc = flushHeld(p);
	sqlite3_file *r = realFile(p);
	return rc != SQLITE_OK ? rc : r->pMethods->xTruncate(r, size);
}

static int wSync(sqlite3_file *f, int flags) {
	walFile *p = (walFile *)f;
	int rc = flushHeld(p);
	sqlite3_file *r = realFile(p);
	return rc != SQLITE_OK ? rc : r->pMethods->xSync(r, flags);
}

static int wFileSize(sqlite3_file *f, sqlite3_int64 *size) {
	walFile *p = (walFile *)f;
	int rc = flushHeld(p);
	sqlite3_file *r = realFile(p);
	return rc != SQLITE_OK ? rc : r->pMethods->xFileSize(r, size);
}

static int wLock(sqlite3_file *f, int l) {
	sqlite3_file *r = realFile((walFile *)f);
	return r->pMethods->xLock(r, l);
}

static int wUnlock(sqlite3_file *f, int l) {
	sqlite3_file *r = realFile((walFile *)f);
	return r->pMethods->xUnlock(r, l);
}

static int wCheckReservedLock(sqlite3_file *f, int *out) {
	sqlite3_file *r = realFile((walFile *)f);
	return r->pMethods->xCheckReservedLock(r, out);
}

static int wFileControl(sqlite3_file *f, int op, void *arg) {
	walFile *p = (walFile *)f;
	int rc = flushHeld(p);
	sqlite3_file *r = realFile(p);
	return rc != SQLITE_OK ? rc : r->pMethods->xFileControl(r, op, arg);
}

static int wSectorSize(sqlite3_file *f) {
	sqlite3_file *r = realFile((walFile *)f);
	return r->pMethods->xSectorSize(r);
}

static int wDeviceCharacteristics(sqlite3_file *f) {
	sqlite3_file *r = realFile((walFile *)f);
	return r->pMethods->xDeviceCharacteristics(r);
}

static int wShmMap(sqlite3_file *f, int pg, int pgsz, int extend, void volatile **pp) {
	sqlite3_file *r = realFile((walFile *)f);
	return r->pMethods->xShmMap(r, pg, pgsz, extend, pp);
}

// Releasing the WAL's write lock (lock 0) ends a write transaction. A
// commit has been written out by then (its last frame flushes, and the
// barrier before the unlock flushes anything else), so whatever is still
// held belongs to a transaction that rolled back after spilling pages:
// SQLite drops its frames by not publishing them. Written out later, at
// this connection's next read or write, they would land on frames
// another writer has committed since at the same offsets. Drop them.
static int wShmLock(sqlite3_file *f, int offset, int n, int flags) {
	walFile *p = (walFile *)f;
	if ((flags & SQLITE_SHM_UNLOCK) && offset <= 0 && offset + n > 0 && p->kind == KIND_MAIN && p->wal) {
		dropWal(p->wal);
	}
	sqlite3_file *r = realFile(p);
	return r->pMethods->xShmLock(r, offset, n, flags);
}

// SQLite publishes new WAL frames to other connections by writing the
// wal-index header, with a barrier in between its two copies. Nothing
// may be published that is not in the file: whatever the WAL still holds
// goes out first. A commit's own frames are written out by its last one;
// what can be left is a frame header SQLite rewrote in place (it fixes
// checksums when a transaction wrote a page twice), an overwrite within
// the file. A failure cannot be returned, and going on would publish
// frames that are not there, so it stops the process: on restart,
// recovery ends the WAL at the last whole commit.
static void wShmBarrier(sqlite3_file *f) {
	walFile *p = (walFile *)f;
	if (p->kind == KIND_MAIN && p->wal) {
		if (p->wal->len > 0) {
			__atomic_add_fetch(&walBarrierFlushes, 1, __ATOMIC_RELAXED);
		}
		if (flushHeld(p->wal) != SQLITE_OK) {
			sqlite3_log(SQLITE_IOERR, "patina-wal: cannot write WAL frames before publishing them");
			abort();
		}
	}
	sqlite3_file *r = realFile(p);
	r->pMethods->xShmBarrier(r);
}

static int wShmUnmap(sqlite3_file *f, int del) {
	sqlite3_file *r = realFile((walFile *)f);
	return r->pMethods->xShmUnmap(r, del);
}

static int wFetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp) {
	sqlite3_file *r = realFile((walFile *)f);
	return r->pMethods->xFetch(r, off, n, pp);
}

static int wUnfetch(sqlite3_file *f, sqlite3_int64 off, void *pp) {
	sqlite3_file *r = realFile((walFile *)f);
	return r->pMethods->xUnfetch(r, off, pp);
}

static sqlite3_io_methods walMethods = {
	3,
	wClose,
	wRead,
	wWrite,
	wTruncate,
	wSync,
	wFileSize,
	wLock,
	wUnlock,
	wCheckReservedLock,
	wFileControl,
	wSectorSize,
	wDeviceCharacteristics,
	wShmMap,
	wShmLock,
	wShmBarrier,
	wShmUnmap,
	wFetch,
	wUnfetch,
};

static int wOpen(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *outFlags) {
	walFile *p = (walFile *)f;
	memset(p, 0, sizeof(*p));
	sqlite3_file *r = realFile(p);
	int rc = baseVfs->xOpen(baseVfs, name, r, flags, outFlags);
	if (rc != SQLITE_OK || r->pMethods == 0) {
		// SQLite calls no method of a file whose pMethods is NULL.
		p->base.pMethods = 0;
		return rc;
	}
	// Only files whose base methods have every version-3 method can be
	// wrapped as they are; others are used through the base directly.
	if (r->pMethods->iVersion < 3) {
		rc = SQLITE_IOERR;
		r->pMethods->xClose(r);
		p->base.pMethods = 0;
		return rc;
	}
	if (flags & SQLITE_OPEN_MAIN_DB) {
		p->kind = KIND_MAIN;
	} else if (flags & SQLITE_OPEN_WAL) {
		p->kind = KIND_WAL;
		sqlite3_file *db = name ? sqlite3_database_file_object(name) : 0;
		if (db && db->pMethods == &walMethods) {
			p->main = (walFile *)db;
			p->main->wal = p;
		}
	}
	p->base.pMethods = &walMethods;
	return SQLITE_OK;
}

// patinaWalRegister registers the VFS under name, on top of the default
// one. It returns an SQLite result code.
int patinaWalRegister(const char *name) {
	baseVfs = sqlite3_vfs_find(0);
	if (!baseVfs) {
		return SQLITE_IOERR;
	}
	memcpy(&walVfs, baseVfs, sizeof(walVfs));
	walVfs.pNext = 0;
	walVfs.zName = name;
	walVfs.pAppData = 0;
	walVfs.szOsFile = (int)sizeof(walFile) + baseVfs->szOsFile;
	walVfs.xOpen = wOpen;
	return sqlite3_vfs_register(&walVfs, 0);
}

void patinaWalCounters(long long *in, long long *out, long long *barrier) {
	*in = __atomic_load_n(&walWritesIn, __ATOMIC_RELAXED);
	*out = __atomic_load_n(&walWritesOut, __ATOMIC_RELAXED);
	*barrier = __atomic_load_n(&walBarrierFlushes, __ATOMIC_RELAXED);
}
