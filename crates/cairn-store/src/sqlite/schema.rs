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
    r#"
-- Access control (issue 5): who created each receiver and group, and the
-- identities, grants, sessions, signing keys and audit log of
-- `cairn_store::access`. Lists of names and patterns are JSON arrays.
ALTER TABLE receivers ADD COLUMN owner TEXT;
ALTER TABLE groups ADD COLUMN owner TEXT;

CREATE TABLE users (
    name          TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    roles         TEXT NOT NULL,
    disabled      INTEGER NOT NULL,
    failed_logins INTEGER NOT NULL,
    locked_until  INTEGER,
    last_login_at INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE api_keys (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    secret_hash  TEXT NOT NULL,
    principal    TEXT NOT NULL,
    roles        TEXT NOT NULL,
    scopes       TEXT NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER,
    created_at   INTEGER NOT NULL,
    created_by   TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX api_keys_by_principal ON api_keys (principal, id);

CREATE TABLE roles (
    name        TEXT PRIMARY KEY,
    permissions TEXT NOT NULL,
    on_grant    TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE grants (
    id          TEXT PRIMARY KEY,
    principal   TEXT NOT NULL,
    object_kind TEXT NOT NULL CHECK (object_kind IN ('receiver', 'group')),
    object_id   TEXT NOT NULL,
    permissions TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL
) WITHOUT ROWID;
-- Every request reads its principal's grants.
CREATE INDEX grants_by_principal ON grants (principal, id);
CREATE INDEX grants_by_object ON grants (object_kind, object_id, id);

CREATE TABLE sessions (
    id             TEXT PRIMARY KEY,
    principal      TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL,
    revoked_at     INTEGER,
    revoked_reason TEXT
) WITHOUT ROWID;
CREATE INDEX sessions_by_principal ON sessions (principal);

-- One family of tokens per session; `used_at` is set when a token is
-- rotated, and presenting a used token again revokes its session.
CREATE TABLE refresh_tokens (
    hash       TEXT PRIMARY KEY,
    session_id TEXT NOT NULL REFERENCES sessions (id),
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
) WITHOUT ROWID;
CREATE INDEX refresh_tokens_by_session ON refresh_tokens (session_id);

CREATE TABLE signing_keys (
    seq         INTEGER PRIMARY KEY,
    kid         TEXT NOT NULL UNIQUE,
    algorithm   TEXT NOT NULL,
    private_key TEXT NOT NULL,
    public_key  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    retired_at  INTEGER
);
-- At most one key signs: every unretired row has the same indexed value.
CREATE UNIQUE INDEX signing_keys_one_current ON signing_keys ((retired_at IS NULL))
    WHERE retired_at IS NULL;

-- Append-only: the triggers below refuse every UPDATE and DELETE.
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    detail      TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    client_addr TEXT NOT NULL
);
CREATE INDEX audit_log_by_actor ON audit_log (actor, seq);
CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: UPDATE refused');
END;
CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'the audit log is append-only: DELETE refused');
END;
"#,
    r#"
-- Idempotency keys (issue 6, docs/idempotency.md): one row per (scope,
-- key), claimed in progress, then holding the response to replay. Expired
-- rows count as absent and are purged a few at a time by later claims.
CREATE TABLE idempotency_keys (
    scope       TEXT NOT NULL,
    key         TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    token       TEXT NOT NULL,
    state       TEXT NOT NULL CHECK (state IN ('in_progress', 'completed')),
    status      INTEGER,
    headers     TEXT,
    body        BLOB,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    PRIMARY KEY (scope, key),
    CHECK ((state = 'completed') = (status IS NOT NULL))
) WITHOUT ROWID;
CREATE INDEX idempotency_keys_by_expiry ON idempotency_keys (expires_at);
"#,
    r#"
-- The W3C traceparent of the request whose write made the message, for
-- the message's CloudEvents `traceparent` attribute. NULL: none.
ALTER TABLE outbox ADD COLUMN traceparent TEXT;
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

    /// An in-memory database as schema version `n` left it.
    fn at_version(n: usize) -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        for sql in &MIGRATIONS[..n] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", n as i64).unwrap();
        conn
    }

    fn user_version(conn: &Connection) -> i64 {
        conn.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    /// A database written by an older version (schema 2, with an outbox
    /// row) migrates to the newest schema and keeps its rows.
    #[test]
    fn an_existing_database_drops_delivered_at_and_keeps_its_rows() {
        let mut conn = at_version(2);
        conn.execute_batch(
            "INSERT INTO outbox (id, type, ordering_key, message, created_at, delivered_at)
             VALUES ('m1', 't', 'k', '{}', 1, NULL);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version = user_version(&conn);
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

    fn columns(conn: &Connection, table: &str) -> Vec<String> {
        conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    /// A database of schema 3 with a receiver, a group over it and an
    /// outbox row gains the owner columns (empty for existing rows) and the
    /// access tables, and keeps its rows.
    #[test]
    fn schema_3_gains_owners_and_access_tables_and_keeps_its_rows() {
        let mut conn = at_version(3);
        conn.execute_batch(
            "INSERT INTO receivers (id, name, type, version, description, schema, fingerprint, created_at)
             VALUES ('r1', 'build', 'ci.build', '1', 'd', '{}', 'f', 1);
             INSERT INTO groups (id, name, type, version, description, enabled, created_at, updated_at)
             VALUES ('g1', 'gate', 'release.ready', '1', 'd', 1, 2, 3);
             INSERT INTO group_receivers (group_id, receiver_id, position) VALUES ('g1', 'r1', 0);
             INSERT INTO outbox (id, type, ordering_key, message, created_at)
             VALUES ('m1', 't', 'k', '{}', 1);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version = user_version(&conn);
        assert_eq!(version, MIGRATIONS.len() as i64);
        assert!(columns(&conn, "receivers").iter().any(|c| c == "owner"));
        assert!(columns(&conn, "groups").iter().any(|c| c == "owner"));
        let (name, owner): (String, Option<String>) = conn
            .query_row(
                "SELECT name, owner FROM receivers WHERE id = 'r1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((name.as_str(), owner), ("build", None));
        let (name, enabled, owner): (String, bool, Option<String>) = conn
            .query_row(
                "SELECT name, enabled, owner FROM groups WHERE id = 'g1'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!((name.as_str(), enabled, owner), ("gate", true, None));
        let members: i64 = conn
            .query_row("SELECT count(*) FROM group_receivers", [], |r| r.get(0))
            .unwrap();
        assert_eq!(members, 1);
        let outbox: String = conn
            .query_row("SELECT id FROM outbox", [], |r| r.get(0))
            .unwrap();
        assert_eq!(outbox, "m1");
        for table in [
            "users",
            "api_keys",
            "roles",
            "grants",
            "sessions",
            "refresh_tokens",
            "signing_keys",
            "audit_log",
        ] {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
                .unwrap();
            assert_eq!(n, 0, "{table}");
        }
        // The audit log takes appends and refuses changes.
        conn.execute_batch(
            "INSERT INTO audit_log (at, actor, action, target, outcome, detail, request_id, client_addr)
             VALUES (1, 'cli', 'key.create', 'key:k', 'success', '', '', '');",
        )
        .unwrap();
        let update = conn
            .execute("UPDATE audit_log SET actor = 'x'", [])
            .unwrap_err();
        assert!(update.to_string().contains("append-only"), "{update}");
        let delete = conn.execute("DELETE FROM audit_log", []).unwrap_err();
        assert!(delete.to_string().contains("append-only"), "{delete}");
        // Only one signing key may be unretired.
        conn.execute_batch(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at)
             VALUES ('k1', 'HS256', 's', '', 1);",
        )
        .unwrap();
        let second = conn.execute(
            "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at)
             VALUES ('k2', 'HS256', 's', '', 2)",
            [],
        );
        assert!(second.is_err());
        conn.execute_batch(
            "UPDATE signing_keys SET retired_at = 2 WHERE kid = 'k1';
             INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at)
             VALUES ('k2', 'HS256', 's', '', 2);",
        )
        .unwrap();
        // Running it again is a no-op.
        migrate(&mut conn).unwrap();
    }

    /// A database of schema 4 gains the idempotency keys table, whose
    /// primary key is (scope, key) and whose completed rows hold a status.
    #[test]
    fn schema_4_gains_idempotency_keys() {
        let mut conn = at_version(4);
        migrate(&mut conn).unwrap();
        let version = user_version(&conn);
        assert_eq!(version, MIGRATIONS.len() as i64);
        let insert = "INSERT INTO idempotency_keys
            (scope, key, fingerprint, token, state, created_at, expires_at)
            VALUES ('user:a', 'k', 'f', 't', 'in_progress', 1, 2)";
        conn.execute(insert, []).unwrap();
        assert!(
            conn.execute(insert, []).is_err(),
            "one row per (scope, key)"
        );
        let completed_without_status = conn.execute(
            "INSERT INTO idempotency_keys
             (scope, key, fingerprint, token, state, created_at, expires_at)
             VALUES ('user:a', 'k2', 'f', 't', 'completed', 1, 2)",
            [],
        );
        assert!(completed_without_status.is_err());
        migrate(&mut conn).unwrap();
    }

    /// A database of schema 5 with an outbox row gains the outbox's
    /// `traceparent` column, NULL for the rows it already had.
    #[test]
    fn schema_5_gains_the_outbox_traceparent() {
        let mut conn = at_version(5);
        conn.execute_batch(
            "INSERT INTO outbox (id, type, ordering_key, message, created_at)
             VALUES ('m1', 't', 'k', '{}', 1);",
        )
        .unwrap();
        migrate(&mut conn).unwrap();
        let version = user_version(&conn);
        assert_eq!(version, 6);
        assert_eq!(MIGRATIONS.len(), 6);
        let (id, trace): (String, Option<String>) = conn
            .query_row("SELECT id, traceparent FROM outbox", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_eq!((id.as_str(), trace), ("m1", None));
        migrate(&mut conn).unwrap();
    }
}
