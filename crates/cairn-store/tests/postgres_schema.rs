//! A database written by an older version of the PostgreSQL store migrates
//! to the newest schema and keeps its rows. Skips (saying why) when
//! `CAIRN_TEST_DATABASE_URL` is unset.

mod common;

use cairn_store::Store;
use cairn_store::postgres::{PostgresOptions, PostgresStore};
use sqlx_core::connection::Connection;
use sqlx_core::query::query;
use sqlx_core::raw_sql::raw_sql;
use sqlx_core::row::Row;
use sqlx_postgres::PgConnection;

#[tokio::test]
async fn schema_2_drops_delivered_at_and_keeps_the_outbox() {
    let Some(db) = common::pg_test_db("schema_2_drops_delivered_at_and_keeps_the_outbox").await
    else {
        return;
    };
    // The database as schema version 2 left it, with one stored message.
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    raw_sql(
        "CREATE TABLE cairn_migrations (
            version    BIGINT PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    raw_sql(include_str!("../migrations/postgres/0001_init.sql"))
        .execute(&mut conn)
        .await
        .unwrap();
    raw_sql(include_str!("../migrations/postgres/0002_delivery.sql"))
        .execute(&mut conn)
        .await
        .unwrap();
    raw_sql(
        "INSERT INTO cairn_migrations (version, name) VALUES (1, 'init'), (2, 'delivery');
         INSERT INTO outbox (id, type, ordering_key, message, created_at, delivered_at)
         VALUES ('01J00000000000000000000001', 'cairn.test', 'k', '{\"a\":1}', 1, NULL);",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let store = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let column: i64 = query(
        "SELECT count(*) FROM information_schema.columns
         WHERE table_name = 'outbox' AND column_name = 'delivered_at'",
    )
    .fetch_one(&mut conn)
    .await
    .and_then(|r| r.try_get(0))
    .unwrap();
    assert_eq!(column, 0, "delivered_at is gone");
    let index: Option<String> = query("SELECT to_regclass('outbox_undelivered')::text")
        .fetch_one(&mut conn)
        .await
        .and_then(|r| r.try_get(0))
        .unwrap();
    assert_eq!(index, None, "its index is gone");
    let version: i64 = query("SELECT max(version) FROM cairn_migrations")
        .fetch_one(&mut conn)
        .await
        .and_then(|r| r.try_get(0))
        .unwrap();
    assert_eq!(version, 7, "migrated to the newest schema");
    let kept = store.outbox_after(0, 10).await.unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].json, "{\"a\":1}");
    assert_eq!(kept[0].trace, None, "an old row has no traceparent");
    store.close().await;
    let _ = conn.close().await;
}

#[tokio::test]
async fn schema_3_gains_access_tables_and_ownerless_receivers_and_groups() {
    let Some(db) = common::pg_test_db("schema_3_gains_access_tables").await else {
        return;
    };
    // The database as schema version 3 left it, with a receiver and a
    // group over it.
    let mut conn = PgConnection::connect(&db.url).await.unwrap();
    raw_sql(
        "CREATE TABLE cairn_migrations (
            version    BIGINT PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    for sql in [
        include_str!("../migrations/postgres/0001_init.sql"),
        include_str!("../migrations/postgres/0002_delivery.sql"),
        include_str!("../migrations/postgres/0003_outbox_drop_delivered_at.sql"),
    ] {
        raw_sql(sql).execute(&mut conn).await.unwrap();
    }
    let (rid, gid) = ("01J00000000000000000000001", "01J00000000000000000000002");
    raw_sql(
        "INSERT INTO cairn_migrations (version, name)
             VALUES (1, 'init'), (2, 'delivery'), (3, 'outbox_drop_delivered_at');
         INSERT INTO receivers (id, name, type, version, description, schema, fingerprint, created_at)
             VALUES ('01J00000000000000000000001', 'build', 'ci', '1', 'd', '{}', 'f', 1);
         INSERT INTO groups (id, name, type, version, description, enabled, created_at, updated_at)
             VALUES ('01J00000000000000000000002', 'gate', 'ci', '1', 'd', false, 2, 2);
         INSERT INTO group_receivers (group_id, receiver_id, position)
             VALUES ('01J00000000000000000000002', '01J00000000000000000000001', 0);",
    )
    .execute(&mut conn)
    .await
    .unwrap();

    let store = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let receiver = store
        .receiver(cairn_domain::ReceiverId::parse(rid).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(receiver.name.as_str(), "build");
    assert_eq!(receiver.owner, None);
    let group = store
        .group(cairn_domain::GroupId::parse(gid).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(group.receiver_ids, [receiver.id]);
    assert_eq!(group.owner, None);
    let tables: i64 = query(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'
           AND table_name IN ('users', 'api_keys', 'roles', 'grants', 'sessions',
                              'refresh_tokens', 'signing_keys', 'audit_log')",
    )
    .fetch_one(&mut conn)
    .await
    .and_then(|r| r.try_get(0))
    .unwrap();
    assert_eq!(tables, 8);
    store.close().await;
    let _ = conn.close().await;
}
