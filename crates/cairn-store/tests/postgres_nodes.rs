//! Two PostgresStore instances on one database stand for two cairn nodes.
//! Completion must be recorded exactly once per (group, unit) however the
//! final events of a unit are spread over the nodes, and a group enabled on
//! one node while events arrive on the other must miss no unit. Skips
//! (saying why) when `CAIRN_TEST_DATABASE_URL` is unset.

mod common;

use cairn_domain::group::GroupPatch;
use cairn_domain::{CheckedEvent, GroupId, NewReceiver, Receiver, Text, Unit};
use cairn_store::postgres::{PostgresOptions, PostgresStore};
use cairn_store::{PageRequest, Store};
use common::{event_input, gate_over_two_receivers, new_group, receiver_input};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Arc;

const UNITS: usize = 40;
/// Groups created while events arrive.
const CREATED: usize = 8;

async fn node(url: &str) -> Arc<PostgresStore> {
    Arc::new(
        PostgresStore::open(url, PostgresOptions::default())
            .await
            .unwrap(),
    )
}

fn unit_name(i: usize) -> String {
    format!("app-{i}")
}

fn unit(i: usize) -> Unit {
    Unit {
        name: Text::parse(unit_name(i)).unwrap(),
        version: Text::parse("1.0").unwrap(),
        release: Text::parse("r1").unwrap(),
        platform_id: Text::parse("linux").unwrap(),
        package: Text::parse("oci").unwrap(),
    }
}

fn event(receiver: &Arc<Receiver>, i: usize, success: bool) -> CheckedEvent {
    let mut input = event_input(&receiver.id.to_string(), success);
    input.name = Some(json!(unit_name(i)));
    CheckedEvent::parse(input, Some(receiver.clone())).unwrap()
}

