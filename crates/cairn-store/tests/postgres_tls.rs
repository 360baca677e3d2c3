//! TLS to PostgreSQL, chosen by `sslmode` in the database URL as libpq
//! does: the store connects over TLS when asked, and with `verify-full`
//! refuses a server whose certificate does not verify.
//! Skips (saying why) when `CAIRN_TEST_DATABASE_URL` is unset or the server
//! has `ssl = off`.

mod common;

use cairn_store::Store;
use cairn_store::postgres::{PostgresOptions, PostgresStore};
use sqlx_core::connection::Connection;
use sqlx_core::query::query;
use sqlx_core::row::Row;
use sqlx_postgres::PgConnection;

async fn in_tls(conn: &mut PgConnection) -> bool {
    query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(conn)
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn the_store_connects_over_tls_when_the_url_asks_and_verifies_when_told() {
    let test = "the_store_connects_over_tls_when_the_url_asks_and_verifies_when_told";
    let Some(db) = common::pg_test_db(test).await else {
        return;
    };
    let with = |params: &str| {
        let sep = if db.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}{params}", db.url)
    };
    let mut plain = PgConnection::connect(&with("sslmode=disable"))
        .await
        .unwrap();
    let ssl: String = query("SHOW ssl")
        .fetch_one(&mut plain)
        .await
        .unwrap()
        .get(0);
    if ssl != "on" {
        eprintln!("skipping {test}: the server has ssl = {ssl}");
        return;
    }
    assert!(!in_tls(&mut plain).await, "sslmode=disable stays plain");
    let mut tls = PgConnection::connect(&with("sslmode=require"))
        .await
        .unwrap();
    assert!(in_tls(&mut tls).await, "sslmode=require is TLS");

    // The store itself over TLS: it opens (one probe connection, then the
    // pool) and migrates.
    let store = PostgresStore::open(&with("sslmode=require"), PostgresOptions::default())
        .await
        .unwrap();
    store.close().await;

    // verify-full checks what require does not: the server's certificate
    // (here Debian's self-signed one for `localhost`, not the test CA's, and
    // reached as 127.0.0.1) must chain to a trusted root and name the host.
    // It is refused before any query, with the reason.
    let ca = cairn_testkit::tls::ca_file();
    let url = with(&format!("sslmode=verify-full&sslrootcert={}", ca.display()));
    let err = PostgresStore::open(&url, PostgresOptions::default())
        .await
        .err()
        .unwrap()
        .to_string();
    println!("refused: {err}");
    assert!(err.contains("invalid peer certificate"), "{err}");
}
