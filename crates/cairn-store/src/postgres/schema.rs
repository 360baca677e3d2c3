//! Migrations: embedded SQL files applied in order, each in the same
//! transaction as its record in `cairn_migrations`, under a transaction
//! advisory lock so that nodes starting together apply each one once.

use sqlx_core::query::query;
use sqlx_core::raw_sql::raw_sql;
use sqlx_core::row::Row;
use sqlx_postgres::PgPool;

/// (version, name, SQL), in version order.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "init",
        include_str!("../../migrations/postgres/0001_init.sql"),
    ),
    (
        2,
        "delivery",
        include_str!("../../migrations/postgres/0002_delivery.sql"),
    ),
    (
        3,
        "outbox_drop_delivered_at",
        include_str!("../../migrations/postgres/0003_outbox_drop_delivered_at.sql"),
    ),
    (
        4,
        "access",
        include_str!("../../migrations/postgres/0004_access.sql"),
    ),
    (
        5,
        "owners",
        include_str!("../../migrations/postgres/0005_owners.sql"),
    ),
    (
        6,
        "idempotency",
        include_str!("../../migrations/postgres/0006_idempotency.sql"),
    ),
    (
        7,
        "outbox_traceparent",
        include_str!("../../migrations/postgres/0007_outbox_traceparent.sql"),
    ),
];

/// `hashtextextended('cairn.migrations', 0)` would do as well; any fixed
/// key that no unit lock uses. Unit locks live in the same key space, so a
/// clash would only make a start-up wait for one event write.
const MIGRATION_LOCK: i64 = 0x6361_6972_6e00_0001;

/// Bring the database to the newest schema. Returns the versions applied.
pub async fn migrate(pool: &PgPool) -> Result<Vec<i64>, sqlx_core::Error> {
    let mut tx = pool.begin().await?;
    query("SELECT pg_advisory_xact_lock($1)")
        .bind(MIGRATION_LOCK)
        .execute(&mut *tx)
        .await?;
    query(
        "CREATE TABLE IF NOT EXISTS cairn_migrations (
            version    BIGINT PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .execute(&mut *tx)
    .await?;
    let current: i64 = query("SELECT COALESCE(MAX(version), 0)::BIGINT FROM cairn_migrations")
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    let mut applied = Vec::new();
    for (version, name, sql) in MIGRATIONS {
        if *version <= current {
            continue;
        }
        raw_sql(*sql).execute(&mut *tx).await?;
        query("INSERT INTO cairn_migrations (version, name) VALUES ($1, $2)")
            .bind(*version)
            .bind(*name)
            .execute(&mut *tx)
            .await?;
        applied.push(*version);
    }
    tx.commit().await?;
    Ok(applied)
}
