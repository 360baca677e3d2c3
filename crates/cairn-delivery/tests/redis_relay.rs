//! The relay against the real Redis named by `CAIRN_TEST_REDIS_URL` (CI:
//! redis://127.0.0.1:6379). Each test uses its own stream key and deletes
//! it afterwards.

mod common;

use cairn_delivery::config::{BreakerConfig, RetryConfig, SinkConfig, SinkKind};
use cairn_delivery::redis::RedisConfig;
use cairn_delivery::relay::{Relay, RelaySink};
use common::{make_changes, outbox, sqlite, wait_for_cursor};
use serde_json::Value;
use std::sync::Arc;
use tokio::sync::Notify;

const SINK: &str = "redis";

#[tokio::test]
async fn every_message_reaches_the_redis_stream_in_order() {
    let Some(url) = std::env::var("CAIRN_TEST_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!(
            "skipping every_message_reaches_the_redis_stream_in_order: CAIRN_TEST_REDIS_URL is not set"
        );
        return;
    };
    let key = format!("cairn:test:{}", ulid::Ulid::new());
    let config = SinkConfig {
        name: "redis".into(),
        required: false,
        kind: SinkKind::Redis(RedisConfig {
            url: url.clone(),
            stream_key: key.clone(),
            maxlen: 1000,
            timeout_ms: 2_000,
        }),
        retry: RetryConfig {
            base_ms: 1,
            max_ms: 10,
            batch_size: 4,
            ..RetryConfig::default()
        },
        breaker: BreakerConfig::default(),
    };
    let (_dir, store) = sqlite().await;
    make_changes(&*store).await;
    let relay = Relay::start(
        store.clone(),
        vec![RelaySink {
            sink: config.build().unwrap(),
            required: false,
            retry: config.retry,
            breaker: config.breaker,
        }],
        Arc::new(Notify::new()),
    );
    let expected = outbox(&*store).await;
    let last = expected.last().unwrap().seq;
    wait_for_cursor(&*store, SINK, last).await;
    relay.stop().await;

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(&key)
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(entries.len(), expected.len(), "once each");
    for ((_, fields), m) in entries.iter().zip(&expected) {
        assert_eq!(
            fields,
            &vec![
                "id".to_owned(),
                m.id.to_string(),
                "type".to_owned(),
                m.type_.clone(),
                "message".to_owned(),
                m.json.clone()
            ],
            "fields in outbox order"
        );
        let body: Value = serde_json::from_str(&fields[5]).unwrap();
        assert_eq!(body["id"], m.id.to_string());
    }
    let _: () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    store.close().await;
}
