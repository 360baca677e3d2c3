//! Closed-loop load: N workers, each sending one request at a time for a
//! bounded duration, recording the latency of every response.

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, HeaderValue};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Every how many GET/list responses a worker fully checks the body.
const CHECK_EVERY: u64 = 32;
/// Longest error text kept as a sample.
const MAX_SAMPLE_CHARS: usize = 400;
/// Pause of a worker after a transport error (refused or dropped connection).
const TRANSPORT_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// What a scenario's requests do.
#[derive(Clone)]
pub enum Work {
    /// POST one of these pre-serialized event bodies to `url`.
    Create {
        url: String,
        bodies: Arc<Vec<Bytes>>,
        /// Send a fresh `Idempotency-Key` (this prefix, the worker, a
        /// counter) with every create.
        idempotency_prefix: Option<String>,
    },
    /// GET `{prefix}{id}` for random ids.
    Get {
        prefix: String,
        ids: Arc<Vec<String>>,
    },
    /// GET one of these complete list URLs at random.
    List { urls: Arc<Vec<String>> },
}

pub struct Plan {
    pub warmup: Duration,
    pub duration: Duration,
    pub concurrency: usize,
    /// Upper bound on requests sent in the whole scenario, warm-up included.
    pub max_requests: u64,
}

/// The measured outcome of one scenario.
pub struct Outcome {
    /// Latencies (µs) of successful responses completed in the measured
    /// window, sorted ascending.
    pub latencies_us: Vec<u64>,
    /// Length of the measured window (end of warm-up to last completion).
    pub window: Duration,
    /// Failed requests (non-200 status, transport error, bad body),
    /// warm-up included.
    pub errors: u64,
    pub first_error: Option<String>,
    /// Ids returned by successful creates (all of them, warm-up included).
    pub created_ids: Vec<String>,
    /// Requests sent, warm-up included.
    pub sent: u64,
}

impl Outcome {
    /// Successful responses per second of the measured window (`None` if
    /// the window is empty).
    pub fn rps(&self) -> Option<f64> {
        let secs = self.window.as_secs_f64();
        (secs > 0.0).then(|| self.latencies_us.len() as f64 / secs)
    }
}

struct WorkerResult {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<(Instant, String)>,
    created_ids: Vec<String>,
    last_completion: Option<Instant>,
}

struct Shared {
    client: Client,
    work: Work,
    measure_from: Instant,
    deadline: Instant,
    max_requests: u64,
    sent: AtomicU64,
}

/// Run one scenario. `on_measure_start` is called once the warm-up is over
/// (used to sample CPU counters).
pub async fn run(
    client: &Client,
    work: Work,
    plan: &Plan,
    on_measure_start: impl FnOnce(),
) -> Outcome {
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let deadline = measure_from + plan.duration;
    let shared = Arc::new(Shared {
        client: client.clone(),
        work,
        measure_from,
        deadline,
        max_requests: plan.max_requests,
        sent: AtomicU64::new(0),
    });
    let handles: Vec<_> = (0..plan.concurrency)
        .map(|i| tokio::spawn(worker(Arc::clone(&shared), i as u64)))
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    on_measure_start();

    let mut latencies_us = Vec::new();
    let mut errors = 0;
    let mut first_error: Option<(Instant, String)> = None;
    let mut created_ids = Vec::new();
    let mut last = measure_from;
    for handle in handles {
        let r = match handle.await {
            Ok(r) => r,
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| (Instant::now(), format!("worker failed: {e}")));
                continue;
            }
        };
        latencies_us.extend(r.latencies_us);
        errors += r.errors;
        if let Some((at, msg)) = r.first_error
            && first_error.as_ref().is_none_or(|(t, _)| at < *t)
        {
            first_error = Some((at, msg));
        }
        created_ids.extend(r.created_ids);
        if let Some(t) = r.last_completion {
            last = last.max(t);
        }
    }
    latencies_us.sort_unstable();
    Outcome {
        latencies_us,
        window: last.saturating_duration_since(measure_from),
        errors,
        first_error: first_error.map(|(_, m)| m),
        created_ids,
        sent: shared.sent.load(Ordering::Relaxed).min(plan.max_requests),
    }
}

