-- The global cluster's tables: which apps run in which regions, and the
-- directory of regions. Only bridges write them, each only its own
-- region's rows, so writes never conflict.

-- One row per (app, region) where the region has at least one machine of
-- the app. A bridge writes a row only when a count changes.
CREATE TABLE app_regions (
    app           TEXT NOT NULL,
    region        TEXT NOT NULL,
    machine_count INTEGER NOT NULL DEFAULT 0, -- machines not destroyed
    healthy_count INTEGER NOT NULL DEFAULT 0, -- started, every check passing
    updated_at    INTEGER NOT NULL DEFAULT 0, -- unix milliseconds of the last count change
    PRIMARY KEY (app, region)
);

CREATE INDEX app_regions_region ON app_regions (region);

-- One row per region: where its Lookup service and agents answer, where it is (for
-- nearest-region ranking), and when its bridge last reported.
CREATE TABLE regions (
    name             TEXT NOT NULL PRIMARY KEY,
    lookup           TEXT NOT NULL DEFAULT '[]', -- JSON array of gRPC host:port
    api              TEXT NOT NULL DEFAULT '[]', -- JSON array of the agents' HTTP APIs, for operators' tools
    latitude         REAL NOT NULL DEFAULT 0,
    longitude        REAL NOT NULL DEFAULT 0,
    bridge_heartbeat INTEGER NOT NULL DEFAULT 0  -- unix milliseconds
);
