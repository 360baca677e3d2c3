//! The relay against a real HTTP receiver started in the test (it checks
//! every signature), over the real embedded store and, when
//! `CAIRN_TEST_DATABASE_URL` names a server, the PostgreSQL store.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use cairn_delivery::breaker::BreakerState;
use cairn_delivery::config::{BreakerConfig, RetryConfig, SinkConfig, SinkKind};
use cairn_delivery::relay::{Relay, RelaySink};
use cairn_delivery::webhook::{self, WebhookConfig};
use cairn_store::Store;
use serde_json::Value;
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

mod common;

use common::{eventually, make_changes, outbox, refused, sqlite, wait_for_cursor};

const SECRET: &str = "s3cret";

/// What the receiver saw and how it answers.
#[derive(Default)]
struct Receiver {
    /// Accepted messages, in arrival order: (id header, body).
    accepted: Mutex<Vec<(String, Value)>>,
    /// Requests of any outcome.
    requests: AtomicU32,
    bad_signatures: AtomicU32,
    /// Answer 500 to this many requests first.
    fail_first: AtomicU32,
    /// Answer 500 to everything.
    fail_all: AtomicBool,
    /// Answer 500 to this message id.
    reject_id: Mutex<Option<String>>,
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    r.requests.fetch_add(1, Ordering::SeqCst);
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let ts = header(webhook::TIMESTAMP_HEADER);
    let expected = webhook::signature(SECRET.as_bytes(), &ts, &body);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let fresh = ts.parse::<u64>().is_ok_and(|t| now.abs_diff(t) < 300);
    if header(webhook::SIGNATURE_HEADER) != expected || !fresh {
        r.bad_signatures.fetch_add(1, Ordering::SeqCst);
        return StatusCode::UNAUTHORIZED;
    }
    assert_eq!(
        header("content-type"),
        webhook::CONTENT_TYPE,
        "structured CloudEvents"
    );
    let id = header(webhook::MESSAGE_ID_HEADER);
    if r.fail_all.load(Ordering::SeqCst)
        || r.reject_id.lock().unwrap().as_deref() == Some(id.as_str())
    {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    if r.fail_first
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let body: Value = serde_json::from_slice(&body).unwrap();
    r.accepted.lock().unwrap().push((id, body));
    StatusCode::NO_CONTENT
}

/// Start the receiver on a free port; returns its URL.
async fn start_receiver(r: Arc<Receiver>) -> String {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

fn sink(url: &str, retry: RetryConfig, breaker: BreakerConfig, required: bool) -> RelaySink {
    let config: SinkConfig = SinkConfig {
        name: "hook".into(),
        required,
        kind: SinkKind::Webhook(WebhookConfig {
            url: url.into(),
            secret: SECRET.into(),
            timeout_ms: 2_000,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }),
        retry,
        breaker,
    };
    RelaySink {
        sink: config.build().unwrap(),
        required,
        retry,
        breaker,
    }
}

fn fast_retry(max_attempts: u32) -> RetryConfig {
    RetryConfig {
        base_ms: 1,
        max_ms: 5,
        max_attempts,
        batch_size: 4,
        poll_ms: 10,
    }
}

fn closed_breaker() -> BreakerConfig {
    BreakerConfig {
        failures: 1_000,
        open_ms: 10,
    }
}

fn accepted_ids(r: &Receiver) -> Vec<String> {
    r.accepted
        .lock()
        .unwrap()
        .iter()
        .map(|(id, _)| id.clone())
        .collect()
}

#[tokio::test]
async fn every_message_arrives_signed_once_in_order() {
    let (_dir, store) = sqlite().await;
    every_message_arrives_signed_once_in_order_on(store).await;
}

#[tokio::test]
async fn every_message_arrives_signed_once_in_order_postgres() {
    let Ok(server) = std::env::var("CAIRN_TEST_DATABASE_URL") else {
        eprintln!("skipping: CAIRN_TEST_DATABASE_URL is not set");
        return;
    };
    let name = format!(
        "cairn_test_relay_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    cairn_store::postgres::create_database(&server, &name)
        .await
        .unwrap();
    let url = cairn_store::postgres::database_url(&server, &name).unwrap();
    let store = cairn_store::postgres::PostgresStore::open(&url, Default::default())
        .await
        .unwrap();
    every_message_arrives_signed_once_in_order_on(Arc::new(store)).await;
    cairn_store::postgres::drop_database(&server, &name)
        .await
        .unwrap();
}

async fn every_message_arrives_signed_once_in_order_on(store: Arc<dyn Store>) {
    let r = Arc::new(Receiver::default());
    let url = start_receiver(r.clone()).await;
    let wake = Arc::new(Notify::new());
    let relay = Relay::start(
        store.clone(),
        vec![sink(&url, fast_retry(10), closed_breaker(), false)],
        wake.clone(),
    );
    make_changes(&*store).await;
    wake.notify_waiters();
    let expected = outbox(&*store).await;
    assert_eq!(expected.len(), 1 + 1 + 6 + 2 + 1, "the changes' messages");
    eventually("every message", Duration::from_secs(10), || {
        r.accepted.lock().unwrap().len() >= expected.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let got = r.accepted.lock().unwrap().clone();
    assert_eq!(got.len(), expected.len(), "each message once");
    for ((id, body), m) in got.iter().zip(&expected) {
        assert_eq!(id, &m.id.to_string(), "outbox order");
        assert_eq!(body, &serde_json::from_str::<Value>(&m.json).unwrap());
        assert_eq!(body["id"], id.as_str());
        assert_eq!(body["specversion"], "1.0");
        assert_eq!(body["datacontenttype"], "application/json");
    }
    let types: HashSet<&str> = got
        .iter()
        .map(|(_, b)| b["type"].as_str().unwrap())
        .collect();
    for t in [
        "cairn.event.receiver.created",
        "cairn.event.receiver.group.created",
        "ci.build",
        "release.ready",
        "cairn.event.receiver.group.modified",
    ] {
        assert!(types.contains(t), "a {t} message arrived");
    }
    assert_eq!(r.bad_signatures.load(Ordering::SeqCst), 0);
    wait_for_cursor(&*store, "hook", expected.last().unwrap().seq).await;
    relay.stop().await;
    store.close().await;
}

#[tokio::test]
async fn a_webhook_failing_then_recovering_gets_each_message_once_in_order() {
    let (_dir, store) = sqlite().await;
    let r = Arc::new(Receiver::default());
    r.fail_first.store(5, Ordering::SeqCst);
    let url = start_receiver(r.clone()).await;
    make_changes(&*store).await;
    let relay = Relay::start(
        store.clone(),
        vec![sink(&url, fast_retry(10), closed_breaker(), false)],
        Arc::new(Notify::new()),
    );
    let expected: Vec<String> = outbox(&*store)
        .await
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    eventually("every message", Duration::from_secs(10), || {
        accepted_ids(&r).len() >= expected.len()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(accepted_ids(&r), expected, "once each, in order");
    assert_eq!(
        r.requests.load(Ordering::SeqCst) as usize,
        expected.len() + 5,
        "five failed attempts, retried"
    );
    assert!(store.dead_letters(None, 10).await.unwrap().is_empty());
    relay.stop().await;
    store.close().await;
}

#[tokio::test]
async fn a_message_that_keeps_failing_becomes_a_dead_letter_and_replays() {
    let (_dir, store) = sqlite().await;
    let r = Arc::new(Receiver::default());
    let url = start_receiver(r.clone()).await;
    make_changes(&*store).await;
    let all = outbox(&*store).await;
    let poison = all[3].clone();
    *r.reject_id.lock().unwrap() = Some(poison.id.to_string());
    let relay = Relay::start(
        store.clone(),
        vec![sink(&url, fast_retry(3), closed_breaker(), false)],
        Arc::new(Notify::new()),
    );
    eventually("the rest of the messages", Duration::from_secs(10), || {
        accepted_ids(&r).len() >= all.len() - 1
    })
    .await;
    let others: Vec<String> = all
        .iter()
        .filter(|m| m.seq != poison.seq)
        .map(|m| m.id.to_string())
        .collect();
    assert_eq!(accepted_ids(&r), others, "the cursor moved past it");
    let letters = store.dead_letters(Some("hook".into()), 10).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].seq, poison.seq);
    assert_eq!(letters[0].message_id, poison.id);
    assert_eq!(letters[0].attempts, 3);
    assert!(
        letters[0].last_error.contains("500"),
        "{}",
        letters[0].last_error
    );
    wait_for_cursor(&*store, "hook", all.last().unwrap().seq).await;

    // The receiver is fixed; the replay delivers it.
    *r.reject_id.lock().unwrap() = None;
    store.replay_dead_letter("hook", poison.seq).await.unwrap();
    relay.wake();
    eventually("the replay", Duration::from_secs(10), || {
        accepted_ids(&r).len() >= all.len()
    })
    .await;
    assert_eq!(accepted_ids(&r).last().unwrap(), &poison.id.to_string());
    assert!(store.dead_letters(None, 10).await.unwrap().is_empty());
    let mut drained = false;
    for _ in 0..500 {
        if store.sink_replays("hook", 10).await.unwrap().is_empty() {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(drained, "the replay queue drains");
    relay.stop().await;
    store.close().await;
}

#[tokio::test]
async fn the_breaker_opens_half_opens_and_closes() {
    let (_dir, store) = sqlite().await;
    let r = Arc::new(Receiver::default());
    r.fail_all.store(true, Ordering::SeqCst);
    let url = start_receiver(r.clone()).await;
    make_changes(&*store).await;
    let breaker = BreakerConfig {
        failures: 3,
        open_ms: 400,
    };
    let relay = Relay::start(
        store.clone(),
        vec![sink(&url, fast_retry(1_000), breaker, true)],
        Arc::new(Notify::new()),
    );
    let status = relay.status_handle();
    eventually("the breaker to open", Duration::from_secs(5), || {
        status.statuses()["hook"].breaker == BreakerState::Open
    })
    .await;
    assert!(status.statuses()["hook"].is_down());
    assert!(status.statuses()["hook"].required);
    let calls = r.requests.load(Ordering::SeqCst);
    assert_eq!(calls, 3, "no calls beyond the threshold");
    // While open: no calls at all.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(r.requests.load(Ordering::SeqCst), calls);
    // Then one trial, which fails and reopens.
    eventually("a half-open trial", Duration::from_secs(5), || {
        r.requests.load(Ordering::SeqCst) > calls
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(r.requests.load(Ordering::SeqCst), calls + 1, "one trial");
    assert_eq!(status.statuses()["hook"].breaker, BreakerState::Open);
    // The sink recovers: the next trial closes the breaker and the backlog
    // drains, in order.
    r.fail_all.store(false, Ordering::SeqCst);
    let expected: Vec<String> = outbox(&*store)
        .await
        .iter()
        .map(|m| m.id.to_string())
        .collect();
    eventually("the backlog to drain", Duration::from_secs(5), || {
        accepted_ids(&r).len() >= expected.len()
    })
    .await;
    assert_eq!(accepted_ids(&r), expected);
    assert_eq!(status.statuses()["hook"].breaker, BreakerState::Closed);
    assert!(status.statuses()["hook"].last_error.is_none());
    relay.stop().await;
    store.close().await;
}

/// Two nodes on one PostgreSQL database, each running a relay for the same
/// sink: one delivers, the other stands by, so each message arrives once;
/// when the delivering node goes away the other takes over from its cursor.
#[tokio::test]
async fn one_node_delivers_per_sink_and_another_takes_over_postgres() {
    let Ok(server) = std::env::var("CAIRN_TEST_DATABASE_URL") else {
        eprintln!(
            "skipping one_node_delivers_per_sink_and_another_takes_over_postgres: \
             CAIRN_TEST_DATABASE_URL is not set"
        );
        return;
    };
    let name = format!(
        "cairn_test_relay_{}",
        ulid::Ulid::new().to_string().to_lowercase()
    );
    cairn_store::postgres::create_database(&server, &name)
        .await
        .unwrap();
    let url = cairn_store::postgres::database_url(&server, &name).unwrap();
    let mut nodes: Vec<Arc<dyn Store>> = Vec::new();
    for _ in 0..2 {
        let store = cairn_store::postgres::PostgresStore::open(&url, Default::default())
            .await
            .unwrap();
        nodes.push(Arc::new(store));
    }
    let (a, b) = (nodes[0].clone(), nodes[1].clone());
    let r = Arc::new(Receiver::default());
    let hook = start_receiver(r.clone()).await;
    let relay_a = Relay::start(
        a.clone(),
        vec![sink(&hook, fast_retry(10), closed_breaker(), false)],
        Arc::new(Notify::new()),
    );
    let relay_b = Relay::start(
        b.clone(),
        vec![sink(&hook, fast_retry(10), closed_breaker(), false)],
        Arc::new(Notify::new()),
    );
    make_changes(&*a).await;
    let expected: Vec<String> = outbox(&*a).await.iter().map(|m| m.id.to_string()).collect();
    eventually("every message", Duration::from_secs(10), || {
        accepted_ids(&r).len() >= expected.len()
    })
    .await;
    let standby_a = relay_a.statuses()["hook"].standby;
    let standby_b = relay_b.statuses()["hook"].standby;
    assert!(standby_a != standby_b, "exactly one node delivers");
    // The delivering node goes away; the other one takes over.
    let (survivor, survivor_relay) = if standby_a {
        relay_b.stop().await;
        (a.clone(), relay_a)
    } else {
        relay_a.stop().await;
        (b.clone(), relay_b)
    };
    make_changes(&*survivor).await;
    let expected: Vec<String> = outbox(&*a).await.iter().map(|m| m.id.to_string()).collect();
    eventually(
        "the messages after the takeover",
        Duration::from_secs(10),
        || accepted_ids(&r).len() >= expected.len(),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(
        accepted_ids(&r),
        expected,
        "once each, in order, across the takeover"
    );
    assert!(!survivor_relay.statuses()["hook"].standby);
    survivor_relay.stop().await;
    a.close().await;
    b.close().await;
    cairn_store::postgres::drop_database(&server, &name)
        .await
        .unwrap();
}

/// Start the receiver over HTTPS with the test certificate; its URL.
async fn start_tls_receiver(r: Arc<Receiver>) -> String {
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r);
    let port = cairn_testkit::tls::serve(app).await;
    format!("https://localhost:{port}/hook")
}

#[tokio::test]
async fn https_receivers_are_verified_against_the_ca_file_or_the_systems_roots() {
    let (_dir, store) = sqlite().await;
    make_changes(&*store).await;
    let messages = outbox(&*store).await;
    let r = Arc::new(Receiver::default());
    let url = start_tls_receiver(r.clone()).await;
    let hook = |ca_file: Option<std::path::PathBuf>| {
        SinkConfig {
            name: "hook".into(),
            required: false,
            kind: SinkKind::Webhook(WebhookConfig {
                url: url.clone(),
                secret: SECRET.into(),
                timeout_ms: 2_000,
                ca_file,
                client_cert_file: None,
                client_key_file: None,
            }),
            retry: fast_retry(1),
            breaker: closed_breaker(),
        }
        .build()
    };

    // Trusting the test CA: every message arrives once, signed, in order,
    // over one TLS connection after another as the pool keeps them.
    let trusting = hook(Some(cairn_testkit::tls::ca_file())).unwrap();
    trusting.deliver(&messages).await.unwrap();
    let ids: Vec<String> = messages.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(accepted_ids(&r), ids);
    assert_eq!(r.bad_signatures.load(Ordering::SeqCst), 0);

    // The system's roots do not hold the test CA: the handshake fails, no
    // request reaches the receiver, and the reason is in the error.
    let system = match hook(None) {
        Ok(sink) => sink,
        Err(e) if e.to_string().contains("no CA certificates found") => {
            eprintln!("skipping the system-roots half: {e}");
            return;
        }
        Err(e) => panic!("building the sink: {e}"),
    };
    let requests = r.requests.load(Ordering::SeqCst);
    refused(&*system, &messages, "invalid peer certificate").await;
    assert_eq!(r.requests.load(Ordering::SeqCst), requests);

    // A CA file that cannot be read stops the sink's build, named.
    let missing = hook(Some(cairn_testkit::tls::dir().join("no-such-ca.pem")))
        .err()
        .unwrap();
    assert!(missing.to_string().contains("ca_file"), "{missing}");
}

#[tokio::test]
async fn a_receiver_that_asks_for_a_client_certificate_gets_the_configured_one() {
    let (_dir, store) = sqlite().await;
    make_changes(&*store).await;
    let messages = outbox(&*store).await;
    let r = Arc::new(Receiver::default());
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(r.clone());
    let port = cairn_testkit::tls::serve_mtls(app).await;
    let url = format!("https://localhost:{port}/hook");
    let (cert, key) = cairn_testkit::tls::client_identity();
    let hook = |client_cert_file: Option<std::path::PathBuf>,
                client_key_file: Option<std::path::PathBuf>| {
        SinkConfig {
            name: "hook".into(),
            required: false,
            kind: SinkKind::Webhook(WebhookConfig {
                url: url.clone(),
                secret: SECRET.into(),
                timeout_ms: 2_000,
                ca_file: Some(cairn_testkit::tls::ca_file()),
                client_cert_file,
                client_key_file,
            }),
            retry: fast_retry(1),
            breaker: closed_breaker(),
        }
        .build()
    };

    // Presenting the client certificate: every message arrives.
    hook(Some(cert.clone()), Some(key.clone()))
        .unwrap()
        .deliver(&messages)
        .await
        .unwrap();
    let ids: Vec<String> = messages.iter().map(|m| m.id.to_string()).collect();
    assert_eq!(accepted_ids(&r), ids);

    // Without it the receiver ends the handshake: nothing reaches it.
    let requests = r.requests.load(Ordering::SeqCst);
    // CertificateRequired (TLS 1.3) or BadCertificate, by server.
    refused(&*hook(None, None).unwrap(), &messages, "Certificate").await;
    assert_eq!(r.requests.load(Ordering::SeqCst), requests);

    // Half a pair, or a key file that holds no key: the build stops, named.
    let half = hook(Some(cert.clone()), None).err().unwrap();
    assert!(
        half.to_string()
            .contains("webhook client_key_file: not set"),
        "{half}"
    );
    let no_key = hook(Some(cert.clone()), Some(cert.clone())).err().unwrap();
    assert!(
        no_key.to_string().contains("webhook client_key_file"),
        "{no_key}"
    );
}
