//! Overload, timeouts and fault injection (docs/edge.md): far more
//! concurrent clients than the limit are shed with 503 + Retry-After while
//! health stays up and no accepted event is lost; injected latency, errors
//! and dropped connections are each observed; production refuses fault
//! injection.

use crate::helpers::*;
use cairn::settings::{FaultRuleSetting, Mode, Settings};
use cairn::startup::Application;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rule(target: &str, methods: &[&str], probability: f64, kind: &str) -> FaultRuleSetting {
    let (route, path_prefix) = if target.ends_with('/') {
        (None, Some(target.to_owned()))
    } else {
        (Some(target.to_owned()), None)
    };
    FaultRuleSetting {
        route,
        path_prefix,
        methods: methods.iter().map(|m| (*m).to_owned()).collect(),
        probability,
        kind: kind.to_owned(),
        latency_ms: None,
        status: None,
    }
}

fn latency(target: &str, methods: &[&str], ms: u64) -> FaultRuleSetting {
    FaultRuleSetting {
        latency_ms: Some(ms),
        ..rule(target, methods, 1.0, "latency")
    }
}

fn error(target: &str, methods: &[&str], probability: f64, status: u16) -> FaultRuleSetting {
    FaultRuleSetting {
        status: Some(status),
        ..rule(target, methods, probability, "error")
    }
}

async fn metrics_text(app: &TestApp) -> String {
    let (status, text) = app.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    text
}

/// The value of the first sample whose line starts with `prefix`.
fn sample(metrics: &str, prefix: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn overload_is_shed_with_503_and_no_accepted_event_is_lost() {
    const CLIENTS: usize = 200;
    let app = spawn_app_with(|s| {
        s.max_concurrent_requests = 4;
        s.shed_queue_timeout_ms = 0;
        s.fault_injection_enabled = true;
        // Every event create takes 200 ms: 4 slots serve 20 per second.
        s.fault_injection = vec![latency("/api/v1/events", &["POST"], 200)];
    })
    .await;
    let receiver = app.create_receiver().await;

    let done = Arc::new(AtomicBool::new(false));
    let health = {
        let (client, url, done) = (new_client(), app.url("/healthz/liveness"), done.clone());
        let metrics = app.url("/metrics");
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                for url in [&url, &metrics] {
                    let status = client.get(url).send().await.map(|r| r.status());
                    seen.push(status.map_err(|e| e.to_string()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            seen
        })
    };

    // Each client keeps posting for a while (a distinct unit per attempt),
    // pausing briefly after each answer: a sustained overload, not one burst.
    let until = Instant::now() + Duration::from_millis(1_200);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let client = app.client.clone();
        let url = app.url("/api/v1/events");
        let receiver = receiver.clone();
        tasks.spawn(async move {
            let mut answers = Vec::new();
            let mut attempt = 0;
            while Instant::now() < until {
                let unit = Unit::new(&format!("overload-{i}-{attempt}"));
                attempt += 1;
                let res = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(event_body(&receiver, &unit, true).to_string())
                    .send()
                    .await
                    .expect("the server answers every request");
                let status = res.status();
                let retry_after = res
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap_or("").to_owned());
                let body: Value = parse_body(&res.text().await.expect("a body"));
                answers.push((status, retry_after, body));
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            answers
        });
    }
    let mut accepted = Vec::new();
    let mut shed = 0;
    let mut total = 0;
    while let Some(joined) = tasks.join_next().await {
        for (status, retry_after, body) in joined.expect("client task") {
            total += 1;
            match status {
                StatusCode::OK => accepted.push(id_of(&(status, body))),
                StatusCode::SERVICE_UNAVAILABLE => {
                    shed += 1;
                    assert_eq!(retry_after.as_deref(), Some("1"), "503 says when to retry");
                    let errs = assert_envelope_error(&body);
                    assert_has_error(&errs, "overloaded: ");
                }
                other => panic!("only 200 or 503 under overload, got {other}: {body}"),
            }
        }
    }
    done.store(true, Ordering::Relaxed);
    let health = health.await.expect("health task");
    eprintln!(
        "overload: {total} requests, {} accepted, {shed} shed, {} health probes",
        accepted.len(),
        health.len()
    );
    assert!(shed > 0, "far more clients than the limit: some are shed");
    assert!(
        accepted.len() >= 8,
        "the limit's worth is served all along: {}",
        accepted.len()
    );
    assert_eq!(accepted.len() + shed, total);
    assert!(!health.is_empty());
    for status in &health {
        assert_eq!(
            status.as_ref().ok(),
            Some(&StatusCode::OK),
            "health and /metrics stay up under overload: {health:?}"
        );
    }

    // Every accepted event is there, and nothing shed was written.
    for id in &accepted {
        app.get_one("events", id).await;
    }
    let stored = app.list_all("/api/v1/events?limit=1000").await;
    assert_eq!(
        stored.len(),
        accepted.len(),
        "exactly the accepted events are stored"
    );

    // The node is still serving normally.
    app.create_event(&receiver, &Unit::new("after"), true).await;
    let metrics = metrics_text(&app).await;
    assert!(
        sample(&metrics, "cairn_http_shed_total{reason=\"overload\"}").unwrap_or(0.0) >= 1.0,
        "sheds are counted"
    );
    assert!(
        metrics.contains("cairn_http_in_flight"),
        "the in-flight gauge is exported"
    );
    assert!(
        sample(&metrics, "cairn_fault_injections_total{kind=\"latency\"}").unwrap_or(0.0) >= 4.0
    );
}

#[tokio::test]
async fn a_short_queue_wait_absorbs_a_burst_within_the_limit() {
    let app = spawn_app_with(|s| {
        s.max_concurrent_requests = 2;
        s.shed_queue_timeout_ms = 2_000;
        s.fault_injection_enabled = true;
        s.fault_injection = vec![latency("/api/v1/receivers", &["GET"], 100)];
    })
    .await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..6 {
        let (client, url) = (app.client.clone(), app.url("/api/v1/receivers"));
        tasks.spawn(async move { client.get(url).send().await.map(|r| r.status()) });
    }
    let started = Instant::now();
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.expect("task").expect("response"), StatusCode::OK);
    }
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "six 100 ms requests through two slots take three rounds"
    );
}

