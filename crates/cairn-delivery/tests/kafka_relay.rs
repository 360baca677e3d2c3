//! The Kafka sink against the real Kafka-protocol broker named by
//! `CAIRN_TEST_KAFKA_URL` (`host:port`; CI: a tansu broker on
//! 127.0.0.1:19092). Each test creates its own topic (tansu does not
//! create topics on use) and reads it back with an rdkafka consumer.

mod common;

use cairn_delivery::OutboxMessage;
use cairn_delivery::config::{BreakerConfig, RetryConfig, SinkConfig, SinkKind};
use cairn_delivery::kafka::{CONTENT_TYPE, KafkaConfig};
use cairn_delivery::relay::{Relay, RelaySink};
use common::{make_changes, outbox, refused, sqlite, wait_for_cursor};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;

const PARTITIONS: i32 = 3;

fn kafka_url(test: &str) -> Option<String> {
    match std::env::var("CAIRN_TEST_KAFKA_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipping {test}: CAIRN_TEST_KAFKA_URL is not set");
            None
        }
    }
}

/// A test client's configuration for `brokers`, in plain text.
fn client(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

/// A fresh topic with `PARTITIONS` partitions.
async fn create_topic(brokers: &str) -> String {
    create_topic_with(&client(brokers)).await
}

/// [`create_topic`] through a client configured as `base`.
async fn create_topic_with(base: &ClientConfig) -> String {
    let topic = format!("cairn-test-{}", ulid::Ulid::new());
    let admin: AdminClient<DefaultClientContext> = base.create().unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(
                &topic,
                PARTITIONS,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
    topic
}

/// One record as a consumer sees it.
#[derive(Debug)]
struct Record {
    partition: i32,
    offset: i64,
    key: String,
    headers: HashMap<String, String>,
    body: Value,
}

/// Read `topic` from the beginning of every partition until `want`
/// records arrived, then a little longer (to catch any extra), or until
/// the timeout; records in (partition, offset) order.
async fn read_topic(brokers: &str, topic: &str, want: usize) -> Vec<Record> {
    read_topic_with(&client(brokers), topic, want).await
}

/// [`read_topic`] through a client configured as `base`.
async fn read_topic_with(base: &ClientConfig, topic: &str, want: usize) -> Vec<Record> {
    let consumer: StreamConsumer = base
        .clone()
        .set("group.id", format!("cairn-test-{}", ulid::Ulid::new()))
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
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut settle: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if now >= deadline || settle.is_some_and(|s| now >= s) {
            break;
        }
        let wait = settle.unwrap_or(deadline).saturating_duration_since(now);
        let Ok(next) = tokio::time::timeout(wait, consumer.recv()).await else {
            break;
        };
        let m = next.unwrap();
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| {
                        (
                            h.key.to_owned(),
                            String::from_utf8(h.value.unwrap_or_default().to_vec()).unwrap(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            partition: m.partition(),
            offset: m.offset(),
            key: String::from_utf8(m.key().unwrap_or_default().to_vec()).unwrap(),
            headers,
            body: serde_json::from_slice(m.payload().unwrap_or_default()).unwrap(),
        });
        if out.len() >= want && settle.is_none() {
            settle = Some(Instant::now() + Duration::from_millis(500));
        }
    }
    out.sort_by_key(|r| (r.partition, r.offset));
    out
}

fn sink_config(brokers: &str, topic: &str, timeout_ms: u64) -> SinkConfig {
    SinkConfig {
        name: "kafka".into(),
        required: false,
        kind: SinkKind::Kafka(KafkaConfig {
            brokers: brokers.into(),
            topic: topic.into(),
            timeout_ms,
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }),
        retry: RetryConfig {
            base_ms: 1,
            max_ms: 10,
            ..RetryConfig::default()
        },
        breaker: BreakerConfig::default(),
    }
}

#[tokio::test]
async fn every_message_reaches_kafka_keyed_by_unit_with_its_headers() {
    let Some(brokers) = kafka_url("every_message_reaches_kafka_keyed_by_unit_with_its_headers")
    else {
        return;
    };
    let topic = create_topic(&brokers).await;
    let config = sink_config(&brokers, &topic, 5_000);
    let sink = config.build().unwrap();
    sink.health().await.unwrap();
    let (_dir, store) = sqlite().await;
    make_changes(&*store).await;
    let relay = Relay::start(
        store.clone(),
        vec![RelaySink {
            sink: sink.clone(),
            required: false,
            retry: config.retry,
            breaker: config.breaker,
        }],
        Arc::new(Notify::new()),
    );
    let expected = outbox(&*store).await;
    let last = expected.last().unwrap().seq;
    wait_for_cursor(&*store, "kafka", last).await;
    relay.stop().await;

    let got = read_topic(&brokers, &topic, expected.len()).await;
    assert_eq!(got.len(), expected.len(), "once each: {got:#?}");
    let by_id: HashMap<String, &OutboxMessage> =
        expected.iter().map(|m| (m.id.to_string(), m)).collect();
    let mut partition_of_key: HashMap<&str, i32> = HashMap::new();
    let mut seqs_of_key: HashMap<&str, Vec<u64>> = HashMap::new();
    for r in &got {
        let id = r.headers["ce_id"].as_str();
        let m = by_id[id];
        assert_eq!(r.body, serde_json::from_str::<Value>(&m.json).unwrap());
        assert_eq!(r.body["id"], id, "ce_id is the message id");
        assert_eq!(r.key, m.ordering_key, "the key is the ordering key");
        assert_eq!(r.headers["content-type"], CONTENT_TYPE);
        assert_eq!(r.headers["ce_specversion"], "1.0");
        assert_eq!(r.headers["ce_type"], m.type_);
        assert_eq!(r.headers["ce_type"], r.body["type"].as_str().unwrap());
        assert_eq!(r.headers["ce_source"], r.body["source"].as_str().unwrap());
        assert_eq!(r.headers["ce_time"], r.body["time"].as_str().unwrap());
        assert_eq!(r.headers["ce_subject"], r.body["subject"].as_str().unwrap());
        assert_eq!(
            r.headers.get("ce_traceparent").map(String::as_str),
            m.trace.as_ref().map(|t| t.as_str()),
            "ce_traceparent copies the message's traceparent"
        );
        assert_eq!(
            r.body.get("traceparent").and_then(Value::as_str),
            m.trace.as_ref().map(|t| t.as_str())
        );
        let p = *partition_of_key
            .entry(&m.ordering_key)
            .or_insert(r.partition);
        assert_eq!(p, r.partition, "one key, one partition");
        // `got` is in (partition, offset) order.
        seqs_of_key.entry(&m.ordering_key).or_default().push(m.seq);
    }
    for (key, seqs) in &seqs_of_key {
        assert!(
            seqs.is_sorted(),
            "the messages of {key:?} are in outbox order in their partition: {seqs:?}"
        );
    }
    for (key, p) in &partition_of_key {
        assert_eq!(
            *p,
            java_partition(key.as_bytes(), PARTITIONS),
            "{key:?} is partitioned as the Java client's default partitioner would"
        );
    }
    assert!(
        expected.iter().any(|m| m.trace.is_some()) && expected.iter().any(|m| m.trace.is_none()),
        "messages with and without a traceparent were checked"
    );
    // Two units, their receiver and their group: several keys.
    assert!(partition_of_key.len() >= 4, "{partition_of_key:?}");
    let unit_keys: Vec<&&str> = partition_of_key
        .keys()
        .filter(|k| k.contains('\u{1f}'))
        .collect();
    assert_eq!(unit_keys.len(), 2, "events are keyed by their unit");
    assert!(
        partition_of_key.contains_key(format!("cairn/groups/{}", group_id(&expected)).as_str())
    );
    store.close().await;
}

/// Kafka's Java client's default partition for a key: murmur2 of the
/// key's bytes (seed 0x9747b28c), made positive, modulo the partitions.
fn java_partition(key: &[u8], partitions: i32) -> i32 {
    const M: i32 = 0x5bd1_e995;
    let mut h: i32 = 0x9747_b28c_u32 as i32 ^ key.len() as i32;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= ((k as u32) >> 24) as i32;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if rest.len() == 3 {
        h ^= i32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= i32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= i32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= ((h as u32) >> 13) as i32;
    h = h.wrapping_mul(M);
    h ^= ((h as u32) >> 15) as i32;
    (h & 0x7fff_ffff) % partitions
}

/// The id of the group the changes created (from its message's subject).
fn group_id(messages: &[OutboxMessage]) -> String {
    messages
        .iter()
        .find(|m| m.type_ == cairn_domain::message::GROUP_CREATED)
        .map(|m| {
            m.ordering_key
                .strip_prefix("cairn/groups/")
                .unwrap()
                .to_owned()
        })
        .unwrap()
}

#[tokio::test]
async fn a_failure_reports_the_acknowledged_head_and_nothing_of_the_failed_units_after_it() {
    let Some(brokers) = kafka_url(
        "a_failure_reports_the_acknowledged_head_and_nothing_of_the_failed_units_after_it",
    ) else {
        return;
    };
    let topic = create_topic(&brokers).await;
    let sink = sink_config(&brokers, &topic, 5_000).build().unwrap();
    let (_dir, store) = sqlite().await;
    make_changes(&*store).await;
    let all = outbox(&*store).await;
    // Three messages of the first unit and one of the second, with the
    // batch's third message made too large for the client to send
    // (message.max.bytes, 1 MB by default): a real, deterministic refusal.
    let units: Vec<&OutboxMessage> = all
        .iter()
        .filter(|m| m.ordering_key.contains('\u{1f}'))
        .collect();
    let first_key = &units[0].ordering_key;
    let (a, b): (Vec<&OutboxMessage>, Vec<&OutboxMessage>) = units
        .into_iter()
        .partition(|m| &m.ordering_key == first_key);
    let mut huge = b[0].clone();
    huge.json = format!(
        r#"{{"id":"{}","pad":"{}"}}"#,
        huge.id,
        "x".repeat(2_000_000)
    );
    let batch = vec![a[0].clone(), a[1].clone(), huge.clone(), a[2].clone()];
    let start = Instant::now();
    let err = sink.deliver(&batch).await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(10));
    assert_eq!(err.delivered, 2, "{err}");
    assert!(err.reason.contains(&huge.id.to_string()), "{err}");
    assert!(err.reason.contains(&topic), "{err}");
    let got = read_topic(&brokers, &topic, 2).await;
    let ids: Vec<&str> = got.iter().map(|r| r.headers["ce_id"].as_str()).collect();
    let want = [a[0].id.to_string(), a[1].id.to_string()];
    assert_eq!(ids, want, "the head, and not the message after the failure");
    store.close().await;
}

#[tokio::test]
async fn the_health_check_names_a_missing_topic_and_an_unreachable_broker() {
    let Some(brokers) =
        kafka_url("the_health_check_names_a_missing_topic_and_an_unreachable_broker")
    else {
        return;
    };
    let missing = format!("cairn-missing-{}", ulid::Ulid::new());
    let sink = sink_config(&brokers, &missing, 3_000).build().unwrap();
    let err = sink.health().await.unwrap_err();
    assert!(
        err.reason.contains(&missing) && err.reason.contains("does not exist"),
        "{err}"
    );
    let topic = create_topic(&brokers).await;
    sink_config(&brokers, &topic, 3_000)
        .build()
        .unwrap()
        .health()
        .await
        .unwrap();

    // Nothing listens on this port: the check and a delivery fail within
    // their timeouts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("127.0.0.1:{port}");
    let sink = sink_config(&dead, &topic, 500).build().unwrap();
    let start = Instant::now();
    let err = sink.health().await.unwrap_err();
    assert!(err.reason.contains(&dead), "{err}");
    let (_dir, store) = sqlite().await;
    make_changes(&*store).await;
    let batch = outbox(&*store).await;
    let err = sink.deliver(&batch).await.unwrap_err();
    assert_eq!(err.delivered, 0, "{err}");
    assert!(err.reason.contains(&batch[0].id.to_string()), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "bounded: {:?}",
        start.elapsed()
    );
    store.close().await;
}

/// A test client for the TLS broker at `brokers`, trusting the test CA
/// and presenting the test client certificate.
fn tls_client(brokers: &str) -> ClientConfig {
    let ca = cairn_testkit::tls::ca_file();
    let (cert, key) = cairn_testkit::tls::client_identity();
    let mut config = client(brokers);
    config
        .set("security.protocol", "ssl")
        .set("ssl.ca.location", ca.to_str().unwrap())
        .set("ssl.certificate.location", cert.to_str().unwrap())
        .set("ssl.key.location", key.to_str().unwrap());
    config
}

/// The Kafka sink's configuration with its TLS fields set by `tls`.
fn tls_sink(
    brokers: &str,
    topic: &str,
    tls: impl FnOnce(&mut KafkaConfig),
) -> Result<Arc<dyn cairn_delivery::Sink>, cairn_delivery::config::ConfigError> {
    let mut config = sink_config(brokers, topic, 5_000);
    if let SinkKind::Kafka(k) = &mut config.kind {
        tls(k);
    }
    config.build()
}

/// tansu serves no TLS of its own, so these brokers are tansu behind the
/// testkit's TLS front (`start_tansu_tls`): every connection, the test's
/// admin and consumer ones too, is TLS on the test certificate.
#[tokio::test]
async fn over_tls_brokers_are_verified_and_a_client_certificate_is_presented() {
    let test = "over_tls_brokers_are_verified_and_a_client_certificate_is_presented";
    let Some(bin) = cairn_testkit::tansu_bin(test) else {
        return;
    };
    let ca = cairn_testkit::tls::ca_file();
    let (cert, key) = cairn_testkit::tls::client_identity();
    let (_dir, store) = sqlite().await;
    make_changes(&*store).await;
    let messages = outbox(&*store).await;

    let port = cairn_testkit::free_port();
    let _tansu = cairn_testkit::start_tansu_tls(&bin, port, false).await;
    let brokers = format!("localhost:{port}");
    let topic = create_topic_with(&tls_client(&brokers)).await;
    // Trusting the test CA: every message is acknowledged and read back.
    tls_sink(&brokers, &topic, |k| k.ca_file = Some(ca.clone()))
        .unwrap()
        .deliver(&messages)
        .await
        .unwrap();
    let got = read_topic_with(&tls_client(&brokers), &topic, messages.len()).await;
    assert_eq!(got.len(), messages.len());
    // The system's roots do not hold the test CA: nothing is delivered.
    let sink = tls_sink(&brokers, &topic, |k| k.tls = true).unwrap();
    refused(&*sink, &messages, "certificate verify failed").await;
    // In plain text nothing gets through either.
    let plain = tls_sink(&brokers, &topic, |_| {}).unwrap();
    assert_eq!(plain.deliver(&messages).await.unwrap_err().delivered, 0);

    // A broker that asks for a client certificate gets the configured one.
    let port = cairn_testkit::free_port();
    let _tansu = cairn_testkit::start_tansu_tls(&bin, port, true).await;
    let brokers = format!("localhost:{port}");
    let topic = create_topic_with(&tls_client(&brokers)).await;
    tls_sink(&brokers, &topic, |k| {
        k.ca_file = Some(ca.clone());
        k.client_cert_file = Some(cert.clone());
        k.client_key_file = Some(key.clone());
    })
    .unwrap()
    .deliver(&messages)
    .await
    .unwrap();
    let got = read_topic_with(&tls_client(&brokers), &topic, messages.len()).await;
    assert_eq!(got.len(), messages.len());
    let sink = tls_sink(&brokers, &topic, |k| k.ca_file = Some(ca.clone())).unwrap();
    refused(&*sink, &messages, "certificate required").await;

    // A CA file that cannot be read, or half a client certificate, stops
    // the sink's build, named.
    let dir = tempfile::tempdir().unwrap();
    let missing = tls_sink(&brokers, &topic, |k| {
        k.ca_file = Some(dir.path().join("no-such-ca.pem"))
    })
    .err()
    .unwrap();
    assert!(missing.to_string().contains("kafka ca_file"), "{missing}");
    let half = tls_sink(&brokers, &topic, |k| {
        k.client_cert_file = Some(cert.clone())
    })
    .err()
    .unwrap();
    assert!(
        half.to_string().contains("kafka client_key_file: not set"),
        "{half}"
    );
    store.close().await;
}
