//! Prometheus metrics: one process-wide recorder, rendered by `/metrics`.

use axum::extract::{MatchedPath, Request};
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often the recorder's pending histogram samples are folded into their
/// buckets (the exporter's own default). The recorder keeps every sample it
/// is given until then, or until a scrape renders them: without this, a
/// server nobody scrapes grows with every request it answers, for ever
/// (`tests/metrics_upkeep.rs`).
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Install the recorder (once per process) and return its handle; `None` if
/// another recorder was installed first.
pub fn install() -> Option<&'static PrometheusHandle> {
    install_with_upkeep(UPKEEP_EVERY)
}

/// [`install`] with another upkeep interval (for tests). Only the first call
/// in a process installs, and its interval is the one that holds.
pub fn install_with_upkeep(every: Duration) -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("cairn_store_batch_jobs".into()),
                        BATCH_BUCKETS,
                    )
                });
            let recorder = match builder {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets rejected; using defaults");
                    PrometheusBuilder::new().build_recorder()
                }
            };
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    describe();
                    spawn_upkeep(handle.clone(), every);
                    Some(handle)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "a metrics recorder was already installed");
                    None
                }
            }
        })
        .as_ref()
}

/// The recorder is the process's, so its upkeep is a thread of the process
/// rather than a task of one runtime (tests run many): it sleeps, drains the
/// pending histogram samples and publishes new descriptions, until exit.
fn spawn_upkeep(handle: PrometheusHandle, every: Duration) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        // Scrapes still drain the samples; only an unscraped server grows.
        tracing::warn!(error = %e, "could not start the metrics upkeep thread");
    }
}

fn describe() {
    metrics::describe_counter!(
        "cairn_http_requests_total",
        "HTTP requests by route template, method and status"
    );
    metrics::describe_histogram!(
        "cairn_http_request_duration_seconds",
        "HTTP request latency by route template and method"
    );
    metrics::describe_counter!("cairn_events_created_total", "Events durably stored");
    metrics::describe_counter!(
        "cairn_completions_recorded_total",
        "Group completions recorded"
    );
    metrics::describe_counter!(
        "cairn_schema_compilations_total",
        "JSON Schemas compiled (once per receiver per process)"
    );
    metrics::describe_counter!(
        "cairn_validation_failures_total",
        "Requests refused for invalid input"
    );
    metrics::describe_histogram!(
        "cairn_store_batch_jobs",
        "Write jobs committed per transaction (group commit)"
    );
    metrics::describe_histogram!(
        "cairn_store_commit_seconds",
        "Time to apply and durably commit one write batch"
    );
    metrics::describe_gauge!(
        "cairn_outbox_backlog",
        "Outbox messages after the sink's cursor, per sink"
    );
    metrics::describe_gauge!(
        "cairn_outbox_head",
        "Highest outbox position written (compare with each sink's cursor)"
    );
    metrics::describe_gauge!(
        "cairn_sink_cursor",
        "Last outbox position a sink acknowledged (or gave up on), per sink"
    );
    metrics::describe_counter!(
        "cairn_store_batch_retries_total",
        "PostgreSQL write batches that failed and were written again request by request"
    );
    metrics::describe_gauge!(
        "cairn_outbox_lag_seconds",
        "Age of the oldest message a sink has not yet delivered"
    );
    metrics::describe_counter!(
        "cairn_sink_deliveries_total",
        "Messages delivered to a sink, and failed delivery attempts"
    );
    metrics::describe_gauge!(
        "cairn_sink_breaker_state",
        "A sink's circuit breaker: 0 closed, 1 half-open, 2 open"
    );
    metrics::describe_counter!(
        "cairn_dead_letters_total",
        "Messages a sink gave up on after its last attempt"
    );
    metrics::describe_histogram!(
        "cairn_graphql_store_calls",
        "Store calls made by one GraphQL request (batched loads keep this flat)"
    );
    metrics::describe_gauge!(
        "cairn_live_feed_position",
        "Outbox position this node's live feed (subscriptions) has read up to"
    );
    metrics::describe_counter!(
        "cairn_idempotency_total",
        "Requests with an Idempotency-Key by outcome: stored, replayed, conflict (another request), \
         in_progress, invalid (bad or unsupported key), released (5xx, 408, 429 or too large to store)"
    );
    metrics::describe_counter!(
        "cairn_http_shed_total",
        "Requests answered 503 by the edge: reason overload (no free request slot) or timeout (request_timeout_ms passed)"
    );
    metrics::describe_gauge!(
        "cairn_http_in_flight",
        "Requests being served now (admitted past the concurrency limit)"
    );
    metrics::describe_counter!(
        "cairn_fault_injections_total",
        "Faults injected on purpose (fault_injection rules), by kind: latency, error, drop"
    );
    metrics::describe_gauge!(
        "cairn_uptime_seconds",
        "Seconds since this process started serving"
    );
    metrics::describe_counter!(
        "cairn_rate_limit_rejections_total",
        "Requests refused with 429 by a rate limit, by route class and scope (address or principal)"
    );
    metrics::describe_counter!(
        "cairn_rate_limit_backend_errors_total",
        "Rate-limit checks Redis could not answer, by failure mode (open: let through, closed: refused)"
    );
    metrics::describe_counter!(
        "cairn_rate_limit_evictions_total",
        "Times the in-memory rate limiter was full and dropped the keys closest to idle"
    );
    describe_issue6();
}

