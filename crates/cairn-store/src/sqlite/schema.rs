//! Schema migrations, applied in order and recorded in `PRAGMA user_version`.

use rusqlite::Connection;

const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE receivers (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    type        TEXT NOT NULL,
    version     TEXT NOT NULL,
    description TEXT NOT NULL,
    schema      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX receivers_by_name ON receivers (name, type, version);
CREATE INDEX receivers_by_type ON receivers (type);

CREATE TABLE events (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    receiver_id TEXT NOT NULL REFERENCES receivers (id),
    name        TEXT NOT NULL,
    version     TEXT NOT NULL,
    release     TEXT NOT NULL,
    platform_id TEXT NOT NULL,
    package     TEXT NOT NULL,
    description TEXT NOT NULL,
    payload     TEXT NOT NULL,
    success     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
-- The completion check and status (the latest event of a receiver for a
-- unit: the implicit rowid suffix orders it), and unit, name and
-- name/version filters. Inserts land at random positions, so this is the
-- only such index: each one costs a dirty page per event at commit.
CREATE INDEX events_by_unit
    ON events (name, version, release, platform_id, package, receiver_id);
-- Receiver filters and re-evaluation; a receiver's new events append at the
-- end of its range.
CREATE INDEX events_by_receiver ON events (receiver_id);

CREATE TABLE groups (
    seq         INTEGER PRIMARY KEY,
    id          TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    type        TEXT NOT NULL,
    version     TEXT NOT NULL,
    description TEXT NOT NULL,
    enabled     INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX groups_by_name ON groups (name, type, version);

CREATE TABLE group_receivers (
    group_id    TEXT NOT NULL REFERENCES groups (id),
    receiver_id TEXT NOT NULL REFERENCES receivers (id),
    position    INTEGER NOT NULL,
    PRIMARY KEY (group_id, receiver_id)
) WITHOUT ROWID;
CREATE INDEX group_receivers_by_receiver ON group_receivers (receiver_id, group_id);

CREATE TABLE completions (
    seq          INTEGER PRIMARY KEY,
    id           TEXT NOT NULL UNIQUE,
    group_id     TEXT NOT NULL REFERENCES groups (id),
    name         TEXT NOT NULL,
    version      TEXT NOT NULL,
    release      TEXT NOT NULL,
    platform_id  TEXT NOT NULL,
    package      TEXT NOT NULL,
    event_id     TEXT NOT NULL REFERENCES events (id),
    completed_at INTEGER NOT NULL,
    -- A completion is recorded once per (group, unit), whatever happens.
    UNIQUE (group_id, name, version, release, platform_id, package)
);

-- One row per message, written in the transaction of the change. An
-- event's message is fully determined by the event and its receiver, which
-- are immutable, so it is stored as a reference (event_id) and rendered when
-- read; every other message is stored rendered (message).
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    id           TEXT NOT NULL,
    type         TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    event_id     TEXT REFERENCES events (id),
    message      TEXT,
    created_at   INTEGER NOT NULL,
    delivered_at INTEGER,
    CHECK ((event_id IS NULL) <> (message IS NULL))
);
CREATE INDEX outbox_undelivered ON outbox (seq) WHERE delivered_at IS NULL;
"#,
    r#"
-- Delivery state per sink (docs/delivery.md): how far each sink got, the
-- messages it gave up on, and the dead letters queued to be sent again.
CREATE TABLE outbox_cursors (
    sink     TEXT PRIMARY KEY,
    last_seq INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE outbox_dead_letters (
    sink       TEXT NOT NULL,
    seq        INTEGER NOT NULL REFERENCES outbox (seq),
    message_id TEXT NOT NULL,
    attempts   INTEGER NOT NULL,
    last_error TEXT NOT NULL,
    failed_at  INTEGER NOT NULL,
    PRIMARY KEY (sink, seq)
) WITHOUT ROWID;

CREATE TABLE outbox_replays (
    sink TEXT NOT NULL,
    seq  INTEGER NOT NULL REFERENCES outbox (seq),
    PRIMARY KEY (sink, seq)
) WITHOUT ROWID;
"#,
    r#"
-- Delivery state lives in the per-sink cursors, so the outbox's
-- `delivered_at` column and its partial index are never written or read.
-- The index goes first: SQLite refuses to drop an indexed column.
DROP INDEX IF EXISTS outbox_undelivered;
ALTER TABLE outbox DROP COLUMN delivered_at;
"#,
];

/// Bring the database to the newest schema, in one transaction.
pub fn migrate(conn: &mut Connection) -> rusqlite::Result<()> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let current = usize::try_from(current).unwrap_or(0);
    if current >= MIGRATIONS.len() {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    for sql in &MIGRATIONS[current..] {
        tx.execute_batch(sql)?;
    }
    tx.pragma_update(None, "user_version", MIGRATIONS.len() as i64)?;
    tx.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written by an older version (schema 2, with an outbox
    /// row) migrates to the newest schema and keeps its rows.
    #[test]
    fn an_existing_database_drops_delivered_at_and_keeps_its_rows() {
        let mut conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..2] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 2).unwrap();
        conn.execute_batch(
            "INSERT INTO outbox (id, type, ordering_key, message, created_at, delivered_at)
             VALUES ('m1', 't', 'k', '{}', 1, NULL);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, MIGRATIONS.len() as i64);
        let columns: Vec<String> = conn
            .prepare("SELECT name FROM pragma_table_info('outbox')")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(columns.iter().all(|c| c != "delivered_at"), "{columns:?}");
        assert!(columns.iter().any(|c| c == "message"), "{columns:?}");
        let indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name = 'outbox_undelivered'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 0);
        let id: String = conn
            .query_row("SELECT id FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(id, "m1");
        // Running it again is a no-op.
        migrate(&mut conn).unwrap();
    }
}
