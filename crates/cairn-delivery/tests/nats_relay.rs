//! The relay against the real NATS JetStream server named by
//! `CAIRN_TEST_NATS_URL` (CI: nats://127.0.0.1:4222). Each test uses its
//! own stream and subjects and deletes them afterwards.

mod common;

use cairn_delivery::config::{BreakerConfig, RetryConfig, SinkConfig, SinkKind};
use cairn_delivery::nats::NatsConfig;
use cairn_delivery::relay::{Relay, RelaySink};
use common::{make_changes, outbox, refused, sqlite, wait_for_cursor};
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Notify;

const SINK: &str = "nats";

fn nats_url(test: &str) -> Option<String> {
    match std::env::var("CAIRN_TEST_NATS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            eprintln!("skipping {test}: CAIRN_TEST_NATS_URL is not set");
            None
        }
    }
}

/// Every message, as stored in the stream: (Nats-Msg-Id, subject, body).
async fn stream_messages(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<(String, String, Value)> {
    let mut s = js.get_stream(stream).await.unwrap();
    let last = s.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = s.get_raw_message(seq).await.unwrap();
        let id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push((
            id,
            m.subject.to_string(),
            serde_json::from_slice(&m.payload).unwrap(),
        ));
    }
    out
}

#[tokio::test]
async fn every_message_reaches_jetstream_once_with_its_id() {
    let Some(url) = nats_url("every_message_reaches_jetstream_once_with_its_id") else {
        return;
    };
    let suffix = ulid::Ulid::new().to_string();
    let stream = format!("CAIRN_TEST_{suffix}");
    let prefix = format!("cairn_test_{suffix}");
    let config = NatsConfig {
        url: url.clone(),
        stream: stream.clone(),
        subject_prefix: prefix.clone(),
        timeout_ms: 5_000,
        ca_file: None,
        client_cert_file: None,
        client_key_file: None,
    };
    let sink_config = SinkConfig {
        name: "nats".into(),
        required: false,
        kind: SinkKind::Nats(config),
        retry: RetryConfig {
            base_ms: 1,
            max_ms: 10,
            ..RetryConfig::default()
        },
        breaker: BreakerConfig::default(),
    };
    let sink = sink_config.build().unwrap();
    sink.health().await.unwrap();
    let (_dir, store) = sqlite().await;
    make_changes(&*store).await;
    let relay = Relay::start(
        store.clone(),
        vec![RelaySink {
            sink: sink.clone(),
            required: false,
            retry: sink_config.retry,
            breaker: sink_config.breaker,
        }],
        Arc::new(Notify::new()),
    );
    let expected = outbox(&*store).await;
    let client = async_nats::connect(url.as_str()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let last = expected.last().unwrap().seq;
    wait_for_cursor(&*store, SINK, last).await;
    relay.stop().await;

    let got = stream_messages(&js, &stream).await;
    assert_eq!(got.len(), expected.len(), "once each");
    // Every message arrived with its id as Nats-Msg-Id; messages with one
    // ordering key (one unit, group or receiver) arrived in outbox order
    // (different keys are published concurrently).
    let by_id: std::collections::HashMap<String, &cairn_delivery::OutboxMessage> =
        expected.iter().map(|m| (m.id.to_string(), m)).collect();
    let mut arrived: std::collections::HashMap<&str, Vec<u64>> = Default::default();
    for (id, subject, body) in &got {
        let m = by_id.get(id).expect("Nats-Msg-Id is a message id");
        assert_eq!(body, &serde_json::from_str::<Value>(&m.json).unwrap());
        assert_eq!(body["id"], id.as_str());
        assert_eq!(subject, &cairn_delivery::nats::subject(&prefix, &m.type_));
        arrived
            .entry(m.ordering_key.as_str())
            .or_default()
            .push(m.seq);
    }
    assert_eq!(
        arrived.values().map(Vec::len).sum::<usize>(),
        expected.len()
    );
    for (key, seqs) in &arrived {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "messages of {key} in outbox order: {seqs:?}"
        );
    }
    // Delivering them all again is deduplicated by the broker.
    sink.deliver(&expected).await.unwrap();
    assert_eq!(stream_messages(&js, &stream).await.len(), expected.len());

    js.delete_stream(&stream).await.unwrap();
    store.close().await;
}