/// Reasons `cairn_auth_failures_total` is counted under.
pub const AUTH_FAILURE_REASONS: &[&str] = &[
    "missing_credentials",
    "malformed_header",
    "invalid_credentials",
    "forbidden",
    "login_failed",
];
/// Outcomes of `cairn_events_ingested_total`.
pub const INGEST_OUTCOMES: &[&str] = &["accepted", "invalid", "refused", "failed"];

fn describe_issue6() {
    metrics::describe_counter!(
        "cairn_events_ingested_total",
        "Events submitted, by receiver type (bounded: see docs/observability.md) and outcome"
    );
    metrics::describe_counter!(
        "cairn_auth_failures_total",
        "Requests refused by authentication or the access policy, and failed logins, by reason"
    );
    metrics::describe_gauge!(
        "cairn_db_pool_connections",
        "Store connections by state (idle, in_use), sampled at scrape"
    );
    metrics::describe_gauge!(
        "cairn_db_pool_max_connections",
        "Most connections the store's pool may open"
    );
    metrics::describe_gauge!(
        "cairn_store_write_queue_depth",
        "Write requests waiting for the store's writer(s), sampled at scrape"
    );
    metrics::describe_counter!(
        "cairn_trace_spans_exported_total",
        "Spans handed to the OTLP exporter, by outcome (exported, failed, dropped)"
    );
    crate::process_metrics::describe();
    // Counters whose label sets are known up front exist from the start, at
    // zero, so dashboards and alerts see them before the first event.
    for reason in AUTH_FAILURE_REASONS {
        metrics::counter!("cairn_auth_failures_total", "reason" => *reason).absolute(0);
    }
    for outcome in INGEST_OUTCOMES {
        metrics::counter!("cairn_events_ingested_total", "receiver_type" => "other", "outcome" => *outcome)
            .absolute(0);
    }
    for outcome in ["exported", "failed", "dropped"] {
        metrics::counter!("cairn_trace_spans_exported_total", "outcome" => outcome).absolute(0);
    }
    for name in [
        "cairn_events_created_total",
        "cairn_completions_recorded_total",
        "cairn_schema_compilations_total",
    ] {
        metrics::counter!(name).absolute(0);
    }
    metrics::counter!("cairn_validation_failures_total", "route" => "unmatched").absolute(0);
    // The edge's counters, by their fixed label values.
    for class in ["auth", "write", "read", "graphql"] {
        for scope in ["address", "principal"] {
            metrics::counter!("cairn_rate_limit_rejections_total", "class" => class, "scope" => scope)
                .absolute(0);
        }
    }
    for mode in ["open", "closed"] {
        metrics::counter!("cairn_rate_limit_backend_errors_total", "mode" => mode).absolute(0);
    }
    for reason in ["overload", "timeout"] {
        metrics::counter!("cairn_http_shed_total", "reason" => reason).absolute(0);
    }
    metrics::gauge!("cairn_http_in_flight").set(0.0);
    for kind in ["latency", "error", "drop"] {
        metrics::counter!("cairn_fault_injections_total", "kind" => kind).absolute(0);
    }
    for outcome in [
        "stored",
        "replayed",
        "conflict",
        "in_progress",
        "invalid",
        "released",
    ] {
        metrics::counter!("cairn_idempotency_total", "outcome" => outcome).absolute(0);
    }
}