#[tokio::test]
async fn a_request_past_the_timeout_is_answered_503() {
    // The timeout leaves the unaffected create below (an fsynced write, in
    // a debug build, beside the rest of the suite on 2 cores) room to
    // finish; the injected delay is far beyond it.
    let app = spawn_app_with(|s| {
        s.request_timeout_ms = 1_000;
        s.fault_injection_enabled = true;
        s.fault_injection = vec![latency("/api/v1/receivers", &["GET"], 10_000)];
    })
    .await;
    let started = Instant::now();
    let (status, headers, text) = app
        .send_raw(reqwest::Method::GET, "/api/v1/receivers", None, "")
        .await;
    let elapsed = started.elapsed();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(
        elapsed >= Duration::from_millis(1_000) && elapsed < Duration::from_millis(5_000),
        "answered at the timeout, not after the delay: {elapsed:?}"
    );
    assert_eq!(
        headers.get("retry-after").and_then(|v| v.to_str().ok()),
        Some("1")
    );
    let errs = assert_envelope_error(&parse_body(&text));
    assert!(errs[0].contains("timed out after 1000 ms"), "{errs:?}");
    // Other routes are unaffected.
    app.create_receiver().await;
    let metrics = metrics_text(&app).await;
    assert!(sample(&metrics, "cairn_http_shed_total{reason=\"timeout\"}").unwrap_or(0.0) >= 1.0);
}

#[tokio::test]
async fn injected_latency_delays_the_request() {
    let app = spawn_app_with(|s| {
        s.fault_injection_enabled = true;
        s.fault_injection = vec![latency("/api/v1/receivers/{id}", &[], 300)];
    })
    .await;
    let id = app.create_receiver().await;
    let started = Instant::now();
    app.get_one("receivers", &id).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let started = Instant::now();
    app.get("/api/v1/receivers").await;
    assert!(
        started.elapsed() < Duration::from_millis(300),
        "another route is not delayed"
    );
}

