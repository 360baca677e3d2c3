//! Per-sink delivery state (cursors, dead letters, replays) and the
//! deliverable read, on both stores.

mod common;

use cairn_domain::{CheckedEvent, NewReceiver, Timestamp};
use cairn_store::postgres::{PostgresOptions, PostgresStore};
use cairn_store::sqlite::{SqliteOptions, SqliteStore};
use cairn_store::{DeadLetter, Store, StoreError};
use common::{event_input, receiver_input};

#[tokio::test]
async fn delivery_state_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    check_delivery_state(&store).await;
    store.close().await;
    // The state survives a restart.
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    assert_eq!(store.sink_cursor("a").await.unwrap(), 4);
    store.close().await;
}

#[tokio::test]
async fn delivery_state_postgres() {
    let Some(db) = common::pg_test_db("delivery_state_postgres").await else {
        return;
    };
    let store = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    check_delivery_state(&store).await;
    store.close().await;
}

/// `outbox_deliverable`, tried until it returns `want` messages: on
/// PostgreSQL a transaction held open by a test running alongside (in any
/// database of the server) delays delivery until it ends.
async fn deliverable(
    store: &dyn Store,
    after: u64,
    limit: u32,
    want: usize,
) -> Vec<cairn_store::OutboxMessage> {
    let mut got = Vec::new();
    for _ in 0..50 {
        got = store.outbox_deliverable(after, limit).await.unwrap();
        if got.len() == want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(got.len(), want);
    got
}

async fn check_delivery_state(store: &dyn Store) {
    assert!(store.outbox_deliverable(0, 10).await.unwrap().is_empty());
    let receiver = store
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    let rid = receiver.id.to_string();
    for i in 1..=3u64 {
        // Each written in a trace of its own: every read renders it alike.
        let trace = cairn_domain::TraceParent::new(u128::from(i), i, true);
        let checked = CheckedEvent::parse(event_input(&rid, true), Some(receiver.clone()))
            .unwrap()
            .with_trace(trace);
        store.create_events(vec![checked]).await.unwrap();
    }
    let all = deliverable(store, 0, 10, 4).await;
    let after = store.outbox_after(0, 10).await.unwrap();
    assert_eq!(
        all.iter().map(|m| m.seq).collect::<Vec<_>>(),
        after.iter().map(|m| m.seq).collect::<Vec<_>>()
    );
    assert_eq!(
        deliverable(store, all[1].seq, 1, 1).await[0].seq,
        all[2].seq
    );

    // Cursors: per sink, never back.
    assert_eq!(store.sink_cursor("a").await.unwrap(), 0);
    assert_eq!(store.outbox_count_after(all[1].seq).await.unwrap(), 2);
    store.advance_sink_cursor("a", all[1].seq).await.unwrap();
    store.advance_sink_cursor("a", all[0].seq).await.unwrap();
    assert_eq!(store.sink_cursor("a").await.unwrap(), all[1].seq);
    assert_eq!(store.sink_cursor("b").await.unwrap(), 0);

    // A dead letter moves the cursor past it.
    let letter = DeadLetter {
        sink: "a".into(),
        seq: all[2].seq,
        message_id: all[2].id,
        attempts: 5,
        last_error: "HTTP 500".into(),
        failed_at: Timestamp::from_micros(1_700_000_000_000_000),
    };
    store.record_dead_letter(letter.clone()).await.unwrap();
    assert_eq!(store.sink_cursor("a").await.unwrap(), all[2].seq);
    assert_eq!(
        store.dead_letters(None, 10).await.unwrap(),
        vec![letter.clone()]
    );
    assert_eq!(
        store.dead_letters(Some("a".into()), 10).await.unwrap(),
        vec![letter.clone()]
    );
    assert!(
        store
            .dead_letters(Some("b".into()), 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Replay: the letter leaves the table for the sink's replay queue.
    assert!(store.sink_replays("a", 10).await.unwrap().is_empty());
    store.replay_dead_letter("a", all[2].seq).await.unwrap();
    assert!(store.dead_letters(None, 10).await.unwrap().is_empty());
    let replays = store.sink_replays("a", 10).await.unwrap();
    assert_eq!(replays.len(), 1);
    assert_eq!(replays[0].id, all[2].id);
    assert_eq!(replays[0].json, all[2].json);
    assert!(
        replays[0].json.contains(r#""traceparent":"00-"#),
        "{}",
        replays[0].json
    );
    assert_eq!(replays[0].trace, all[2].trace);
    assert_eq!(
        after.iter().map(|m| m.json.as_str()).collect::<Vec<_>>(),
        all.iter().map(|m| m.json.as_str()).collect::<Vec<_>>(),
        "outbox_after and outbox_deliverable render alike"
    );
    assert!(matches!(
        store.replay_dead_letter("a", all[2].seq).await,
        Err(StoreError::NotFound(_))
    ));
    // Failing again: back to the dead letters, off the queue.
    store.record_dead_letter(letter.clone()).await.unwrap();
    assert!(store.sink_replays("a", 10).await.unwrap().is_empty());
    store.replay_dead_letter("a", all[2].seq).await.unwrap();
    store.finish_replay("a", all[2].seq).await.unwrap();
    assert!(store.sink_replays("a", 10).await.unwrap().is_empty());
    assert!(store.dead_letters(None, 10).await.unwrap().is_empty());
    store.advance_sink_cursor("a", all[3].seq).await.unwrap();
    assert_eq!(store.sink_cursor("a").await.unwrap(), 4);
}

/// PostgreSQL hands out positions before commit: a message committed after
/// one with a higher position must not let a relay skip it.
#[tokio::test]
async fn deliverable_waits_for_transactions_in_flight_postgres() {
    let Some(db) =
        common::pg_test_db("deliverable_waits_for_transactions_in_flight_postgres").await
    else {
        return;
    };
    let store = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let receiver = store
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    deliverable(&store, 0, 10, 1).await;
    // A transaction takes the next position and stays open.
    use sqlx_core::connection::{ConnectOptions, Connection};
    use sqlx_core::executor::Executor;
    let mut other = <sqlx_postgres::PgConnectOptions as std::str::FromStr>::from_str(&db.url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    other
        .execute(
            "BEGIN; SELECT pg_current_xact_id();
             INSERT INTO outbox (id, type, ordering_key, message, created_at)
             VALUES ('01JAAAAAAAAAAAAAAAAAAAAAAA', 't', 'k', '{}', 0)",
        )
        .await
        .unwrap();
    // A later write commits with a higher position.
    let rid = receiver.id.to_string();
    let checked = CheckedEvent::parse(event_input(&rid, true), Some(receiver.clone())).unwrap();
    store.create_events(vec![checked]).await.unwrap();
    assert_eq!(store.outbox_after(0, 10).await.unwrap().len(), 2);
    // Not deliverable while the lower position may still commit.
    assert!(store.outbox_deliverable(1, 10).await.unwrap().is_empty());
    other.execute("ROLLBACK").await.unwrap();
    other.close().await.unwrap();
    deliverable(&store, 1, 10, 1).await;
    store.close().await;
}

#[tokio::test]
async fn one_lease_per_sink_postgres() {
    let Some(db) = common::pg_test_db("one_lease_per_sink_postgres").await else {
        return;
    };
    let a = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let b = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let mut lease = a.lease_sink("s").await.unwrap().expect("free at first");
    assert!(lease.held().await);
    assert!(b.lease_sink("s").await.unwrap().is_none(), "held by a");
    assert!(
        a.lease_sink("s").await.unwrap().is_none(),
        "even for a's pool"
    );
    assert!(b.lease_sink("t").await.unwrap().is_some(), "per sink");
    drop(lease);
    let mut taken = None;
    for _ in 0..100 {
        taken = b.lease_sink("s").await.unwrap();
        if taken.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(taken.is_some(), "released when the holder goes away");
    a.close().await;
    b.close().await;
}

#[tokio::test]
async fn the_embedded_store_always_grants_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    let mut lease = store.lease_sink("s").await.unwrap().unwrap();
    assert!(lease.held().await);
    store.close().await;
}

/// A younger transaction that takes a lower outbox position than an older
/// one that commits first must hold delivery back until it ends: reading
/// the committed higher position alone would move a cursor past the lower
/// one for good. (The horizon was once a snapshot's xmax, the latest
/// *completed* transaction id + 1, which the younger transaction's id is
/// not below; the relay then lost messages under concurrent writers.)
#[tokio::test]
async fn deliverable_never_passes_a_position_still_in_flight() {
    use sqlx_core::connection::Connection;
    use sqlx_core::query::query;
    use sqlx_postgres::PgConnection;

    let Some(db) = common::pg_test_db("deliverable_never_passes_a_position_still_in_flight").await
    else {
        return;
    };
    let store = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let mut older = PgConnection::connect(&db.url).await.unwrap();
    let mut younger = PgConnection::connect(&db.url).await.unwrap();
    let insert = "INSERT INTO outbox (id, type, ordering_key, message, created_at)
                  VALUES ($1, 't', 'k', '{\"specversion\":\"1.0\"}', 0)";
    for conn in [&mut older, &mut younger] {
        query("BEGIN").execute(&mut *conn).await.unwrap();
        // Take a transaction id now: the older one first.
        query("SELECT pg_current_xact_id()")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    // The younger takes the lower position; the older the higher, and commits.
    query(insert)
        .bind(ulid::Ulid::new().to_string())
        .execute(&mut younger)
        .await
        .unwrap();
    query(insert)
        .bind(ulid::Ulid::new().to_string())
        .execute(&mut older)
        .await
        .unwrap();
    query("COMMIT").execute(&mut older).await.unwrap();

    let early = store.outbox_deliverable(0, 10).await.unwrap();
    assert!(
        early.is_empty(),
        "delivered position(s) {:?} while position 1 was still in flight",
        early.iter().map(|m| m.seq).collect::<Vec<_>>()
    );
    query("COMMIT").execute(&mut younger).await.unwrap();
    let both = deliverable(&store, 0, 10, 2).await;
    assert_eq!(both.iter().map(|m| m.seq).collect::<Vec<_>>(), [1, 2]);
    store.close().await;
}
