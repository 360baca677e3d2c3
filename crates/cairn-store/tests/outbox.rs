//! Every change writes its CONTRACT section 5 message to the outbox in the
//! same transaction, against the real embedded store and, when
//! `CAIRN_TEST_DATABASE_URL` names a server, the PostgreSQL store.

mod common;

use cairn_domain::group::GroupPatch;
use cairn_domain::{CheckedEvent, GroupInput, NewGroup, NewReceiver, TraceParent};
use cairn_store::postgres::{PostgresOptions, PostgresStore};
use cairn_store::sqlite::{SqliteOptions, SqliteStore};
use cairn_store::{Store, StoreError};
use common::{event_input, receiver_input};
use serde_json::{Value, json};
use std::sync::Arc;

async fn messages(store: &dyn Store) -> Vec<(String, Value)> {
    store
        .outbox_after(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.id.to_string(), serde_json::from_str(&m.json).unwrap()))
        .collect()
}

#[tokio::test]
async fn every_change_writes_its_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    let before = assert_every_change_writes_its_message(&store).await;
    store.close().await;
    // Rendering is stable across a restart (events are stored by reference).
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    assert_eq!(before, rendered(&store).await);
    store.close().await;
}

#[tokio::test]
async fn every_change_writes_its_message_postgres() {
    let Some(db) = common::pg_test_db("every_change_writes_its_message_postgres").await else {
        return;
    };
    let store = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let before = assert_every_change_writes_its_message(&store).await;
    store.close().await;
    let store = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    assert_eq!(before, rendered(&store).await);
    store.close().await;
}

async fn rendered(store: &dyn Store) -> Vec<String> {
    store
        .outbox_after(0, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.json)
        .collect()
}

/// Makes one change of every kind on an empty store, checks the messages
/// and returns them rendered.
async fn assert_every_change_writes_its_message(store: &dyn Store) -> Vec<String> {
    // Each change written in a trace of its own, as a traced request makes it.
    let [t_receiver, t_group, t_event, t_update] = [1u128, 2, 3, 4].map(|i| {
        TraceParent::new(
            0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4730 + i,
            0x00f0_67aa_0ba9_02b0 + i as u64,
            true,
        )
    });
    let mut new_receiver = NewReceiver::parse(receiver_input()).unwrap();
    new_receiver.trace = t_receiver;
    let receiver = store.create_receiver(new_receiver).await.unwrap();
    let rid = receiver.id.to_string();
    let mut new_group = NewGroup::parse(
        serde_json::from_value::<GroupInput>(json!({
            "name": "gate", "type": "release.ready", "version": "1",
            "description": "d", "enabled": true, "event_receiver_ids": [rid]
        }))
        .unwrap(),
        |_| true,
    )
    .unwrap();
    new_group.trace = t_group;
    let group = store.create_group(new_group).await.unwrap();
    let checked = CheckedEvent::parse(event_input(&rid, true), Some(receiver.clone()))
        .unwrap()
        .with_trace(t_event);
    let ids = store.create_events(vec![checked]).await.unwrap();
    store
        .update_group(
            group.id,
            GroupPatch {
                description: Some(cairn_domain::Text::parse("changed").unwrap()),
                ..GroupPatch::default()
            },
            t_update,
        )
        .await
        .unwrap();

    let all = messages(store).await;
    let types: Vec<&str> = all
        .iter()
        .map(|(_, m)| m["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec![
            "cairn.event.receiver.created",
            "cairn.event.receiver.group.created",
            "ci.build",      // the event
            "release.ready", // the group completed for the event's unit
            "cairn.event.receiver.group.modified",
        ]
    );
    for (id, m) in &all {
        assert_eq!(m["specversion"], "1.0");
        assert_eq!(&m["id"], id);
        assert_eq!(m["datacontenttype"], "application/json");
        assert_eq!(m["api_version"], "v1");
        assert!(m["time"].as_str().unwrap().ends_with('Z'));
    }
    let mut unique: Vec<&String> = all.iter().map(|(id, _)| id).collect();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "message ids are unique");

    let receiver_msg = &all[0].1;
    assert_eq!(receiver_msg["source"], "cairn");
    assert_eq!(
        receiver_msg["data"]["event_receivers"][0]["id"],
        rid.as_str()
    );
    assert_eq!(receiver_msg["data"]["events"], Value::Null);

    let event_msg = &all[2].1;
    assert_eq!(event_msg["source"], format!("cairn/receivers/{rid}"));
    assert_eq!(event_msg["success"], true);
    for (field, value) in [
        ("name", "app"),
        ("version", "1.0"),
        ("release", "r1"),
        ("platform_id", "linux"),
        ("package", "oci"),
    ] {
        assert_eq!(event_msg[field], value, "{field}");
    }
    let event = &event_msg["data"]["events"][0];
    assert_eq!(event["id"], ids[0].to_string());
    assert_eq!(event["payload"], json!({"n": 7}));
    assert_eq!(event["event_receiver"]["id"], rid.as_str());

    let completed = &all[3].1;
    assert_eq!(completed["source"], format!("cairn/groups/{}", group.id));
    assert_eq!(completed["success"], true);
    assert_eq!(completed["name"], "app");
    assert_eq!(completed["data"]["events"][0]["id"], ids[0].to_string());
    assert_eq!(
        completed["data"]["event_receiver_groups"][0]["id"],
        group.id.to_string()
    );

    let modified = &all[4].1;
    assert_eq!(
        modified["data"]["event_receiver_groups"][0]["description"],
        "changed"
    );

    // Each message carries the trace of the write that made it (attribute
    // and field alike): the completion, its event's.
    let traced: Vec<Option<String>> = all
        .iter()
        .map(|(_, m)| m.get("traceparent").map(|t| t.as_str().unwrap().to_owned()))
        .collect();
    let tp = |t: Option<TraceParent>| t.map(|t| t.to_string());
    assert_eq!(
        traced,
        vec![
            tp(t_receiver),
            tp(t_group),
            tp(t_event),
            tp(t_event),
            tp(t_update)
        ]
    );
    let fields: Vec<Option<String>> = store
        .outbox_after(0, 10)
        .await
        .unwrap()
        .iter()
        .map(|m| m.trace.map(|t| t.to_string()))
        .collect();
    assert_eq!(fields, traced);

    // Paging by position.
    let tail = store.outbox_after(2, 10).await.unwrap();
    assert_eq!(tail.len(), 3);
    assert_eq!(tail[0].seq, 3);
    assert_eq!(
        tail[0].ordering_key, tail[1].ordering_key,
        "event and completion share the unit key"
    );
    assert_eq!(store.outbox_head().await.unwrap(), 5);

    rendered(store).await
}

