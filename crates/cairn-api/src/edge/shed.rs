//! Load shedding and request timeouts (`docs/edge.md` "Overload").
//!
//! One semaphore for the whole router (built once in `routes::router` and
//! captured by the layer: `Router::layer` wraps every route on its own, so
//! a semaphore made per route would not be global). A request takes a
//! permit before anything reads its body or touches the store; if none is
//! free within `shed_queue_timeout_ms` it is answered 503 with
//! `Retry-After: 1` at once, so a shed request never writes. Health routes
//! and `/metrics` never wait for a permit: an orchestrator still sees the
//! node under overload.
//!
//! Admitted requests run under `request_timeout_ms`: past it the request
//! is answered 503 (reason `timeout`). A write whose answer timed out may
//! still commit (its job is already queued to the store's writer); clients
//! retry with `Idempotency-Key`. WebSocket upgrades are exempt.

use super::config::EdgeConfig;
use crate::edge::pipeline::Next;
use crate::error::envelope;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// The shared limiter; built once per router.
pub struct Shed {
    permits: Option<Arc<Semaphore>>,
    max: usize,
    queue: Duration,
    timeout: Option<Duration>,
    in_flight: metrics::Gauge,
    shed_overload: metrics::Counter,
    shed_timeout: metrics::Counter,
}

impl Shed {
    pub fn new(config: &EdgeConfig) -> Arc<Self> {
        let max = config.max_concurrent_requests.min(Semaphore::MAX_PERMITS);
        Arc::new(Self {
            permits: (max > 0).then(|| Arc::new(Semaphore::new(max))),
            max,
            queue: config.shed_queue_timeout,
            timeout: config.request_timeout,
            in_flight: metrics::gauge!("cairn_http_in_flight"),
            shed_overload: metrics::counter!("cairn_http_shed_total", "reason" => "overload"),
            shed_timeout: metrics::counter!("cairn_http_shed_total", "reason" => "timeout"),
        })
    }

    fn off(&self) -> bool {
        self.permits.is_none() && self.timeout.is_none()
    }

    /// A permit, or `Err` when the request must be shed.
    async fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, ()> {
        let Some(permits) = &self.permits else {
            return Ok(None);
        };
        match permits.clone().try_acquire_owned() {
            Ok(p) => Ok(Some(p)),
            Err(TryAcquireError::Closed) => Err(()),
            Err(TryAcquireError::NoPermits) if self.queue.is_zero() => Err(()),
            Err(TryAcquireError::NoPermits) => {
                match tokio::time::timeout(self.queue, permits.clone().acquire_owned()).await {
                    Ok(Ok(p)) => Ok(Some(p)),
                    _ => Err(()),
                }
            }
        }
    }
}

/// Counts the request in `cairn_http_in_flight` while it lives.
struct InFlight<'a>(&'a metrics::Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

fn exempt(path: &str) -> bool {
    path.starts_with("/healthz/") || path == "/metrics"
}

fn unavailable(message: String) -> Response {
    let mut res = envelope(StatusCode::SERVICE_UNAVAILABLE, (), &[message], None);
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    res
}

/// The middleware (with `max_concurrent_requests = 0` and
/// `request_timeout_ms = 0` it only passes through).
pub async fn limit(shed: &Shed, req: Request, next: impl Next) -> Response {
    if shed.off() {
        return next.run(req).await;
    }
    let permit = if exempt(req.uri().path()) {
        None
    } else {
        match shed.admit().await {
            Ok(permit) => permit,
            Err(()) => {
                shed.shed_overload.increment(1);
                tracing::debug!("shed: no free request slot");
                return unavailable(format!(
                    "overloaded: {} requests are already being served; retry shortly",
                    shed.max
                ));
            }
        }
    };
    let _in_flight = InFlight::enter(&shed.in_flight);
    let upgrade = req.headers().contains_key(header::UPGRADE);
    let res = match shed.timeout {
        Some(limit) if !upgrade => match tokio::time::timeout(limit, next.run(req)).await {
            Ok(res) => res,
            Err(_) => {
                shed.shed_timeout.increment(1);
                tracing::warn!(
                    timeout_ms = limit.as_millis() as u64,
                    "request timed out; answered 503"
                );
                unavailable(format!(
                    "request timed out after {} ms (request_timeout_ms); a write may \
                     still have been committed: retry with the same Idempotency-Key",
                    limit.as_millis()
                ))
            }
        },
        _ => next.run(req).await,
    };
    drop(permit);
    res
}
