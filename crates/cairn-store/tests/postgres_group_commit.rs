//! The PostgreSQL store writes concurrent `create_events` requests of one
//! node together (group commit, `postgres/writer.rs`). These tests check
//! that a request stays all or nothing and independent of the others in
//! its batch, that a batch behaves like its requests written one by one,
//! and that two nodes batching final events still record each completion
//! once. Skips (saying why) when `CAIRN_TEST_DATABASE_URL` is unset.

mod common;

use cairn_domain::{CheckedEvent, NewReceiver, Receiver, Text};
use cairn_store::postgres::{PostgresOptions, PostgresStore};
use cairn_store::{EventFilter, PageRequest, Store, StoreError};
use common::{event_input, gate_over_two_receivers, receiver_input};
use serde_json::json;
use sqlx_core::connection::Connection;
use sqlx_core::query::query;
use sqlx_postgres::PgConnection;
use std::sync::Arc;
use std::time::Duration;

fn event(receiver: &Arc<Receiver>, name: &str, success: bool) -> CheckedEvent {
    let mut input = event_input(&receiver.id.to_string(), success);
    input.name = Some(json!(name));
    CheckedEvent::parse(input, Some(receiver.clone())).unwrap()
}

async fn events_named(store: &dyn Store, name: &str) -> usize {
    store
        .list_events(
            EventFilter {
                name: Some(name.to_owned()),
                ..EventFilter::default()
            },
            PageRequest {
                limit: 1000,
                after: None,
            },
        )
        .await
        .unwrap()
        .len()
}

