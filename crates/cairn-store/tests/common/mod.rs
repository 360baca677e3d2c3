//! Shared by the store-level tests: inputs, and fresh PostgreSQL databases
//! on the server named by `CAIRN_TEST_DATABASE_URL`.

#![allow(dead_code)] // each test file uses its own subset

use cairn_domain::{EventInput, Group, GroupInput, NewGroup, NewReceiver, Receiver, ReceiverInput};
use cairn_store::Store;
use serde_json::json;
use std::sync::Arc;

pub fn receiver_input() -> ReceiverInput {
    serde_json::from_str(
        r#"{"name":"build","type":"ci.build","version":"1","description":"d",
            "schema":{"type":"object","properties":{"n":{"type":"integer"}}}}"#,
    )
    .unwrap()
}

pub fn event_input(rid: &str, success: bool) -> EventInput {
    serde_json::from_value(json!({
        "name": "app", "version": "1.0", "release": "r1", "platform_id": "linux",
        "package": "oci", "description": "built", "payload": {"n": 7},
        "success": success, "event_receiver_id": rid
    }))
    .unwrap()
}

pub fn new_group(name: &str, enabled: bool, receivers: &[String]) -> NewGroup {
    NewGroup::parse(
        serde_json::from_value::<GroupInput>(json!({
            "name": name, "type": "release.ready", "version": "1",
            "description": "d", "enabled": enabled, "event_receiver_ids": receivers
        }))
        .unwrap(),
        |_| true,
    )
    .unwrap()
}

/// Two receivers, made through `first` and `second`, and an enabled group
/// "gate" over both, made through `group_on` (the same store or different
/// nodes of one database).
pub async fn gate_over_two_receivers(
    first: &dyn Store,
    second: &dyn Store,
    group_on: &dyn Store,
) -> (Arc<Receiver>, Arc<Receiver>, Group) {
    let r1 = first
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    let r2 = second
        .create_receiver(NewReceiver::parse(receiver_input()).unwrap())
        .await
        .unwrap();
    let group = group_on
        .create_group(new_group(
            "gate",
            true,
            &[r1.id.to_string(), r2.id.to_string()],
        ))
        .await
        .unwrap();
    (r1, r2, group)
}

/// A database created for one test and dropped when this goes away.
pub struct PgTestDb {
    server: String,
    pub name: String,
    pub url: String,
}

/// A fresh database, or `None` (after saying why) when
/// `CAIRN_TEST_DATABASE_URL` is unset and the test should skip.
pub async fn pg_test_db(test: &str) -> Option<PgTestDb> {
    let Ok(server) = std::env::var("CAIRN_TEST_DATABASE_URL") else {
        eprintln!("skipping {test}: CAIRN_TEST_DATABASE_URL is not set");
        return None;
    };
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!(
        "cairn_test_store_{}_{nanos}_{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    cairn_store::postgres::create_database(&server, &name)
        .await
        .unwrap();
    let url = cairn_store::postgres::database_url(&server, &name).unwrap();
    Some(PgTestDb { server, name, url })
}

impl Drop for PgTestDb {
    fn drop(&mut self) {
        let (server, name) = (self.server.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(cairn_store::postgres::drop_database(&server, &name))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
