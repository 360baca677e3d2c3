use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn liveness_is_alive() {
    let app = spawn_app().await;
    let (status, body) = app.get("/healthz/liveness").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"alive": true}));
}

#[tokio::test]
async fn readiness_checks_the_database() {
    let app = spawn_app().await;
    let (status, body) = app.get("/healthz/readiness").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["ready"], json!(true), "{body}");
    assert_eq!(body["checks"]["database"], json!("ok"), "{body}");
}

#[tokio::test]
async fn status_describes_the_service() {
    let app = spawn_app().await;
    let (status, body) = app.get("/healthz/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["service"]["name"], json!("cairn"), "{body}");
    assert_eq!(
        body["service"]["store"],
        json!(app.expected_store()),
        "{body}"
    );
    let version = body["service"]["version"].as_str().expect("version string");
    assert!(!version.is_empty());
    assert!(body["service"].get("release").is_some(), "{body}");
    assert!(body.get("uptime").is_some(), "{body}");
    let start = body["start_time"].as_str().expect("start_time string");
    assert!(
        start.ends_with('Z') && start.contains('T'),
        "start_time is RFC 3339 UTC: {start}"
    );
    assert!(body["health"].get("liveness").is_some(), "{body}");
    assert!(body["health"].get("readiness").is_some(), "{body}");
}

#[tokio::test]
async fn health_routes_ignore_a_trailing_slash() {
    let app = spawn_app().await;
    let (status, body) = app.get("/healthz/liveness/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"alive": true}));
}

#[tokio::test]
async fn metrics_are_prometheus_text() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    for i in 0..3 {
        app.create_event(&rid, &Unit::new(&format!("u{i}")), true)
            .await;
    }
    app.get("/api/v1/events").await;
    let (status, headers, text) = app.send_raw(Method::GET, "/metrics", None, "").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(ct.starts_with("text/plain"), "content-type {ct:?}");
    for name in ["cairn_http_requests_total", "cairn_events_created_total"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with(name) && !l.starts_with('#')),
            "{name} has a sample:\n{text}"
        );
    }
    // Every sample line is `name{labels} value`.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let value = line.rsplit(' ').next().unwrap();
        assert!(
            value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value),
            "bad sample line: {line:?}"
        );
    }
    let events_created: f64 = text
        .lines()
        .filter(|l| l.starts_with("cairn_events_created_total"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(
        events_created >= 3.0,
        "counted the 3 events: {events_created}"
    );
}

/// Health and metrics answer without credentials; the API does not.
#[tokio::test]
async fn health_and_metrics_are_open_the_api_is_not() {
    let app = spawn_app().await;
    let anonymous = new_client();
    for path in [
        "/healthz/liveness",
        "/healthz/readiness",
        "/healthz/status",
        "/metrics",
    ] {
        let res = anonymous.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let res = anonymous
        .get(app.url("/api/v1/receivers"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(res.headers()["www-authenticate"], "Bearer realm=\"cairn\"");
}

/// A made-up method is counted as `other`: clients cannot add label values.
#[tokio::test]
async fn request_metrics_do_not_take_a_clients_method_as_a_label() {
    let app = spawn_app().await;
    let brew = Method::from_bytes(b"BREWCOFFEE").unwrap();
    let (status, _, _) = app.send_raw(brew, "/api/v1/events", None, "").await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    let (_, _, text) = app.send_raw(Method::GET, "/metrics", None, "").await;
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("cairn_http_requests_total{"))
        .collect();
    assert!(
        !requests.iter().any(|l| l.contains("BREWCOFFEE")),
        "{requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|l| l.contains("method=\"other\"") && l.contains("status=\"405\"")),
        "{requests:#?}"
    );
}
