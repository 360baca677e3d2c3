//! The Kafka sink across a restart of its broker, with a producer made
//! before the restart (as the start-up health check makes one) and never
//! used until after it: the sink must recover rather than time out forever.
//! Runs its own tansu broker (`CAIRN_TEST_TANSU_BIN`; skips when unset).

mod common;

use cairn_delivery::Sink;
use cairn_delivery::kafka::{KafkaConfig, KafkaSink};
use cairn_testkit::{create_tansu_topic, free_port, start_tansu, tansu_bin};
use common::{make_changes, outbox, sqlite};
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_producer_made_before_a_broker_restart_recovers_after_it() {
    let Some(bin) = tansu_bin("a_producer_made_before_a_broker_restart_recovers_after_it") else {
        return;
    };
    let port = free_port();
    let (_dir, store) = sqlite().await;
    make_changes(&*store).await;
    let messages = outbox(&*store).await;
    let sink = KafkaSink::new(
        "k",
        &KafkaConfig {
            brokers: format!("127.0.0.1:{port}"),
            topic: "restart".into(),
            timeout_ms: 1000,
            tls: false,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        },
    )
    .unwrap();
    let mut tansu = start_tansu(&bin, port).await;
    create_tansu_topic(&bin, port, "restart", 3).await;
    // The health check makes the producer and talks to this broker.
    sink.health().await.unwrap();
    // ...and, given a moment, gets its producer id from it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    tansu.kill().await.unwrap();
    let _tansu = start_tansu(&bin, port).await;
    create_tansu_topic(&bin, port, "restart", 3).await;
    let start = Instant::now();
    let mut errors = Vec::new();
    loop {
        match sink.deliver(&messages[..2]).await {
            Ok(()) => break,
            Err(e) => errors.push(e.reason),
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no delivery within 30 s of the restart: {errors:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "delivered {:?} after the restart, after {} failed attempts",
        start.elapsed(),
        errors.len()
    );
}