async fn worker(shared: Arc<Shared>, index: u64) -> WorkerResult {
    let mut rng = Rng::new(index);
    let mut result = WorkerResult {
        latencies_us: Vec::with_capacity(4096),
        errors: 0,
        first_error: None,
        created_ids: Vec::new(),
        last_completion: None,
    };
    let json = HeaderValue::from_static("application/json");
    let mut n: u64 = 0;
    while Instant::now() < shared.deadline
        && shared.sent.fetch_add(1, Ordering::Relaxed) < shared.max_requests
    {
        n += 1;
        let check = n.is_multiple_of(CHECK_EVERY);
        let mut pick = 0;
        let (request, what) = match &shared.work {
            Work::Create {
                url,
                bodies,
                idempotency_prefix,
            } => {
                let body = bodies[rng.below(bodies.len())].clone();
                let mut req = shared
                    .client
                    .post(url.as_str())
                    .header(CONTENT_TYPE, json.clone())
                    .body(body);
                if let Some(prefix) = idempotency_prefix {
                    req = req.header("idempotency-key", format!("{prefix}-{index}-{n}"));
                }
                (req, Expect::CreatedId)
            }
            Work::Get { prefix, ids } => {
                pick = rng.below(ids.len());
                let id = &ids[pick];
                let req = shared.client.get(format!("{prefix}{id}"));
                let expect = if check {
                    Expect::OneEvent(id.clone())
                } else {
                    Expect::Status
                };
                (req, expect)
            }
            Work::List { urls } => {
                pick = rng.below(urls.len());
                let url = &urls[pick];
                let expect = if check {
                    Expect::EventList
                } else {
                    Expect::Status
                };
                (shared.client.get(url.as_str()), expect)
            }
        };
        let sent_at = Instant::now();
        let mut transport_error = false;
        let outcome = match request.send().await {
            Ok(resp) => {
                let status = resp.status();
                match resp.bytes().await {
                    Ok(body) => check_response(status, &body, &what),
                    Err(e) => {
                        transport_error = true;
                        Err(format!("reading response body: {}", error_chain(&e)))
                    }
                }
            }
            Err(e) => {
                // A refused or dropped connection fails in microseconds; do
                // not let a dead server turn the workers into a busy loop.
                transport_error = true;
                Err(format!("sending request: {}", error_chain(&e)))
            }
        };
        let done = Instant::now();
        result.last_completion = Some(done);
        match outcome {
            Ok(id) => {
                if done >= shared.measure_from {
                    result
                        .latencies_us
                        .push(done.duration_since(sent_at).as_micros() as u64);
                }
                if let Some(id) = id {
                    result.created_ids.push(id);
                }
            }
            Err(msg) => {
                result.errors += 1;
                if result.first_error.is_none() {
                    let label = match &shared.work {
                        Work::Create { url, .. } => format!("POST {url}"),
                        Work::Get { prefix, ids } => format!("GET {prefix}{}", ids[pick]),
                        Work::List { urls } => format!("GET {}", urls[pick]),
                    };
                    result.first_error = Some((sent_at, format!("{label}: {msg}")));
                }
                if transport_error {
                    tokio::time::sleep(TRANSPORT_ERROR_PAUSE).await;
                }
            }
        }
    }
    result
}

enum Expect {
    Status,
    CreatedId,
    OneEvent(String),
    EventList,
}

/// `Ok(Some(id))` for a successful create, `Ok(None)` for other successes,
/// `Err(description)` for anything that is not a well-formed success.
fn check_response(
    status: StatusCode,
    body: &[u8],
    expect: &Expect,
) -> Result<Option<String>, String> {
    if status != StatusCode::OK {
        return Err(format!("HTTP {status}: {}", snippet(body)));
    }
    if let Expect::Status = expect {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        format!(
            "HTTP 200 with a body that is not JSON ({e}): {}",
            snippet(body)
        )
    })?;
    let data = value.get("data");
    let bad = |what: &str| format!("HTTP 200 but {what}: {}", snippet(body));
    match expect {
        Expect::Status => Ok(None),
        Expect::CreatedId => match data.and_then(Value::as_str) {
            Some(id) if !id.is_empty() => Ok(Some(id.to_owned())),
            _ => Err(bad("\"data\" is not an id string")),
        },
        Expect::OneEvent(id) => match data.and_then(Value::as_array).map(Vec::as_slice) {
            Some([event]) if event.get("id").and_then(Value::as_str) == Some(id.as_str()) => {
                Ok(None)
            }
            _ => Err(bad(&format!("\"data\" is not [the event {id}]"))),
        },
        Expect::EventList => match data.and_then(Value::as_array) {
            Some(events) if events.len() <= 100 => Ok(None),
            _ => Err(bad("\"data\" is not an array of at most 100 events")),
        },
    }
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.chars().count() > MAX_SAMPLE_CHARS {
        let cut: String = text.chars().take(MAX_SAMPLE_CHARS).collect();
        format!("{cut}…")
    } else if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        text.to_owned()
    }
}

/// An error and its sources, "outer: inner: innermost".
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        source = s.source();
    }
    out
}

/// Latency percentile (nearest rank) of a sorted sample, in µs.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// A small xorshift generator; good enough to spread requests over ids.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 50.0), Some(50));
        assert_eq!(percentile(&v, 99.0), Some(99));
        assert_eq!(percentile(&v, 100.0), Some(100));
        assert_eq!(percentile(&[7], 95.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn checks_bodies() {
        let ok = StatusCode::OK;
        assert_eq!(
            check_response(ok, br#"{"data":"01ABC","errors":[]}"#, &Expect::CreatedId),
            Ok(Some("01ABC".to_owned()))
        );
        assert!(check_response(ok, br#"{"data":[]}"#, &Expect::OneEvent("x".into())).is_err());
        assert!(
            check_response(
                ok,
                br#"{"data":[{"id":"x"}]}"#,
                &Expect::OneEvent("x".into())
            )
            .is_ok()
        );
        let err = check_response(StatusCode::BAD_REQUEST, b"{}", &Expect::Status).unwrap_err();
        assert!(err.starts_with("HTTP 400"), "{err}");
    }

    #[test]
    fn rng_stays_in_range() {
        let mut r = Rng::new(0);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }
}
