-- The regional cluster's tables: every machine of the region and its
-- health checks. Host agents publish whole records; DNS, the proxy and the
-- bridge read them.

CREATE TABLE machines (
    id         TEXT NOT NULL PRIMARY KEY,
    app        TEXT NOT NULL DEFAULT '',
    region     TEXT NOT NULL DEFAULT '',
    host       TEXT NOT NULL DEFAULT '',
    address    TEXT NOT NULL DEFAULT '',   -- IPv6 or IPv4 the machine listens on
    port       INTEGER NOT NULL DEFAULT 0,
    state      TEXT NOT NULL DEFAULT 'created', -- created | started | stopped | destroyed
    image      TEXT NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL DEFAULT 0  -- unix milliseconds, set by the host agent
);

CREATE INDEX machines_app_state ON machines (app, state);

-- A host's re-publish ends with a prune of its rows (and an agent
-- forgetting a host deletes them): without this, each scans every
-- machine of the region, which with a thousand hosts each pruning every
-- 30 s would keep the writer busy.
CREATE INDEX machines_host ON machines (host);

CREATE TABLE machine_checks (
    machine_id TEXT NOT NULL,
    name       TEXT NOT NULL,
    status     TEXT NOT NULL DEFAULT 'unknown', -- passing | warning | critical | unknown
    output     TEXT NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (machine_id, name)
);
