//! The outbox relay seen from outside: a real webhook receiver in the test,
//! readiness per sink, and the dead-letter admin routes.

use crate::helpers::*;
use cairn_delivery::config::{BreakerConfig, RetryConfig, SinkConfig, SinkKind};
use cairn_delivery::webhook::WebhookConfig;
use reqwest::StatusCode;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Default)]
struct Hook {
    fail: AtomicBool,
    ids: Mutex<Vec<String>>,
}

async fn start_hook(hook: Arc<Hook>) -> String {
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(h): axum::extract::State<Arc<Hook>>,
                 headers: axum::http::HeaderMap| async move {
                    if h.fail.load(Ordering::SeqCst) {
                        return axum::http::StatusCode::BAD_GATEWAY;
                    }
                    let id = headers
                        .get(cairn_delivery::webhook::MESSAGE_ID_HEADER)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    h.ids.lock().unwrap().push(id);
                    axum::http::StatusCode::OK
                },
            ),
        )
        .with_state(hook);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/hook")
}

fn webhook(name: &str, url: &str, required: bool, max_attempts: u32, failures: u32) -> SinkConfig {
    SinkConfig {
        name: name.into(),
        required,
        kind: SinkKind::Webhook(WebhookConfig {
            url: url.into(),
            secret: "s".into(),
            timeout_ms: 1_000,
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
        }),
        retry: RetryConfig {
            base_ms: 1,
            max_ms: 5,
            max_attempts,
            batch_size: 16,
            poll_ms: 10,
        },
        breaker: BreakerConfig {
            failures,
            open_ms: 60_000,
        },
    }
}

async fn wait_for(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn messages_reach_a_configured_webhook() {
    let hook = Arc::new(Hook::default());
    let url = start_hook(hook.clone()).await;
    let app = spawn_app_with(|s| s.sinks = vec![webhook("hook", &url, true, 5, 5)]).await;
    let receiver = app.create_receiver().await;
    let group = app.create_group(&[&receiver], true).await;
    wait_for("two messages", async || hook.ids.lock().unwrap().len() >= 2).await;
    let (status, body) = app.get("/healthz/readiness").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["checks"]["sink:hook"], json!("ok"), "{body}");
    assert!(!group.is_empty());
}

#[tokio::test]
async fn a_required_sink_that_is_down_makes_the_node_not_ready() {
    let hook = Arc::new(Hook::default());
    hook.fail.store(true, Ordering::SeqCst);
    let url = start_hook(hook.clone()).await;
    let app = spawn_app_with(|s| {
        s.sinks = vec![
            webhook("needed", &url, true, 100, 1),
            webhook("optional", &url, false, 100, 1),
        ]
    })
    .await;
    // Requests never wait for a sink.
    let start = Instant::now();
    for _ in 0..5 {
        app.create_receiver().await;
    }
    assert!(start.elapsed() < Duration::from_secs(5));
    wait_for("readiness to fail", async || {
        app.get("/healthz/readiness").await.0 == StatusCode::SERVICE_UNAVAILABLE
    })
    .await;
    let (_, body) = app.get("/healthz/readiness").await;
    assert_eq!(body["ready"], json!(false), "{body}");
    assert_eq!(body["checks"]["database"], json!("ok"), "{body}");
    let needed = body["checks"]["sink:needed"].as_str().unwrap();
    assert!(needed.starts_with("breaker open"), "{body}");
    assert!(needed.contains("502"), "{body}");

    // An optional sink that is down is reported but leaves the node ready.
    let hook2 = Arc::new(Hook::default());
    hook2.fail.store(true, Ordering::SeqCst);
    let url2 = start_hook(hook2).await;
    let app2 = spawn_app_with(|s| s.sinks = vec![webhook("optional", &url2, false, 100, 1)]).await;
    app2.create_receiver().await;
    wait_for("the optional sink to be reported down", async || {
        let (_, body) = app2.get("/healthz/readiness").await;
        body["checks"]["sink:optional"] != json!("ok")
    })
    .await;
    let (status, body) = app2.get("/healthz/readiness").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], json!(true), "{body}");
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed() {
    let hook = Arc::new(Hook::default());
    hook.fail.store(true, Ordering::SeqCst);
    let url = start_hook(hook.clone()).await;
    let app = spawn_app_with(|s| s.sinks = vec![webhook("hook", &url, false, 2, 1_000)]).await;
    app.create_receiver().await;
    wait_for("a dead letter", async || {
        let (_, body) = app.get("/api/v1/admin/dead-letters?sink=hook").await;
        body["data"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let (status, body) = app.get("/api/v1/admin/dead-letters").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let letter = &body["data"][0];
    assert_eq!(letter["sink"], json!("hook"), "{body}");
    assert_eq!(letter["attempts"], json!(2), "{body}");
    assert!(
        letter["last_error"].as_str().unwrap().contains("502"),
        "{body}"
    );
    let seq = letter["seq"].as_u64().unwrap();
    let message_id = letter["message_id"].as_str().unwrap().to_owned();
    let (_, none) = app.get("/api/v1/admin/dead-letters?sink=other").await;
    assert_eq!(none["data"], json!([]));

    hook.fail.store(false, Ordering::SeqCst);
    let (status, body) = app
        .post(
            &format!("/api/v1/admin/dead-letters/hook/{seq}/replay"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    wait_for("the replay", async || {
        hook.ids.lock().unwrap().contains(&message_id)
    })
    .await;
    let (_, body) = app.get("/api/v1/admin/dead-letters").await;
    assert_eq!(body["data"], json!([]), "{body}");
    let (status, body) = app
        .post(
            &format!("/api/v1/admin/dead-letters/hook/{seq}/replay"),
            &json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (status, _) = app.get("/api/v1/admin/dead-letters?limit=0").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_write_wakes_the_relay_without_waiting_for_its_poll() {
    let hook = Arc::new(Hook::default());
    let url = start_hook(hook.clone()).await;
    let mut config = webhook("hook", &url, false, 5, 5);
    config.retry.poll_ms = 600_000;
    let app = spawn_app_with(|s| s.sinks = vec![config]).await;
    // Let the relay go idle first.
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.create_receiver().await;
    wait_for("the message", async || !hook.ids.lock().unwrap().is_empty()).await;
}

#[tokio::test]
async fn the_relay_reports_its_metrics() {
    let hook = Arc::new(Hook::default());
    let url = start_hook(hook.clone()).await;
    let app = spawn_app_with(|s| s.sinks = vec![webhook("metered", &url, false, 5, 5)]).await;
    app.create_receiver().await;
    wait_for("the message", async || !hook.ids.lock().unwrap().is_empty()).await;
    wait_for("the metrics", async || {
        let (_, text) = app.get_text("/metrics").await;
        text.lines().any(|l| {
            l.starts_with("cairn_sink_deliveries_total{")
                && l.contains(r#"sink="metered""#)
                && l.contains(r#"outcome="delivered""#)
        })
    })
    .await;
    let (status, text) = app.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for metric in [
        r#"cairn_sink_breaker_state{sink="metered"} 0"#,
        r#"cairn_outbox_backlog{sink="metered"}"#,
        r#"cairn_outbox_lag_seconds{sink="metered"}"#,
    ] {
        assert!(text.contains(metric), "{metric} in {text}");
    }
}
