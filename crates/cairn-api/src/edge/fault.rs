//! Fault injection for staging (`docs/edge.md` "Fault injection"): on
//! requests a `[[fault_injection]]` rule matches, with its probability,
//! add latency, answer an error, or drop the connection. Off unless
//! `fault_injection_enabled`, which production mode refuses at start-up.
//! Health routes are never touched unless a rule names them
//! (`/healthz...`).
//!
//! It sits inside the concurrency limit and the request timeout: an
//! injected delay holds a request slot and can time out, as a slow store
//! would.
//!
//! A drop answers with a body that fails before its first byte: hyper
//! then closes the connection without writing anything (the status line
//! is still in its buffer), so the client sees the connection closed with
//! no response at all (EOF, or a reset if it was still sending).

use super::config::{Fault, FaultRule, FaultTarget};
use crate::edge::pipeline::Next;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request};
use axum::http::StatusCode;
use axum::response::Response;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The rules and a cheap random source; built once per router.
pub struct Faults {
    rules: Vec<FaultRule>,
    seed: AtomicU64,
}

impl Faults {
    pub fn new(rules: &[FaultRule]) -> Arc<Self> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15);
        if !rules.is_empty() {
            tracing::warn!(
                rules = rules.len(),
                "FAULT INJECTION IS ON: requests matching its rules are delayed, failed or \
                 dropped on purpose"
            );
        }
        Arc::new(Self {
            rules: rules.to_vec(),
            seed: AtomicU64::new(now),
        })
    }

    /// A uniform number in [0, 1) (splitmix64; not for secrets).
    fn uniform(&self) -> f64 {
        let mut z = self
            .seed
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    fn fires(&self, probability: f64) -> bool {
        probability >= 1.0 || (probability > 0.0 && self.uniform() < probability)
    }
}

fn applies(rule: &FaultRule, route: Option<&str>, path: &str, method: &str) -> bool {
    if path.starts_with("/healthz") && !rule.target.text().starts_with("/healthz") {
        return false;
    }
    let target = match &rule.target {
        FaultTarget::Route(template) => route == Some(template.as_str()),
        FaultTarget::PathPrefix(prefix) => path.starts_with(prefix.as_str()),
    };
    target && (rule.methods.is_empty() || rule.methods.iter().any(|m| m == method))
}

/// Marks the answer of an injected drop: its status is never sent, so
/// request metrics count it as `status="dropped"`, not as the 500 it
/// carries, and the request span records no status code.
#[derive(Debug, Clone, Copy)]
pub struct Dropped;

/// A body whose first read fails: hyper closes the connection unanswered.
fn dropped() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "fault injection: connection dropped",
        ))
    });
    let mut res = Response::new(Body::from_stream(failing));
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res.extensions_mut().insert(Dropped);
    res
}

/// The middleware (no rules: it only passes through).
pub async fn inject(faults: &Faults, req: Request, next: impl Next) -> Response {
    if faults.rules.is_empty() {
        return next.run(req).await;
    }
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str());
    let path = req.uri().path();
    let method = req.method().as_str();
    let mut delay = std::time::Duration::ZERO;
    for rule in &faults.rules {
        if !applies(rule, route, path, method) || !faults.fires(rule.probability) {
            continue;
        }
        let kind = rule.fault.kind();
        metrics::counter!("cairn_fault_injections_total", "kind" => kind).increment(1);
        tracing::warn!(
            fault = kind,
            rule = rule.target.text(),
            path,
            method,
            "fault injected"
        );
        match rule.fault {
            Fault::Latency(d) => delay += d,
            Fault::Error(status) => {
                let status =
                    StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
                let mut res = crate::error::envelope(
                    status,
                    (),
                    &[format!(
                        "fault injected: {} (fault_injection)",
                        status.as_u16()
                    )],
                    None,
                );
                if status == StatusCode::SERVICE_UNAVAILABLE
                    || status == StatusCode::TOO_MANY_REQUESTS
                {
                    res.headers_mut().insert(
                        axum::http::header::RETRY_AFTER,
                        axum::http::HeaderValue::from_static("1"),
                    );
                }
                return res;
            }
            Fault::Drop => return dropped(),
        }
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    next.run(req).await
}
