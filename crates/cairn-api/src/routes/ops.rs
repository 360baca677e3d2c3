//! Health routes and `/metrics`.

use crate::AppState;
use crate::error::json_response;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

pub async fn liveness() -> Response {
    json_response(StatusCode::OK, br#"{"alive":true}"#.to_vec())
}

/// The store's check, then one `sink:<name>` check per sink. A sink is
/// down while its breaker is open; that makes the node not ready only if
/// the sink is `required`.
async fn ready(state: &AppState) -> (bool, serde_json::Value) {
    let (mut ok, mut checks) = match state.store.check().await {
        Ok(()) => (true, json!({"database": "ok"})),
        Err(e) => (false, json!({"database": e.to_string()})),
    };
    for (name, s) in state.sinks.statuses() {
        let verdict = if s.is_down() {
            ok &= !s.required;
            format!(
                "breaker {}: {}",
                s.breaker.as_str(),
                s.last_error.as_deref().unwrap_or("failing")
            )
        } else {
            "ok".to_owned()
        };
        checks[format!("sink:{name}")] = json!(verdict);
    }
    (ok, checks)
}

pub async fn readiness(State(state): State<AppState>) -> Response {
    let (ok, checks) = ready(&state).await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json_response(
        status,
        json!({"ready": ok, "checks": checks})
            .to_string()
            .into_bytes(),
    )
}

pub async fn status(State(state): State<AppState>) -> Response {
    let (ok, _) = ready(&state).await;
    let uptime = state.started.elapsed();
    let body = json!({
        "service": {
            "name": "cairn",
            "version": env!("CARGO_PKG_VERSION"),
            "release": option_env!("CAIRN_RELEASE").unwrap_or(env!("CARGO_PKG_VERSION")),
            "store": state.store.kind(),
        },
        "uptime": format!("{:.3}s", uptime.as_secs_f64()),
        "uptime_seconds": uptime.as_secs_f64(),
        "start_time": state.start_time.to_string(),
        "health": {"liveness": true, "readiness": ok},
    });
    json_response(StatusCode::OK, body.to_string().into_bytes())
}

pub async fn metrics(State(state): State<AppState>) -> Response {
    let Some(handle) = crate::metrics::install() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n",
        )
            .into_response();
    };
    match state.store.outbox_head().await {
        Ok(n) => metrics::gauge!("cairn_outbox_head").set(n as f64),
        Err(e) => tracing::warn!(error = %e, "reading the outbox head for /metrics"),
    }
    metrics::gauge!("cairn_uptime_seconds").set(state.started.elapsed().as_secs_f64());
    if state.config.observability.metrics {
        let kind = state.store.kind();
        let pool = state.store.pool_stats();
        metrics::gauge!("cairn_db_pool_max_connections", "store" => kind).set(pool.max as f64);
        metrics::gauge!("cairn_db_pool_connections", "store" => kind, "state" => "idle")
            .set(pool.idle as f64);
        metrics::gauge!("cairn_db_pool_connections", "store" => kind, "state" => "in_use")
            .set(pool.in_use as f64);
        metrics::gauge!("cairn_store_write_queue_depth", "store" => kind)
            .set(pool.write_queue as f64);
        crate::process_metrics::sample();
    }
    let mut res = handle.render().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}