/// A NATS sink for the TLS server at `url`, storing into `stream`,
/// trusting `ca_file` (else the system's roots) and presenting `identity`
/// (a certificate file and its key) when given.
fn tls_sink(
    url: &str,
    stream: &str,
    ca_file: Option<PathBuf>,
    identity: Option<(PathBuf, PathBuf)>,
) -> Result<Arc<dyn cairn_delivery::Sink>, cairn_delivery::config::ConfigError> {
    let (client_cert_file, client_key_file) = identity.unzip();
    SinkConfig {
        name: "nats".into(),
        required: false,
        kind: SinkKind::Nats(NatsConfig {
            url: url.to_owned(),
            stream: stream.into(),
            subject_prefix: stream.to_ascii_lowercase(),
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

#[tokio::test]
async fn a_tls_server_is_verified_against_the_ca_file_or_the_systems_roots() {
    let dir = tempfile::tempdir().unwrap();
    let port = cairn_testkit::free_port();
    let _server = cairn_testkit::start_nats_tls(port, dir.path()).await;
    let url = format!("tls://localhost:{port}");
    let ca = cairn_testkit::tls::ca_file();
    let sink = |ca_file: Option<PathBuf>| tls_sink(&url, "CAIRN_TLS", ca_file, None);
    let (_store_dir, store) = sqlite().await;
    make_changes(&*store).await;
    let messages = outbox(&*store).await;

    // Trusting the test CA: every message is stored, read back over TLS.
    sink(Some(ca.clone()))
        .unwrap()
        .deliver(&messages)
        .await
        .unwrap();
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(ca.clone())
        .connect(url.as_str())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    assert_eq!(
        stream_messages(&js, "CAIRN_TLS").await.len(),
        messages.len()
    );

    // The system's roots do not hold the test CA: refused, with the reason.
    refused(&*sink(None).unwrap(), &messages, "certificate").await;

    // A CA file that cannot be read stops the sink's build, named.
    let missing = sink(Some(dir.path().join("no-such-ca.pem"))).err().unwrap();
    assert!(missing.to_string().contains("nats ca_file"), "{missing}");
    store.close().await;
}

#[tokio::test]
async fn a_server_that_asks_for_a_client_certificate_gets_the_configured_one() {
    let dir = tempfile::tempdir().unwrap();
    let port = cairn_testkit::free_port();
    let _server = cairn_testkit::start_nats_mtls(port, dir.path()).await;
    let url = format!("tls://localhost:{port}");
    let ca = cairn_testkit::tls::ca_file();
    let (cert, key) = cairn_testkit::tls::client_identity();
    let sink = |identity| tls_sink(&url, "CAIRN_MTLS", Some(ca.clone()), identity);
    let (_store_dir, store) = sqlite().await;
    make_changes(&*store).await;
    let messages = outbox(&*store).await;

    // Presenting the client certificate: every message is stored.
    sink(Some((cert.clone(), key.clone())))
        .unwrap()
        .deliver(&messages)
        .await
        .unwrap();
    let client = async_nats::ConnectOptions::new()
        .add_root_certificates(ca.clone())
        .add_client_certificate(cert.clone(), key.clone())
        .connect(url.as_str())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    assert_eq!(
        stream_messages(&js, "CAIRN_MTLS").await.len(),
        messages.len()
    );

    // Without it the server refuses the connection.
    // CertificateRequired (TLS 1.3) or BadCertificate, by server.
    refused(&*sink(None).unwrap(), &messages, "Certificate").await;

    // A key file that holds no key stops the sink's build, named.
    let no_key = sink(Some((cert.clone(), cert.clone()))).err().unwrap();
    assert!(
        no_key.to_string().contains("nats client_key_file"),
        "{no_key}"
    );
    store.close().await;
}
