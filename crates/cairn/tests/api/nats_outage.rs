//! A NATS JetStream sink through a broker outage: the test runs its own
//! `nats-server`, kills it while events keep arriving (requests stay fast
//! and successful), restarts it on the same port and store directory, and
//! finds every event's message in the stream, in per-unit order.

use crate::helpers::*;
use cairn_delivery::config::{BreakerConfig, RetryConfig, SinkConfig, SinkKind};
use cairn_delivery::nats::NatsConfig;
use cairn_testkit::{NATS_SERVER, free_port, start_nats};
use reqwest::StatusCode;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// Event ids in stream order, first appearance only, by unit name.
async fn events_in_stream(url: &str, stream: &str) -> HashMap<String, Vec<String>> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut by_unit: HashMap<String, Vec<String>> = HashMap::new();
    let mut seen = HashSet::new();
    let Ok(mut s) = js.get_stream(stream).await else {
        return by_unit;
    };
    let last = s.info().await.unwrap().state.last_sequence;
    for seq in 1..=last {
        let Ok(m) = s.get_raw_message(seq).await else {
            continue;
        };
        let body: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
        let id = body["id"].as_str().unwrap().to_owned();
        if !seen.insert(id) {
            continue;
        }
        if let Some(event) = body["data"]["events"].get(0) {
            by_unit
                .entry(body["name"].as_str().unwrap().to_owned())
                .or_default()
                .push(event["id"].as_str().unwrap().to_owned());
        }
    }
    by_unit
}

#[tokio::test]
async fn messages_survive_a_broker_outage_in_unit_order() {
    if !Path::new(NATS_SERVER).exists() {
        eprintln!("skipping messages_survive_a_broker_outage_in_unit_order: no {NATS_SERVER}");
        return;
    }
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{port}");
    let stream = format!("OUTAGE_{port}");
    let mut nats = start_nats(port, dir.path()).await;
    let sink = SinkConfig {
        name: "nats".into(),
        required: false,
        kind: SinkKind::Nats(NatsConfig {
            url: url.clone(),
            stream: stream.clone(),
            subject_prefix: "outage".into(),
            timeout_ms: 500,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }),
        retry: RetryConfig {
            base_ms: 5,
            max_ms: 100,
            max_attempts: u32::MAX,
            batch_size: 16,
            poll_ms: 10,
        },
        breaker: BreakerConfig {
            failures: 3,
            open_ms: 200,
        },
    };
    let app = spawn_app_with(|s| s.sinks = vec![sink]).await;
    let receiver = app.create_receiver().await;
    let units: Vec<Unit> = ["u0", "u1", "u2"].iter().map(|n| Unit::new(n)).collect();
    let mut created: HashMap<String, Vec<String>> = HashMap::new();
    let ingest = async |rounds: usize, created: &mut HashMap<String, Vec<String>>| {
        for i in 0..rounds {
            for unit in &units {
                let start = Instant::now();
                let res = app
                    .post_event(&event_body(&receiver, unit, i % 2 == 0))
                    .await;
                assert_eq!(res.0, StatusCode::OK, "{}", res.1);
                assert!(
                    start.elapsed() < Duration::from_secs(2),
                    "a request waited for the broker"
                );
                created
                    .entry(unit.name.clone())
                    .or_default()
                    .push(id_of(&res));
            }
        }
    };
    ingest(4, &mut created).await;
    // Some messages are through before the broker dies.
    let start = Instant::now();
    while events_in_stream(&url, &stream).await.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "nothing delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    nats.kill().await.unwrap();
    nats.wait().await.unwrap();
    ingest(4, &mut created).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    ingest(2, &mut created).await;
    let _nats = start_nats(port, dir.path()).await;
    let start = Instant::now();
    loop {
        let got = events_in_stream(&url, &stream).await;
        if got == created {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "not every event arrived in unit order: got {got:?}, created {created:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
