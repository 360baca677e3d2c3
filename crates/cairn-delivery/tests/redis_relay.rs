//! The relay against the real Redis named by `CAIRN_TEST_REDIS_URL` (CI:
//! redis://127.0.0.1:6379). Each test uses its own stream key and deletes
//! it afterwards.

mod common;

use cairn_delivery::config::{BreakerConfig, RetryConfig, SinkConfig, SinkKind};
use cairn_delivery::redis::RedisConfig;
use cairn_delivery::relay::{Relay, RelaySink};
use common::{make_changes, outbox, refused, sqlite, wait_for_cursor};
use serde_json::Value;
use std::path::PathBuf;
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
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
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

/// A Redis sink for `url` adding to `key`, trusting `ca_file` (else the
/// system's roots) and presenting `identity` (a certificate file and its
/// key) when given.
fn tls_sink(
    url: &str,
    key: &str,
    ca_file: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
) -> Result<Arc<dyn cairn_delivery::Sink>, cairn_delivery::config::ConfigError> {
    let (client_cert_file, client_key_file) = identity.unzip();
    SinkConfig {
        name: "redis".into(),
        required: false,
        kind: SinkKind::Redis(RedisConfig {
            url: url.to_owned(),
            stream_key: key.into(),
            maxlen: 0,
            timeout_ms: 5_000,
            ca_file,
            client_cert_file,
            client_key_file,
        }),
        retry: RetryConfig::default(),
        breaker: BreakerConfig::default(),
    }
    .build()
}

/// The stream's entries, read with a client of the test's own.
async fn stream_len(client: &redis::Client, key: &str) -> usize {
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("XLEN")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_tls_server_is_verified_against_the_ca_file_or_the_systems_roots() {
    let port = cairn_testkit::free_port();
    let _server = cairn_testkit::start_redis_tls(port).await;
    let url = format!("rediss://localhost:{port}");
    let ca = cairn_testkit::tls::ca_file();
    let sink = |url: &str, ca_file: Option<PathBuf>| tls_sink(url, "cairn:tls", ca_file, None);
    let (_store_dir, store) = sqlite().await;
    make_changes(&*store).await;
    let messages = outbox(&*store).await;

    // Trusting the test CA: every message is stored, read back over TLS.
    let trusted = sink(&url, Some(ca.clone())).unwrap();
    trusted.health().await.unwrap();
    trusted.deliver(&messages).await.unwrap();
    let pem = std::fs::read(&ca).unwrap();
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    let reader = redis::Client::build_with_tls(url.as_str(), certs).unwrap();
    assert_eq!(stream_len(&reader, "cairn:tls").await, messages.len());

    // The system's roots do not hold the test CA: refused, with the reason.
    refused(&*sink(&url, None).unwrap(), &messages, "certificate").await;
    assert_eq!(stream_len(&reader, "cairn:tls").await, messages.len());

    // Plain redis:// to a TLS-only server does not get through either.
    let plain = sink(&format!("redis://localhost:{port}"), None).unwrap();
    assert!(plain.deliver(&messages).await.is_err());

    // A CA file that cannot be read, or one given for a plain URL, stops
    // the sink's build, named.
    let dir = tempfile::tempdir().unwrap();
    let missing = sink(&url, Some(dir.path().join("no-such-ca.pem")))
        .err()
        .unwrap();
    assert!(missing.to_string().contains("redis ca_file"), "{missing}");
    let plain_ca = sink("redis://localhost:6379", Some(ca.clone()))
        .err()
        .unwrap();
    assert!(
        plain_ca.to_string().contains("needs a rediss:// URL"),
        "{plain_ca}"
    );
    let scheme = sink("http://localhost:6379", None).err().unwrap();
    assert!(
        scheme
            .to_string()
            .contains("must be a redis:// or rediss:// URL"),
        "{scheme}"
    );
    store.close().await;
}

#[tokio::test]
async fn a_server_that_asks_for_a_client_certificate_gets_the_configured_one() {
    let port = cairn_testkit::free_port();
    let _server = cairn_testkit::start_redis_mtls(port).await;
    let url = format!("rediss://localhost:{port}");
    let ca = cairn_testkit::tls::ca_file();
    let (cert, key) = cairn_testkit::tls::client_identity();
    let sink = |url: &str, identity| tls_sink(url, "cairn:mtls", Some(ca.clone()), identity);
    let (_store_dir, store) = sqlite().await;
    make_changes(&*store).await;
    let messages = outbox(&*store).await;

    // Presenting the client certificate: every message is stored.
    sink(&url, Some((cert.clone(), key.clone())))
        .unwrap()
        .deliver(&messages)
        .await
        .unwrap();
    let reader = cairn_delivery::redis::client(
        &url,
        Some(&ca),
        Some(cairn_http::Identity {
            cert_file: &cert,
            key_file: &key,
        }),
    )
    .unwrap();
    assert_eq!(stream_len(&reader, "cairn:mtls").await, messages.len());

    // Without it the server ends the handshake.
    // CertificateRequired (TLS 1.3) or BadCertificate, by server.
    refused(&*sink(&url, None).unwrap(), &messages, "Certificate").await;
    assert_eq!(stream_len(&reader, "cairn:mtls").await, messages.len());

    // A client certificate for a plain URL, or a key file that holds no
    // key, stops the sink's build, named.
    let plain = sink("redis://localhost:6379", Some((cert.clone(), key.clone())))
        .err()
        .unwrap();
    assert!(
        plain.to_string().contains("needs a rediss:// URL"),
        "{plain}"
    );
    let no_key = sink(&url, Some((cert.clone(), cert.clone())))
        .err()
        .unwrap();
    assert!(
        no_key.to_string().contains("redis client_key_file"),
        "{no_key}"
    );
    store.close().await;
}