#[tokio::test]
async fn injected_errors_follow_their_rule_and_spare_health_routes() {
    let app = spawn_app_with(|s| {
        s.fault_injection_enabled = true;
        s.fault_injection = vec![
            // Every GET anywhere (health routes excepted: not named).
            error("/", &["GET"], 1.0, 503),
            // Named explicitly: applies.
            error("/healthz/readiness", &[], 1.0, 500),
            // Half of the creates.
            error("/api/v1/receivers", &["POST"], 0.5, 429),
        ];
    })
    .await;
    let (status, headers, text) = app
        .send_raw(reqwest::Method::GET, "/api/v1/receivers", None, "")
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(headers.contains_key("retry-after"));
    let errs = assert_envelope_error(&parse_body(&text));
    assert_has_error(&errs, "fault injected: 503");
    assert_eq!(app.get_text("/healthz/liveness").await.0, StatusCode::OK);
    assert_eq!(
        app.get_text("/healthz/readiness").await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let mut outcomes = std::collections::BTreeMap::new();
    for i in 0..60 {
        let (status, _) = app
            .post_receiver(&receiver_body(&format!("p{i}"), serde_json::json!({})))
            .await;
        *outcomes.entry(status.as_u16()).or_insert(0) += 1;
    }
    assert_eq!(
        outcomes.keys().copied().collect::<Vec<_>>(),
        vec![200, 429],
        "probability 0.5: both outcomes over 60 tries: {outcomes:?}"
    );
    // /metrics is no health route: the "/" rule fails it too.
    assert_eq!(
        app.get_text("/metrics").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn an_injected_drop_closes_the_connection_without_a_response() {
    let app = spawn_app_with(|s| {
        s.fault_injection_enabled = true;
        s.fault_injection = vec![rule("/api/v1/receivers", &["GET"], 1.0, "drop")];
    })
    .await;
    let key = app.admin_key.clone().expect("auth is on");
    let mut tcp = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    tcp.write_all(
        format!(
            "GET /api/v1/receivers HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {key}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("write");
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
        .await
        .expect("the server closes the connection");
    match read {
        Ok(n) => assert_eq!(
            n,
            0,
            "no response bytes: {:?}",
            String::from_utf8_lossy(&got)
        ),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}"),
    }
    assert!(got.is_empty());
    let err = app
        .client
        .get(app.url("/api/v1/receivers"))
        .send()
        .await
        .expect_err("a client sees no response");
    assert!(err.status().is_none(), "{err}");
    // Everything else is served.
    app.create_receiver().await;
    let metrics = metrics_text(&app).await;
    let drops = sample(&metrics, "cairn_fault_injections_total{kind=\"drop\"}").unwrap_or(0.0);
    assert!(drops >= 2.0, "{drops}");
    // Counted as dropped, never as a 500 no client saw.
    let of_route = |status: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with("cairn_http_requests_total{")
                    && l.contains("route=\"/api/v1/receivers\"")
                    && l.contains("method=\"GET\"")
                    && l.contains(&format!("status=\"{status}\""))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    assert_eq!(of_route("dropped"), drops, "{metrics}");
    assert_eq!(of_route("500"), 0.0, "{metrics}");
}

#[tokio::test]
async fn production_mode_refuses_fault_injection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let settings = Settings {
        mode: Mode::Production,
        listen: "127.0.0.1:0".parse().expect("address"),
        data_dir: dir.path().to_path_buf(),
        fault_injection_enabled: true,
        fault_injection: vec![latency("/api/v1/events", &[], 10)],
        ..Settings::default()
    };
    let err = match Application::build(settings).await {
        Ok(_) => panic!("production mode must refuse fault injection"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("fault_injection_enabled"), "{err}");
}