#[tokio::test]
async fn refused_writes_leave_no_message() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    assert_refused_writes_leave_no_message(&store).await;
    store.close().await;
}

#[tokio::test]
async fn refused_writes_leave_no_message_postgres() {
    let Some(db) = common::pg_test_db("refused_writes_leave_no_message_postgres").await else {
        return;
    };
    let store = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    assert_refused_writes_leave_no_message(&store).await;
    store.close().await;
}

async fn assert_refused_writes_leave_no_message(store: &dyn Store) {
    let receiver: Arc<_> = store
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    // A group naming a receiver that does not exist (the store re-checks).
    let ghost = cairn_domain::ReceiverId::new(ulid::Ulid::new());
    let refused = store
        .create_group(
            NewGroup::parse(
                serde_json::from_value::<GroupInput>(json!({
                    "name": "g", "type": "t", "version": "1", "description": "d",
                    "event_receiver_ids": [receiver.id.to_string(), ghost.to_string()]
                }))
                .unwrap(),
                |_| true,
            )
            .unwrap(),
        )
        .await;
    assert!(
        matches!(refused, Err(StoreError::Invalid(_))),
        "{refused:?}"
    );
    let missing = store
        .update_group(
            cairn_domain::GroupId::new(ulid::Ulid::new()),
            GroupPatch::default(),
            None,
        )
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
    assert_eq!(
        messages(store).await.len(),
        1,
        "only the receiver's message"
    );
}

#[tokio::test]
async fn a_second_process_cannot_open_the_same_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    let second = SqliteStore::open(dir.path(), SqliteOptions::default());
    assert!(matches!(
        second,
        Err(cairn_store::sqlite::OpenError::Locked { .. })
    ));
    store.close().await;
    let again = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    again.close().await;
}

/// Under a steady stream of commits the WAL still starts over: its file
/// stays near the restart threshold instead of growing with the data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_bounded_under_steady_writes() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        checkpoint_interval: std::time::Duration::from_millis(10),
        wal_restart_pages: 64,
        ..SqliteOptions::default()
    };
    let store = Arc::new(SqliteStore::open(dir.path(), options).unwrap());
    let receiver = store
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    let rid = receiver.id.to_string();
    let wal = dir.path().join("cairn.db-wal");
    let mut largest = 0u64;
    let mut writers = Vec::new();
    for w in 0..4 {
        let (store, receiver, rid) = (store.clone(), receiver.clone(), rid.clone());
        writers.push(tokio::spawn(async move {
            for i in 0..400 {
                let mut input = event_input(&rid, i % 2 == 0);
                input.name = Some(json!(format!("unit-{w}-{}", i % 50)));
                let checked = CheckedEvent::parse(input, Some(receiver.clone())).unwrap();
                store.create_events(vec![checked]).await.unwrap();
            }
        }));
    }
    while writers.iter().any(|w| !w.is_finished()) {
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for w in writers {
        w.await.unwrap();
    }
    let db = std::fs::metadata(dir.path().join("cairn.db"))
        .unwrap()
        .len();
    // Never starting over, these 1,600 commits make a WAL of about 28 MB
    // (measured with `wal_restart_pages` out of reach). With restarts it
    // stays within a few hundred pages (one CI run under load saw 2.2 MB:
    // a restart must wait for readers and for the writer's next gap).
    assert!(largest > 0, "the WAL was never observed");
    assert!(
        largest < 8 * 1024 * 1024,
        "WAL grew to {largest} bytes (database {db} bytes)"
    );
    assert_eq!(
        store
            .list_events(
                Default::default(),
                cairn_store::PageRequest {
                    limit: 2000,
                    after: None
                }
            )
            .await
            .unwrap()
            .len(),
        1600
    );
    store.close().await;
}
