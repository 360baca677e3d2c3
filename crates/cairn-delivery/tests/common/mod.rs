//! Shared by the relay tests: changes of every kind, the store's outbox,
//! waiting for a condition.

#![allow(dead_code)] // each test file uses its own subset

use cairn_domain::group::GroupPatch;
use cairn_domain::{CheckedEvent, EventInput, GroupInput, NewGroup, NewReceiver, ReceiverInput};
use cairn_store::sqlite::{SqliteOptions, SqliteStore};
use cairn_store::{OutboxMessage, Store};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Changes of every kind, for two units, interleaved.
pub async fn make_changes(store: &dyn Store) {
    let receiver_input: ReceiverInput = serde_json::from_value(json!({
        "name": "build", "type": "ci.build", "version": "1", "description": "d",
        "schema": {"type": "object"}
    }))
    .unwrap();
    let receiver = store
        .create_receiver(NewReceiver::parse(receiver_input).unwrap())
        .await
        .unwrap();
    let rid = receiver.id.to_string();
    let group = store
        .create_group(
            NewGroup::parse(
                serde_json::from_value::<GroupInput>(json!({
                    "name": "gate", "type": "release.ready", "version": "1",
                    "description": "d", "enabled": true, "event_receiver_ids": [rid]
                }))
                .unwrap(),
                |_| true,
            )
            .unwrap(),
        )
        .await
        .unwrap();
    for i in 0..6 {
        let release = format!("r{}", i % 2);
        let input: EventInput = serde_json::from_value(json!({
            "name": "app", "version": "1.0", "release": release, "platform_id": "linux",
            "package": "oci", "description": format!("step {i}"), "payload": {"i": i},
            "success": i >= 2, "event_receiver_id": rid
        }))
        .unwrap();
        // Every other event is written in a trace (as a traced request
        // would write it): its message, and a completion it causes, carry it.
        let trace = (i % 2 == 1)
            .then(|| {
                cairn_domain::TraceParent::new(0x4bf9_0000 + i as u128, 0x00f0 + i as u64, true)
            })
            .flatten();
        let checked = CheckedEvent::parse(input, Some(receiver.clone()))
            .unwrap()
            .with_trace(trace);
        store.create_events(vec![checked]).await.unwrap();
    }
    store
        .update_group(
            group.id,
            GroupPatch {
                description: Some(cairn_domain::Text::parse("changed").unwrap()),
                ..GroupPatch::default()
            },
            None,
        )
        .await
        .unwrap();
}

pub async fn outbox(store: &dyn Store) -> Vec<OutboxMessage> {
    store.outbox_after(0, 1000).await.unwrap()
}

pub async fn eventually(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub async fn sqlite() -> (tempfile::TempDir, Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).unwrap();
    (dir, Arc::new(store))
}

/// Wait until `sink`'s cursor in the store reaches `seq` (the relay moves
/// it just after the sink acknowledged).
pub async fn wait_for_cursor(store: &dyn Store, sink: &str, seq: u64) {
    let start = Instant::now();
    while store.sink_cursor(sink).await.unwrap() < seq {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out waiting for the cursor of {sink} to reach {seq}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(store.sink_cursor(sink).await.unwrap(), seq);
}

/// Deliver `messages` through `sink`, which must fail having delivered
/// none, with `why` in the reason (printed); the reason.
pub async fn refused(
    sink: &dyn cairn_delivery::Sink,
    messages: &[OutboxMessage],
    why: &str,
) -> String {
    let err = sink.deliver(messages).await.unwrap_err();
    println!("refused: {}", err.reason);
    assert_eq!(err.delivered, 0);
    assert!(err.reason.contains(why), "{}", err.reason);
    err.reason
}
