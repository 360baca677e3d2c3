//! A Kafka sink through a broker outage: the test runs its own tansu broker
//! (the binary named by `CAIRN_TEST_TANSU_BIN`), kills it while events keep
//! arriving (requests stay fast and successful), restarts it on the same
//! port, and finds every event's message in the topic, in per-unit order.
//!
//! tansu's only storage here is in memory, so a restart loses what the
//! broker held. A consumer therefore reads the topic continuously; the
//! broker is killed only once that consumer has read everything delivered
//! so far (what a durable broker would have kept anyway), and after the
//! restart the topic is created again and a new consumer reads it from the
//! start. What the test checks is the sink's side: nothing written while
//! the broker was down is lost, the relay delivers the backlog once the
//! broker is back, and the first copy of each message keeps unit order.

use crate::helpers::*;
use cairn_delivery::config::{BreakerConfig, RetryConfig, SinkConfig, SinkKind};
use cairn_delivery::kafka::KafkaConfig;
use cairn_testkit::{create_tansu_topic, free_port, start_tansu};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use reqwest::StatusCode;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;

/// (message id, unit name, event id) per record, in the order one
/// consumer read them (offset order within a partition, so within a unit).
type Seen = Arc<Mutex<Vec<(String, String, Option<String>)>>>;

/// A consumer reading every partition of `topic` from the start, for as
/// long as the returned task runs.
fn consume(brokers: &str, topic: &str, seen: Seen) -> tokio::task::JoinHandle<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("outage-{}", ulid::Ulid::new()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    tokio::spawn(async move {
        loop {
            // Errors (the broker going away) are the client's to retry.
            let Ok(m) = consumer.recv().await else {
                continue;
            };
            let body: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).unwrap();
            let id = body["id"].as_str().unwrap().to_owned();
            let unit = body["name"].as_str().unwrap_or_default().to_owned();
            let event = body["data"]["events"]
                .get(0)
                .map(|e| e["id"].as_str().unwrap().to_owned());
            seen.lock().unwrap().push((id, unit, event));
        }
    })
}

/// Event ids, first copy of each message only, by unit name.
fn events_by_unit(records: &[(String, String, Option<String>)]) -> HashMap<String, Vec<String>> {
    let mut by_unit: HashMap<String, Vec<String>> = HashMap::new();
    let mut ids = HashSet::new();
    for (id, unit, event) in records {
        if !ids.insert(id) {
            continue;
        }
        if let Some(event) = event {
            by_unit.entry(unit.clone()).or_default().push(event.clone());
        }
    }
    by_unit
}

async fn wait_until_seen(
    what: &str,
    seen: &[&Seen],
    created: &HashMap<String, Vec<String>>,
    timeout: Duration,
) {
    let start = Instant::now();
    loop {
        let records: Vec<_> = seen
            .iter()
            .flat_map(|s| s.lock().unwrap().clone())
            .collect();
        let got = events_by_unit(&records);
        if &got == created {
            return;
        }
        assert!(
            start.elapsed() < timeout,
            "{what}: not every event arrived in unit order: got {got:?}, created {created:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn kafka_messages_survive_a_broker_outage_in_unit_order() {
    let Some(bin) = std::env::var("CAIRN_TEST_TANSU_BIN")
        .ok()
        .filter(|b| !b.is_empty())
    else {
        eprintln!(
            "skipping kafka_messages_survive_a_broker_outage_in_unit_order: \
             CAIRN_TEST_TANSU_BIN is not set"
        );
        return;
    };
    let port = free_port();
    let brokers = format!("127.0.0.1:{port}");
    let topic = format!("outage-{port}");
    let mut tansu = start_tansu(&bin, port).await;
    create_tansu_topic(&bin, port, &topic, PARTITIONS).await;
    let sink = SinkConfig {
        name: "kafka".into(),
        required: false,
        kind: SinkKind::Kafka(KafkaConfig {
            brokers: brokers.clone(),
            topic: topic.clone(),
            timeout_ms: 500,
            tls: false,
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
    let before: Seen = Arc::default();
    let reader = consume(&brokers, &topic, before.clone());
    let receiver = app.create_receiver().await;
    let units: Vec<Unit> = ["u0", "u1", "u2"].iter().map(|n| Unit::new(n)).collect();
    let mut created: HashMap<String, Vec<String>> = HashMap::new();
    let mut slowest = Duration::ZERO;
    let mut ingest = async |rounds: usize, created: &mut HashMap<String, Vec<String>>| {
        let start = Instant::now();
        for i in 0..rounds {
            for unit in &units {
                let sent = Instant::now();
                let res = app
                    .post_event(&event_body(&receiver, unit, i % 2 == 0))
                    .await;
                assert_eq!(res.0, StatusCode::OK, "{}", res.1);
                slowest = slowest.max(sent.elapsed());
                created
                    .entry(unit.name.clone())
                    .or_default()
                    .push(id_of(&res));
            }
        }
        start.elapsed()
    };
    let up = ingest(4, &mut created).await;
    wait_until_seen(
        "before the outage",
        &[&before],
        &created,
        Duration::from_secs(20),
    )
    .await;
    let start = Instant::now();
    while !before.lock().unwrap().iter().any(|(_, _, e)| e.is_none()) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the receiver's message did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    tansu.kill().await.unwrap();
    tansu.wait().await.unwrap();
    let down = ingest(4, &mut created).await;
    // Long enough for failed attempts and an open breaker.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let down = down + ingest(2, &mut created).await;
    assert!(
        slowest < Duration::from_secs(2),
        "a request waited for the broker ({slowest:?}); 12 requests took {up:?} with \
         the broker up, 18 took {down:?} with it down"
    );
    reader.abort();

    let _tansu = start_tansu(&bin, port).await;
    create_tansu_topic(&bin, port, &topic, PARTITIONS).await;
    let after: Seen = Arc::default();
    let reader = consume(&brokers, &topic, after.clone());
    wait_until_seen(
        "after the outage",
        &[&before, &after],
        &created,
        Duration::from_secs(60),
    )
    .await;
    reader.abort();
    // Every message, not just events, at least once: the receiver's too.
    let all: Vec<_> = [&before, &after]
        .iter()
        .flat_map(|s| s.lock().unwrap().clone())
        .collect();
    assert!(
        all.iter().any(|(_, _, event)| event.is_none()),
        "the receiver's message arrived"
    );
}