/// Every completion of a group, across pages, counted per unit name.
async fn completions_per_unit(store: &dyn Store, group: GroupId) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    let mut after = None;
    loop {
        let page = store
            .list_completions(group, PageRequest { limit: 7, after })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.id.to_string());
        for c in &page {
            *counts.entry(c.unit.name.as_str().to_owned()).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_final_events_on_two_nodes_complete_each_unit_once() {
    let Some(db) =
        common::pg_test_db("concurrent_final_events_on_two_nodes_complete_each_unit_once").await
    else {
        return;
    };
    let (a, b) = (node(&db.url).await, node(&db.url).await);
    let (r1, r2, group) = gate_over_two_receivers(&*a, &*b, &*a).await;
    let ids = [r1.id.to_string(), r2.id.to_string()];
    // Enabled later, on node B, while the events arrive.
    let late = a
        .create_group(new_group("late", false, &ids))
        .await
        .unwrap();

    // Each unit gets four final events at once: two successes of one
    // receiver on one node and two of the other receiver on the other node
    // (which receiver goes where alternates by unit). A node batches
    // concurrent writes into one transaction, so a node holding both
    // receivers' events could complete the unit alone; split like this,
    // only the unit lock makes the later transaction see the earlier one's
    // event. Whichever commits last sees the unit complete; several may,
    // and still only one completion may be recorded.
    let mut tasks = Vec::new();
    for i in 0..UNITS {
        for (n, store) in [a.clone(), b.clone()].into_iter().enumerate() {
            let mine = if (i + n) % 2 == 0 { &r1 } else { &r2 };
            for r in [mine, mine] {
                let (store, checked) = (store.clone(), event(r, i, true));
                tasks.push(tokio::spawn(async move {
                    store.create_events(vec![checked]).await.unwrap()
                }));
            }
            if i == UNITS / 2 && n == 1 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let enable = GroupPatch {
                        enabled: Some(true),
                        ..GroupPatch::default()
                    };
                    store.update_group(late.id, enable, None).await.unwrap();
                    Vec::new()
                }));
            }
        }
    }
    let mut stored = 0;
    for t in tasks {
        stored += t.await.unwrap().len();
    }
    assert_eq!(stored, UNITS * 4);

    for g in [group.id, late.id] {
        let counts = completions_per_unit(a.as_ref(), g).await;
        assert_eq!(counts.len(), UNITS, "every unit completed: {counts:?}");
        assert!(
            counts.values().all(|&n| n == 1),
            "one completion per unit: {counts:?}"
        );
        for i in 0..UNITS {
            let status = b.group_status(g, unit(i)).await.unwrap();
            assert!(status.complete, "unit {i} of group {g} is complete");
        }
    }
    // One completion message per recorded completion, whichever node wrote it.
    let completed = a
        .outbox_after(0, 10_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.type_ == "release.ready")
        .count();
    assert_eq!(completed, 2 * UNITS);

    // Per unit, ids increase in commit order: the latest event of each
    // receiver is the one with the highest id, and no id repeats.
    let all = b
        .list_events(
            Default::default(),
            PageRequest {
                limit: 1000,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(all.len(), UNITS * 4);
    let mut ids: Vec<String> = all.iter().map(|e| e.id.to_string()).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "listed in id order");
    ids.dedup();
    assert_eq!(ids.len(), UNITS * 4);
    a.close().await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_final_event_on_another_node_is_seen() {
    let Some(db) = common::pg_test_db("a_failed_final_event_on_another_node_is_seen").await else {
        return;
    };
    let (a, b) = (node(&db.url).await, node(&db.url).await);
    let (r1, r2, group) = gate_over_two_receivers(&*a, &*a, &*b).await;
    // r1 fails on node A, then succeeds on node B; r2 succeeds on node A:
    // node B's and A's views of the unit agree, and it completes once.
    a.create_events(vec![event(&r1, 0, false)]).await.unwrap();
    b.create_events(vec![event(&r1, 0, true)]).await.unwrap();
    a.create_events(vec![event(&r2, 0, true)]).await.unwrap();
    let counts = completions_per_unit(b.as_ref(), group.id).await;
    assert_eq!(counts.get(&unit_name(0)), Some(&1));
    // A later failure on node B makes the status incomplete on node A.
    b.create_events(vec![event(&r2, 0, false)]).await.unwrap();
    let status = a.group_status(group.id, unit(0)).await.unwrap();
    assert!(!status.complete);
    a.close().await;
    b.close().await;
}

/// Enabled groups created on one node while their receivers' final events
/// arrive on the other: the event's transaction cannot see a group that is
/// not committed yet, and the group's evaluation cannot see an event that
/// is not; locking the receivers (`FOR NO KEY UPDATE` by the group,
/// `FOR SHARE` by the event) orders the two, so no unit whose receivers
/// all succeeded is left without its completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn groups_created_while_final_events_arrive_lose_no_completion() {
    let Some(db) =
        common::pg_test_db("groups_created_while_final_events_arrive_lose_no_completion").await
    else {
        return;
    };
    let (a, b) = (node(&db.url).await, node(&db.url).await);
    let r1 = a
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    let r2 = a
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    let ids = [r1.id.to_string(), r2.id.to_string()];
    let mut tasks = Vec::new();
    let mut creations = Vec::new();
    for i in 0..UNITS {
        // Each group creation is a window for the race.
        if i % (UNITS / CREATED) == 0 {
            let (a2, ids) = (a.clone(), ids.clone());
            creations.push(tokio::spawn(async move {
                a2.create_group(new_group(&format!("gate-{i}"), true, &ids))
                    .await
                    .unwrap()
                    .id
            }));
        }
        for (store, r) in [(a.clone(), &r1), (b.clone(), &r2)] {
            let checked = event(r, i, true);
            tasks.push(tokio::spawn(async move {
                store.create_events(vec![checked]).await.unwrap();
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut groups: Vec<GroupId> = Vec::new();
    for c in creations {
        groups.push(c.await.unwrap());
    }
    assert_eq!(groups.len(), CREATED);
    for g in &groups {
        let counts = completions_per_unit(b.as_ref(), *g).await;
        assert_eq!(
            counts.len(),
            UNITS,
            "every unit of {g} completed: {counts:?}"
        );
        assert!(counts.values().all(|&n| n == 1), "{counts:?}");
        for i in 0..UNITS {
            assert!(b.group_status(*g, unit(i)).await.unwrap().complete);
        }
    }
    a.close().await;
    b.close().await;
}

/// Nodes starting together on an empty database apply the migrations once
/// (under the advisory lock) and can all write.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_migrate_once() {
    let Some(db) = common::pg_test_db("nodes_starting_together_migrate_once").await else {
        return;
    };
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { PostgresStore::open(&url, PostgresOptions::default()).await })
        })
        .collect();
    let mut nodes = Vec::new();
    for o in opens {
        nodes.push(o.await.unwrap().expect("every node starts"));
    }
    for n in &nodes {
        n.create_receiver(NewReceiver::parse(receiver_input()).unwrap())
            .await
            .unwrap();
    }
    let listed = nodes[0]
        .list_receivers(
            Default::default(),
            PageRequest {
                limit: 10,
                after: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(listed.len(), 4);
    for n in nodes {
        n.close().await;
    }
}