/// The advisory-lock text of the unit `event(_, name, _)` writes to (see
/// `unit_lock_text` in `postgres/ops.rs`).
fn unit_lock_text(name: &str) -> String {
    [name, "1.0", "r1", "linux", "oci"].join("\u{1f}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_request_in_a_batch_fails_alone_and_stores_nothing() {
    let Some(db) =
        common::pg_test_db("a_failing_request_in_a_batch_fails_alone_and_stores_nothing").await
    else {
        return;
    };
    // One writer, so every queued request lands in the same batch.
    let store = Arc::new(
        PostgresStore::open(
            &db.url,
            PostgresOptions {
                writers: 1,
                ..PostgresOptions::default()
            },
        )
        .await
        .unwrap(),
    );
    let r = store
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    // A real failure inside the batch transaction: the database refuses
    // events of unit "poison" (as it would refuse, say, a constraint).
    let mut admin = PgConnection::connect(&db.url).await.unwrap();
    sqlx_core::raw_sql::raw_sql(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poisoned event'; END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER refuse_poison BEFORE INSERT ON events
             FOR EACH ROW EXECUTE FUNCTION refuse_poison();",
    )
    .execute(&mut admin)
    .await
    .unwrap();

    // Hold the writer: its first request waits for a unit lock we hold, so
    // the burst below queues up behind it and is written as one batch.
    query("SELECT pg_advisory_lock(hashtextextended($1, 0))")
        .bind(unit_lock_text("blocker"))
        .execute(&mut admin)
        .await
        .unwrap();
    let blocked = {
        let (store, e) = (store.clone(), event(&r, "blocker", true));
        tokio::spawn(async move { store.create_events(vec![e]).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;

    const GOOD: usize = 40;
    let mut burst = Vec::new();
    for i in 0..GOOD {
        // Requests of one to three events, some sharing units.
        let events: Vec<CheckedEvent> = (0..=(i % 3))
            .map(|k| event(&r, &format!("good-{}", (i + k) % 25), k % 2 == 0))
            .collect();
        let s = store.clone();
        burst.push(tokio::spawn(async move { s.create_events(events).await }));
        if i == GOOD / 2 {
            // Good events around the poisoned one, in one request.
            let events = vec![
                event(&r, "bad-request", true),
                event(&r, "poison", true),
                event(&r, "bad-request", false),
            ];
            let s = store.clone();
            burst.push(tokio::spawn(async move { s.create_events(events).await }));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    query("SELECT pg_advisory_unlock_all()")
        .execute(&mut admin)
        .await
        .unwrap();
    assert_eq!(blocked.await.unwrap().unwrap().len(), 1);

    let mut stored = 0;
    let mut failed = Vec::new();
    for (i, t) in burst.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(ids) => stored += ids.len(),
            Err(e) => failed.push((i, e)),
        }
    }
    assert_eq!(
        failed.len(),
        1,
        "only the poisoned request fails: {failed:?}"
    );
    let (at, err) = &failed[0];
    assert_eq!(*at, GOOD / 2 + 1, "the failed request is the poisoned one");
    assert!(
        matches!(err, StoreError::Internal(m) if m.contains("poisoned event")),
        "{err:?}"
    );
    let expected: usize = (0..GOOD).map(|i| i % 3 + 1).sum();
    assert_eq!(stored, expected);
    // Nothing of the failed request is stored, all of every other one is.
    assert_eq!(events_named(store.as_ref(), "bad-request").await, 0);
    assert_eq!(events_named(store.as_ref(), "poison").await, 0);
    let mut listed = 0;
    for n in 0..25 {
        listed += events_named(store.as_ref(), &format!("good-{n}")).await;
    }
    assert_eq!(listed, expected);
    // Every stored event has exactly one outbox message, and no message
    // points at an event that is not stored.
    let outbox = store.outbox_after(0, 10_000).await.unwrap();
    let event_messages = outbox.iter().filter(|m| m.type_ == "ci.build").count();
    assert_eq!(
        event_messages,
        expected + 1,
        "one per event (blocker included)"
    );
    // The batch really was one batch that had to be split: the retry
    // counter of the writer is on the metrics, but the decisive check is
    // that the poisoned request's good events are absent while its
    // neighbours' are present, above.
    let _ = admin.close().await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_evaluates_each_event_as_if_written_alone() {
    let Some(db) = common::pg_test_db("a_batch_evaluates_each_event_as_if_written_alone").await
    else {
        return;
    };
    let store = PostgresStore::open(&db.url, PostgresOptions::default())
        .await
        .unwrap();
    let (r1, r2, group) = gate_over_two_receivers(&store, &store, &store).await;
    // One request: r1 succeeds, r2 succeeds (the unit is complete now),
    // then r2 fails. Written one by one, the completion is recorded at the
    // second event and its message comes right after that event's.
    let ids = store
        .create_events(vec![
            event(&r1, "app", true),
            event(&r2, "app", true),
            event(&r2, "app", false),
        ])
        .await
        .unwrap();
    let completions = store
        .list_completions(
            group.id,
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(completions.len(), 1);
    assert_eq!(completions[0].event_id, ids[1]);
    let unit = cairn_domain::Unit {
        name: Text::parse("app").unwrap(),
        version: Text::parse("1.0").unwrap(),
        release: Text::parse("r1").unwrap(),
        platform_id: Text::parse("linux").unwrap(),
        package: Text::parse("oci").unwrap(),
    };
    assert!(!store.group_status(group.id, unit).await.unwrap().complete);
    let types: Vec<String> = store
        .outbox_after(0, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.type_)
        .filter(|t| t == "ci.build" || t == "release.ready")
        .collect();
    assert_eq!(
        types,
        ["ci.build", "ci.build", "release.ready", "ci.build"],
        "the completion follows its event, before the later one"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_final_events_on_two_nodes_complete_each_unit_once() {
    let Some(db) =
        common::pg_test_db("batched_final_events_on_two_nodes_complete_each_unit_once").await
    else {
        return;
    };
    let node = || PostgresStore::open(&db.url, PostgresOptions::default());
    let (a, b) = (
        Arc::new(node().await.unwrap()),
        Arc::new(node().await.unwrap()),
    );
    let (r1, r2, group) = gate_over_two_receivers(&*a, &*b, &*a).await;
    const UNITS: usize = 200;
    // Per unit, one node gets the final events of one receiver and the
    // other node those of the other receiver (alternating by unit), in
    // requests of several units each, all at once: within a node they are
    // batched together, across nodes they race, and only the unit locks
    // make the later batch see the earlier one's event.
    let mut tasks = Vec::new();
    for i in (0..UNITS).step_by(2) {
        let (name, next) = (format!("app-{i}"), format!("app-{}", i + 1));
        for (n, store) in [a.clone(), b.clone()].into_iter().enumerate() {
            let (mine, other) = if n == 0 { (&r1, &r2) } else { (&r2, &r1) };
            let requests = vec![
                vec![event(mine, &name, true), event(other, &next, true)],
                vec![event(other, &next, true)],
                vec![event(mine, &name, true), event(mine, &name, true)],
            ];
            for events in requests {
                let store = store.clone();
                tasks.push(tokio::spawn(
                    async move { store.create_events(events).await },
                ));
            }
        }
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap().unwrap().len();
    }
    assert_eq!(stored, UNITS / 2 * 10);
    let mut counts = std::collections::HashMap::new();
    let mut after = None;
    loop {
        let page = a
            .list_completions(group.id, PageRequest { limit: 50, after })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id.to_string());
        for c in page {
            *counts.entry(c.unit.name.as_str().to_owned()).or_insert(0) += 1;
        }
    }
    assert_eq!(counts.len(), UNITS, "every unit completed: {counts:?}");
    assert!(counts.values().all(|&n| n == 1), "once each: {counts:?}");
    let completed = b
        .outbox_after(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.type_ == "release.ready")
        .count();
    assert_eq!(completed, UNITS, "one message per completion");
    a.close().await;
    b.close().await;
}