/// Count one refusal by authentication or the policy.
pub fn auth_failure(reason: &'static str) {
    metrics::counter!("cairn_auth_failures_total", "reason" => reason).increment(1);
}

static RECEIVER_TYPES_MAX: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(50);
static RECEIVER_TYPES: std::sync::RwLock<Vec<String>> = std::sync::RwLock::new(Vec::new());

/// How many receiver types get their own label in this process (the
/// recorder is process-wide, so is the bound).
pub fn set_receiver_types_max(max: usize) {
    RECEIVER_TYPES_MAX.store(max, std::sync::atomic::Ordering::Relaxed);
}

/// The `receiver_type` label for a type: itself for the first
/// `receiver_types_max` distinct types this process sees, `other` after
/// that (and for a type longer than 64 bytes).
pub fn receiver_type_label(type_: &str) -> String {
    const OTHER: &str = "other";
    if type_.len() > 64 {
        return OTHER.to_owned();
    }
    let max = RECEIVER_TYPES_MAX.load(std::sync::atomic::Ordering::Relaxed);
    let known = RECEIVER_TYPES
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if known.iter().any(|t| t == type_) {
        return type_.to_owned();
    }
    let full = known.len() >= max;
    drop(known);
    if full {
        return OTHER.to_owned();
    }
    let mut known = RECEIVER_TYPES
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if known.iter().any(|t| t == type_) {
        return type_.to_owned();
    }
    if known.len() >= max {
        return OTHER.to_owned();
    }
    known.push(type_.to_owned());
    type_.to_owned()
}

/// Count `n` submitted events of a receiver type (`None`: no known
/// receiver) with an outcome from [`INGEST_OUTCOMES`].
pub fn events_ingested(receiver_type: Option<&str>, outcome: &'static str, n: u64) {
    let label = receiver_type.map_or_else(|| "unknown".to_owned(), receiver_type_label);
    metrics::counter!("cairn_events_ingested_total", "receiver_type" => label, "outcome" => outcome)
        .increment(n);
}

/// The method as a label: the standard ones by name, anything else (an
/// extension method a client made up) as `other`, so a client cannot
/// create label values.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "other",
    }
}

/// The request metrics of one (method, status, route): looked up once,
/// then reused (the recorder's own lookup hashes every label each time).
#[derive(Clone)]
struct RequestHandles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
    validation_failures: Option<metrics::Counter>,
}

impl RequestHandles {
    fn new(route: &str, method: &'static str, status: u16) -> Self {
        let route = route.to_owned();
        Self {
            requests: metrics::counter!("cairn_http_requests_total", "route" => route.clone(), "method" => method, "status" => status_label(status)),
            duration: metrics::histogram!("cairn_http_request_duration_seconds", "route" => route.clone(), "method" => method),
            validation_failures: (status == 400)
                .then(|| metrics::counter!("cairn_validation_failures_total", "route" => route)),
        }
    }
}

/// The status of a request whose connection fault injection dropped
/// unanswered (no HTTP status has three digits of 0).
const DROPPED: u16 = 0;

/// The `status` label: the three digits, or `dropped`.
fn status_label(status: u16) -> String {
    if status == DROPPED {
        "dropped".to_owned()
    } else {
        status.to_string()
    }
}

