// SQLite's own page cache with one page number kept out of its bounds.
// See pagecache.go for why.
//
// The declarations below are SQLite's page-cache interface (sqlite3.h),
// which is stable across releases; the library itself is the one
// mattn/go-sqlite3 compiles into the binary.

#include <stdlib.h>

typedef struct sqlite3_pcache sqlite3_pcache;
typedef struct sqlite3_pcache_page sqlite3_pcache_page;

typedef struct sqlite3_pcache_methods2 {
	int iVersion;
	void *pArg;
	int (*xInit)(void *);
	void (*xShutdown)(void *);
	sqlite3_pcache *(*xCreate)(int szPage, int szExtra, int bPurgeable);
	void (*xCachesize)(sqlite3_pcache *, int nCachesize);
	int (*xPagecount)(sqlite3_pcache *);
	sqlite3_pcache_page *(*xFetch)(sqlite3_pcache *, unsigned key, int createFlag);
	void (*xUnpin)(sqlite3_pcache *, sqlite3_pcache_page *, int discard);
	void (*xRekey)(sqlite3_pcache *, sqlite3_pcache_page *, unsigned oldKey, unsigned newKey);
	void (*xTruncate)(sqlite3_pcache *, unsigned iLimit);
	void (*xDestroy)(sqlite3_pcache *);
	void (*xShrink)(sqlite3_pcache *);
} sqlite3_pcache_methods2;

int sqlite3_config(int, ...);

#define SQLITE_ERROR 1
#define SQLITE_CONFIG_PCACHE2 18
#define SQLITE_CONFIG_GETPCACHE2 19

// The byte offset SQLite reserves for its file locks; the page that
// holds it is never part of a database.
#define PENDING_BYTE 0x40000000u

static sqlite3_pcache_methods2 base;

typedef struct {
	sqlite3_pcache *inner;
	unsigned spare; // the page at PENDING_BYTE, for this cache's page size
} cache;

static long long spareMoves;

// key maps the spare page number to 0, which no page has.
static unsigned key(cache *c, unsigned k) {
	if (k == c->spare) {
		__atomic_add_fetch(&spareMoves, 1, __ATOMIC_RELAXED);
		return 0;
	}
	return k;
}

static int pInit(void *arg) {
	(void)arg;
	return base.xInit ? base.xInit(base.pArg) : 0;
}

static void pShutdown(void *arg) {
	(void)arg;
	if (base.xShutdown) {
		base.xShutdown(base.pArg);
	}
}

static sqlite3_pcache *pCreate(int szPage, int szExtra, int bPurgeable) {
	cache *c = malloc(sizeof *c);
	if (!c) {
		return 0;
	}
	c->inner = base.xCreate(szPage, szExtra, bPurgeable);
	if (!c->inner) {
		free(c);
		return 0;
	}
	c->spare = szPage > 0 ? PENDING_BYTE / (unsigned)szPage + 1 : 0;
	return (sqlite3_pcache *)c;
}

static void pCachesize(sqlite3_pcache *p, int n) {
	base.xCachesize(((cache *)p)->inner, n);
}

static int pPagecount(sqlite3_pcache *p) {
	return base.xPagecount(((cache *)p)->inner);
}

static sqlite3_pcache_page *pFetch(sqlite3_pcache *p, unsigned k, int create) {
	cache *c = (cache *)p;
	return base.xFetch(c->inner, key(c, k), create);
}

static void pUnpin(sqlite3_pcache *p, sqlite3_pcache_page *pg, int discard) {
	base.xUnpin(((cache *)p)->inner, pg, discard);
}

static void pRekey(sqlite3_pcache *p, sqlite3_pcache_page *pg, unsigned oldKey, unsigned newKey) {
	cache *c = (cache *)p;
	base.xRekey(c->inner, pg, key(c, oldKey), key(c, newKey));
}

static void pTruncate(sqlite3_pcache *p, unsigned limit) {
	base.xTruncate(((cache *)p)->inner, limit);
}

static void pDestroy(sqlite3_pcache *p) {
	cache *c = (cache *)p;
	base.xDestroy(c->inner);
	free(c);
}

static void pShrink(sqlite3_pcache *p) {
	if (base.xShrink) {
		base.xShrink(((cache *)p)->inner);
	}
}

static sqlite3_pcache_methods2 methods = {
	1, 0, pInit, pShutdown, pCreate, pCachesize, pPagecount,
	pFetch, pUnpin, pRekey, pTruncate, pDestroy, pShrink,
};

// patinaPageCacheInstall puts the layer over SQLite's page cache. It must
// run before SQLite initializes; it returns an SQLite result code
// (SQLITE_MISUSE if SQLite had initialized already).
int patinaPageCacheInstall(void) {
	int rc = sqlite3_config(SQLITE_CONFIG_GETPCACHE2, &base);
	if (rc != 0) {
		return rc;
	}
	if (!base.xCreate || !base.xFetch || !base.xRekey) {
		return SQLITE_ERROR;
	}
	methods.iVersion = base.iVersion;
	if (base.iVersion < 1) {
		methods.xShrink = 0;
	}
	return sqlite3_config(SQLITE_CONFIG_PCACHE2, &methods);
}

long long patinaPageCacheSpareMoves(void) {
	return __atomic_load_n(&spareMoves, __ATOMIC_RELAXED);
}
