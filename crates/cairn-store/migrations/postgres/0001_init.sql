-- Cairn's PostgreSQL schema, version 1. Mirrors the embedded store's tables.
-- Ids are ULID text compared byte-wise (COLLATE "C"), so text order is id
-- order whatever the database's collation. Times are microseconds since the
-- Unix epoch (BIGINT), rendered by the application exactly as the embedded
-- store renders them.

CREATE TABLE receivers (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    type        TEXT NOT NULL,
    version     TEXT NOT NULL,
    description TEXT NOT NULL,
    schema      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE INDEX receivers_by_name ON receivers (name, type, version, id);
CREATE INDEX receivers_by_type ON receivers (type, id);

CREATE TABLE events (
    id          TEXT COLLATE "C" PRIMARY KEY,
    receiver_id TEXT COLLATE "C" NOT NULL REFERENCES receivers (id),
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    release     TEXT NOT NULL,
    platform_id TEXT NOT NULL,
    package     TEXT NOT NULL,
    description TEXT NOT NULL,
    payload     TEXT NOT NULL,
    success     BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL
);
-- The completion check and status (latest event of a receiver for a unit:
-- a backward scan of the id suffix), the per-unit id floor, and unit, name
-- and name/version list filters.
CREATE INDEX events_by_unit
    ON events (name, version, release, platform_id, package, receiver_id, id);
-- Receiver filters and re-evaluation (units of a receiver).
CREATE INDEX events_by_receiver ON events (receiver_id, id);

CREATE TABLE groups (
    id          TEXT COLLATE "C" PRIMARY KEY,
    name        TEXT NOT NULL,
    type        TEXT NOT NULL,
    version     TEXT NOT NULL,
    description TEXT NOT NULL,
    enabled     BOOLEAN NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
CREATE INDEX groups_by_name ON groups (name, type, version, id);
CREATE INDEX groups_by_type ON groups (type, id);

CREATE TABLE group_receivers (
    group_id    TEXT COLLATE "C" NOT NULL REFERENCES groups (id),
    receiver_id TEXT COLLATE "C" NOT NULL REFERENCES receivers (id),
    position    INTEGER NOT NULL,
    PRIMARY KEY (group_id, receiver_id)
);
-- The groups of an event's receiver (completion on every event).
CREATE INDEX group_receivers_by_receiver ON group_receivers (receiver_id, group_id);

CREATE TABLE completions (
    id           TEXT COLLATE "C" PRIMARY KEY,
    group_id     TEXT COLLATE "C" NOT NULL REFERENCES groups (id),
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    release      TEXT NOT NULL,
    platform_id  TEXT NOT NULL,
    package      TEXT NOT NULL,
    event_id     TEXT COLLATE "C" NOT NULL REFERENCES events (id),
    completed_at BIGINT NOT NULL,
    -- A completion is recorded once per (group, unit), whatever happens:
    -- writers insert with ON CONFLICT DO NOTHING on this key.
    CONSTRAINT completions_once UNIQUE (group_id, name, version, release, platform_id, package)
);
CREATE INDEX completions_by_group ON completions (group_id, id);

-- One row per message, written in the transaction of the change. An event's
-- message is stored by reference (event_id) and rendered when read; every
-- other message is stored rendered (message).
CREATE TABLE outbox (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id           TEXT COLLATE "C" NOT NULL,
    type         TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    event_id     TEXT COLLATE "C" REFERENCES events (id),
    message      TEXT,
    created_at   BIGINT NOT NULL,
    delivered_at BIGINT,
    CHECK ((event_id IS NULL) <> (message IS NULL))
);
CREATE INDEX outbox_undelivered ON outbox (seq) WHERE delivered_at IS NULL;