/// (method, status) -> route template -> handles. Bounded: routes are
/// templates (or `unmatched`), methods are [`method_label`]s, statuses
/// are three digits. Hashed with foldhash: two lookups per request, and
/// no key is the client's own text (SipHash's guard is not needed).
type HandleCache = std::sync::RwLock<
    foldhash::HashMap<(&'static str, u16), foldhash::HashMap<String, RequestHandles>>,
>;

/// Runs `f` with the handles of (route, method, status). Kept only with
/// Cairn's recorder installed: handles taken before a recorder is
/// installed would stay no-ops. A cached handle is used under the read
/// lock, not cloned (each clone is three reference counts up and down).
fn with_request_handles(
    route: &str,
    method: &'static str,
    status: u16,
    f: impl Fn(&RequestHandles),
) {
    static CACHE: OnceLock<HandleCache> = OnceLock::new();
    if !matches!(HANDLE.get(), Some(Some(_))) {
        return f(&RequestHandles::new(route, method, status));
    }
    let cache = CACHE.get_or_init(Default::default);
    if let Ok(map) = cache.read()
        && let Some(h) = map.get(&(method, status)).and_then(|m| m.get(route))
    {
        return f(h);
    }
    let h = RequestHandles::new(route, method, status);
    f(&h);
    if let Ok(mut map) = cache.write() {
        map.entry((method, status))
            .or_default()
            .insert(route.to_owned(), h);
    }
}

/// Count and time every request by route template (never the raw path, so
/// label cardinality stays bounded).
pub async fn track(
    state: &crate::AppState,
    req: Request,
    next: impl crate::edge::pipeline::Next,
) -> Response {
    if !state.config.observability.metrics {
        return next.run(req).await;
    }
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = method_label(req.method());
    let started = Instant::now();
    let res = next.run(req).await;
    let route = route.as_ref().map_or("unmatched", |p| p.as_str());
    let elapsed = started.elapsed().as_secs_f64();
    let status = if res
        .extensions()
        .get::<crate::edge::fault::Dropped>()
        .is_some()
    {
        DROPPED
    } else {
        res.status().as_u16()
    };
    with_request_handles(route, method, status, |h| {
        if let Some(c) = &h.validation_failures {
            c.increment(1);
        }
        h.duration.record(elapsed);
        h.requests.increment(1);
    });
    res
}

/// The id of one request: the caller's `X-Request-Id` when it is sane,
/// otherwise a fresh ULID (`edge::trace::layer`). Echoed on the response
/// and attached to every log line of the request through its span.
///
/// The second field is the `traceparent` naming the request's server span
/// (with trace context on, `None` for reads, which write no message): what
/// the messages of its writes carry.
#[derive(Debug, Clone)]
pub struct RequestId(pub String, pub Option<cairn_domain::TraceParent>);

/// After a successful write (any method but GET and HEAD answered 2xx),
/// wake the outbox relay so it delivers without waiting for its next poll.
/// Never waits for it.
pub async fn wake_relay(
    state: &crate::AppState,
    req: Request,
    next: impl crate::edge::pipeline::Next,
) -> Response {
    let write = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    let res = next.run(req).await;
    if write && res.status().is_success() {
        if let Some(wake) = &state.relay_wake {
            wake.notify_waiters();
        }
        if let Some(live) = &state.live {
            live.wake();
        }
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receiver_type_labels_are_bounded() {
        let known = RECEIVER_TYPES.read().map(|k| k.len()).unwrap_or(0);
        set_receiver_types_max(known + 2);
        assert_eq!(receiver_type_label("bound-a"), "bound-a");
        assert_eq!(receiver_type_label("bound-b"), "bound-b");
        assert_eq!(receiver_type_label("bound-c"), "other");
        assert_eq!(
            receiver_type_label("bound-a"),
            "bound-a",
            "a known type keeps its label"
        );
        assert_eq!(receiver_type_label(&"x".repeat(65)), "other");
    }
}
