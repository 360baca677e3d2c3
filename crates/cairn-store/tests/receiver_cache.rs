//! `Store::cached_receiver`: what the process already holds, without I/O.
//! A receiver is held once created or read, and not before; another node
//! (a second `PostgresStore` on the same database) holds only what it has
//! read itself, and reads the rest from storage. The PostgreSQL test skips
//! (saying why) when `CAIRN_TEST_DATABASE_URL` is unset.
mod common;

use cairn_domain::{NewReceiver, ReceiverId};
use cairn_store::Store;
use cairn_store::postgres::{PostgresOptions, PostgresStore};
use cairn_store::sqlite::{SqliteOptions, SqliteStore};
use common::receiver_input;

/// An id no store has made.
fn unknown() -> ReceiverId {
    ReceiverId::parse("01ARZ3NDEKTSV4RRFFQ69G5FAV").unwrap()
}

#[tokio::test]
async fn sqlite_holds_a_receiver_once_created_and_after_a_restart_once_read() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    assert!(store.cached_receiver(unknown()).is_none());
    let created = store
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    let held = store
        .cached_receiver(created.id)
        .expect("held once created");
    assert_eq!(held.id, created.id);
    assert_eq!(held.name, created.name);
    store.close().await;

    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    assert!(
        store.cached_receiver(created.id).is_none(),
        "a new process holds nothing it has not read"
    );
    let read = store.receiver(created.id).await.unwrap().expect("stored");
    assert_eq!(read.id, created.id);
    let held = store.cached_receiver(created.id).expect("held once read");
    assert_eq!(held.fingerprint, created.fingerprint);
    store.close().await;
}

#[tokio::test]
async fn postgres_nodes_hold_only_what_they_created_or_read() {
    let Some(db) = common::pg_test_db("postgres_nodes_hold_only_what_they_created_or_read").await
    else {
        return;
    };
    let a = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let b = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let created = a
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    assert!(a.cached_receiver(created.id).is_some(), "the creating node");
    assert!(
        b.cached_receiver(created.id).is_none(),
        "another node has not read it"
    );
    let read = b.receivers(vec![created.id, unknown()]).await.unwrap();
    assert_eq!(read.len(), 1, "the unknown id is left out");
    assert_eq!(read[0].id, created.id);
    assert!(b.cached_receiver(created.id).is_some(), "held once read");
    assert!(b.cached_receiver(unknown()).is_none());
    a.close().await;
    b.close().await;
}
