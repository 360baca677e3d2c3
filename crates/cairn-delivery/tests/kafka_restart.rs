//! The Kafka sink across a restart of its broker, with a producer made
//! before the restart (as the start-up health check makes one) and never
//! used until after it: the sink must recover rather than time out forever.
//! Runs its own tansu broker (`CAIRN_TEST_TANSU_BIN`; skips when unset).

mod common;

use cairn_delivery::Sink;
use cairn_delivery::kafka::{KafkaConfig, KafkaSink};
use common::{make_changes, outbox, sqlite};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Start tansu (memory storage) on `port` and create `topic`.
async fn start_tansu(bin: &str, port: u16, topic: &str) -> Child {
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args(["broker", "--listener-url", &url])
        .args(["--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "tansu did not start"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = Command::new(bin)
        .args([
            "topic",
            "create",
            "--broker",
            &url,
            "--partitions",
            "3",
            topic,
        ])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "tansu topic create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    child
}

#[tokio::test]
async fn a_producer_made_before_a_broker_restart_recovers_after_it() {
    let Some(bin) = std::env::var("CAIRN_TEST_TANSU_BIN")
        .ok()
        .filter(|b| !b.is_empty())
    else {
        eprintln!("skipping: CAIRN_TEST_TANSU_BIN is not set");
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
        },
    )
    .unwrap();
    let mut tansu = start_tansu(&bin, port, "restart").await;
    // The health check makes the producer and talks to this broker.
    sink.health().await.unwrap();
    // ...and, given a moment, gets its producer id from it.
    tokio::time::sleep(Duration::from_secs(1)).await;
    tansu.kill().await.unwrap();
    let _tansu = start_tansu(&bin, port, "restart").await;
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
