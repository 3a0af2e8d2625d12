-- Every host agent of the region and when it last re-published all its
-- machines. A host whose row stops moving has stopped publishing; after
-- hosts.forget_after the region's agents remove its machines (see
-- docs/host.md), and its next re-publish puts them back.

CREATE TABLE hosts (
    name         TEXT NOT NULL PRIMARY KEY,  -- machines.host
    region       TEXT NOT NULL DEFAULT '',
    seen_at      INTEGER NOT NULL DEFAULT 0, -- unix milliseconds of its last full re-publish, by its clock
    republish_ms INTEGER NOT NULL DEFAULT 0  -- its re-publish interval
);
