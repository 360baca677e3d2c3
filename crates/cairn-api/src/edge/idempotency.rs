//! `Idempotency-Key` on POST and PATCH under `/api/v1/` (docs/idempotency.md).
//!
//! A request carrying the header claims the key in the store (scoped to
//! its principal) before it runs; the response is stored under the key and
//! a retry with the same request gets it again, byte for byte, with
//! `Idempotent-Replayed: true`. The same key with another request is 409,
//! and so is a retry while the first is still running. Keys live in the
//! database, so a retry that lands on another node is answered the same.
//! Requests without the header pass through untouched (no store call).
//!
//! Once claimed, the request runs in its own task: a client that gives up
//! (or an outer timeout that drops this future) does not cancel it, and its
//! response is still stored for the retry to find.

use crate::AppState;
use crate::auth::Caller;
use crate::edge::pipeline::Next;
use crate::error::ApiError;
use axum::body::{Body, Bytes};
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use cairn_domain::Timestamp;
use cairn_store::idempotency::{Claim, IdempotencyStore, KeyState, NewClaim, StoredResponse};
use http_body_util::BodyExt;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The request header.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Set on a replayed response.
pub const REPLAYED: &str = "idempotent-replayed";
/// Longest key accepted, in bytes.
pub const MAX_KEY_BYTES: usize = 255;
/// `Retry-After` (seconds) on a 409 for a key whose request is running.
const IN_PROGRESS_RETRY_AFTER: u64 = 1;

/// Settings of the `Idempotency-Key` layer.
#[derive(Debug, Clone)]
pub struct IdempotencyConfig {
    /// Off: the header is ignored and nothing is stored.
    pub enabled: bool,
    /// How long a key (claimed or completed) is kept.
    pub ttl: Duration,
    /// Largest response body stored; larger ones are answered but not
    /// stored, and their key is released.
    pub max_response_bytes: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            ttl: Duration::from_secs(24 * 3600),
            max_response_bytes: 1024 * 1024,
        }
    }
}

fn count(outcome: &'static str) {
    metrics::counter!("cairn_idempotency_total", "outcome" => outcome).increment(1);
}

/// Routes where a key is refused: their responses carry secrets (tokens,
/// a new API key), which are stored only as hashes, never as a replayable
/// response; and GraphQL, whose answers are 200 even when a resolver failed.
fn unsupported(method: &Method, route: &str) -> bool {
    route.starts_with("/api/v1/auth/")
        || route == "/api/v1/graphql/query"
        || (method == Method::POST && route == "/api/v1/keys")
}

/// The key a header names: visible ASCII, 1 to 255 bytes. A structured-field
/// string (`"..."`, as the IETF draft writes it) without inner quotes or
/// backslashes is the same key as its content unquoted.
pub fn parse_key(value: &HeaderValue) -> Result<String, String> {
    let bytes = value.as_bytes();
    let inner = match bytes {
        [b'"', inner @ .., b'"'] if !inner.iter().any(|b| matches!(b, b'"' | b'\\')) => inner,
        _ => bytes,
    };
    if inner.is_empty() || inner.len() > MAX_KEY_BYTES {
        return Err(format!(
            "must be 1 to {MAX_KEY_BYTES} characters, not {}",
            inner.len()
        ));
    }
    if !inner.iter().all(u8::is_ascii_graphic) {
        return Err("must be visible ASCII characters only (no spaces or controls)".into());
    }
    Ok(String::from_utf8_lossy(inner).into_owned())
}

/// Hex SHA-256 over the method, route template, path and query, content
/// type and the raw body bytes, each length-prefixed so that no two
/// different requests run together into the same input.
fn fingerprint(
    method: &Method,
    route: &str,
    path_and_query: &str,
    content_type: &[u8],
    body: &[u8],
) -> String {
    let mut h = Sha256::new();
    for part in [
        method.as_str().as_bytes(),
        route.as_bytes(),
        path_and_query.as_bytes(),
        content_type,
        body,
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn now() -> Timestamp {
    crate::auth::now()
}

fn later(t: Timestamp, d: Duration) -> Timestamp {
    let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    Timestamp::from_micros(t.micros().saturating_add(micros))
}

/// Headers not stored with a response: per-connection ones, and ones an
/// outer layer sets again.
fn stored_header(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "transfer-encoding"
            | "content-length"
            | "date"
            | "set-cookie"
            | "x-request-id"
            | REPLAYED
    )
}

/// Whether a response is kept for replays: 2xx, 3xx and 4xx, except the
/// 4xx that say "try again later" (408, 429). 5xx releases the key.
fn storable(status: StatusCode) -> bool {
    status.as_u16() < 500 && !matches!(status.as_u16(), 408 | 429)
}

fn replay(stored: StoredResponse) -> Response {
    let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut res = (status, stored.body).into_response();
    let headers = res.headers_mut();
    headers.remove(header::CONTENT_TYPE);
    for (name, value) in stored.headers {
        match (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            (Ok(n), Ok(v)) => {
                headers.append(n, v);
            }
            _ => tracing::warn!(header = %name, "a stored response header is not valid; skipped"),
        }
    }
    headers.insert(
        HeaderName::from_static(REPLAYED),
        HeaderValue::from_static("true"),
    );
    res
}

/// Wrap every `POST`/`PATCH` with an `Idempotency-Key` (see the module).
pub async fn layer(state: &AppState, req: Request, next: impl Next + 'static) -> Response {
    let config = &state.config.idempotency;
    // Without the header (or switched off, or not a POST/PATCH under
    // /api/v1/): straight through, no store call, no buffering.
    if !config.enabled
        || !matches!(*req.method(), Method::POST | Method::PATCH)
        || !req.headers().contains_key(IDEMPOTENCY_KEY)
        || !req.uri().path().starts_with("/api/v1/")
    {
        return next.run(req).await;
    }
    let (Some(store), Some(raw)) = (
        state.idempotency.clone(),
        req.headers().get(IDEMPOTENCY_KEY).cloned(),
    ) else {
        return next.run(req).await;
    };
    // Unrouted requests (404, 405) are answered as they would be.
    let Some(route) = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
    else {
        return next.run(req).await;
    };
    if unsupported(req.method(), &route) {
        count("invalid");
        let e = ApiError::field(
            "Idempotency-Key",
            format!("is not supported on {} {route}", req.method()),
        );
        return if route == "/api/v1/graphql/query" {
            crate::graphql::api_error_response(e)
        } else {
            e.into_response()
        };
    }
    // Two keys name no one request: refused rather than one of them kept.
    let sent = req.headers().get_all(IDEMPOTENCY_KEY).iter().count();
    if sent > 1 {
        count("invalid");
        return ApiError::field(
            "Idempotency-Key",
            format!("was sent {sent} times; send it once"),
        )
        .into_response();
    }
    let key = match parse_key(&raw) {
        Ok(key) => key,
        Err(why) => {
            count("invalid");
            return ApiError::field("Idempotency-Key", why).into_response();
        }
    };
    // A request without a principal (a public route) has no scope to keep
    // its key in; every non-public route has one by now.
    let Some(scope) = req
        .extensions()
        .get::<Caller>()
        .map(|c| c.principal.id.clone())
    else {
        return next.run(req).await;
    };
    let (parts, body) = req.into_parts();
    let limit = state.config.max_body_bytes;
    let too_large =
        || ApiError::PayloadTooLarge(format!("body: larger than the limit of {limit} bytes"));
    if parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|len| len > limit as u64)
    {
        return too_large().into_response();
    }
    let body = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            return if std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>())
            {
                too_large().into_response()
            } else {
                ApiError::field("body", format!("could not be read: {e}")).into_response()
            };
        }
    };
    let fingerprint = fingerprint(
        &parts.method,
        &route,
        parts.uri.path_and_query().map_or("", |p| p.as_str()),
        parts
            .headers
            .get(header::CONTENT_TYPE)
            .map_or(&[][..], HeaderValue::as_bytes),
        &body,
    );
    let at = now();
    let token = ulid::Ulid::new().to_string();
    let claim = NewClaim {
        scope: scope.clone(),
        key: key.clone(),
        fingerprint: fingerprint.clone(),
        token: token.clone(),
        now: at,
        expires_at: later(at, config.ttl),
    };
    match store.claim_idempotency_key(claim).await {
        Err(e) => ApiError::from(e).into_response(),
        Ok(Claim::Existing(record)) if record.fingerprint != fingerprint => {
            count("conflict");
            ApiError::Conflict(format!(
                "Idempotency-Key: {key:?} was used with a different request (method, path or body); \
                 use a new key for a new request"
            ))
            .into_response()
        }
        Ok(Claim::Existing(record)) => match record.state {
            KeyState::InProgress => {
                count("in_progress");
                let mut res = ApiError::Conflict(format!(
                    "Idempotency-Key: the request with key {key:?} is still being processed; \
                     retry later"
                ))
                .into_response();
                res.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(IN_PROGRESS_RETRY_AFTER),
                );
                res
            }
            KeyState::Completed(stored) => {
                count("replayed");
                replay(stored)
            }
        },
        Ok(Claim::Claimed) => {
            let req = Request::from_parts(parts, Body::from(body));
            let max = config.max_response_bytes;
            let task = tokio::spawn(
                run_claimed(store, next, req, Owned { scope, key, token }, max)
                    .instrument(tracing::Span::current()),
            );
            match task.await {
                Ok(res) => res,
                Err(e) => {
                    // The handler panicked: whether it stored anything is
                    // unknown, so the claim stays until it expires.
                    ApiError::Internal(format!(
                        "an idempotent request's task failed ({e}); its key stays claimed until it expires"
                    ))
                    .into_response()
                }
            }
        }
    }
}

/// A claim this request holds.
struct Owned {
    scope: String,
    key: String,
    token: String,
}

async fn release(store: &dyn IdempotencyStore, owned: &Owned, why: &str) {
    count("released");
    match store
        .release_idempotency_key(&owned.scope, &owned.key, &owned.token)
        .await
    {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(key = %owned.key, "an idempotency claim was gone before its release")
        }
        Err(e) => tracing::warn!(
            key = %owned.key, error = %e, reason = why,
            "releasing an idempotency key failed; it stays claimed until it expires"
        ),
    }
}

/// Run the request whose key this node claimed, store its response (or
/// release the key) and answer it.
async fn run_claimed(
    store: Arc<dyn IdempotencyStore>,
    next: impl Next + 'static,
    req: Request,
    owned: Owned,
    max: usize,
) -> Response {
    let res = next.run(req).await;
    if !storable(res.status()) {
        release(store.as_ref(), &owned, "status").await;
        return res;
    }
    let (parts, mut body) = res.into_parts();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut size = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    size += data.len();
                    chunks.push(data);
                }
                if size > max {
                    // Too large to store: answer it as it comes, and let
                    // the key go (a retry runs the request again).
                    tracing::warn!(
                        key = %owned.key, limit = max,
                        "response larger than idempotency_max_response_bytes; not stored, key released"
                    );
                    release(store.as_ref(), &owned, "size").await;
                    let head =
                        futures_util::stream::iter(chunks.into_iter().map(Ok::<_, axum::Error>));
                    let rest = body.into_data_stream();
                    use futures_util::StreamExt;
                    return Response::from_parts(parts, Body::from_stream(head.chain(rest)));
                }
            }
            Some(Err(e)) => {
                release(store.as_ref(), &owned, "body").await;
                return ApiError::Internal(format!("reading a response to store it: {e}"))
                    .into_response();
            }
        }
    }
    let mut bytes = Vec::with_capacity(size);
    for c in &chunks {
        bytes.extend_from_slice(c);
    }
    let headers = parts
        .headers
        .iter()
        .filter(|(n, _)| stored_header(n))
        .filter_map(|(n, v)| match v.to_str() {
            Ok(v) => Some((n.as_str().to_owned(), v.to_owned())),
            Err(_) => {
                tracing::warn!(header = %n, "response header is not text; not stored for replays");
                None
            }
        })
        .collect();
    let stored = StoredResponse {
        status: parts.status.as_u16(),
        headers,
        body: bytes.clone(),
    };
    match store
        .complete_idempotency_key(&owned.scope, &owned.key, &owned.token, stored)
        .await
    {
        Ok(true) => count("stored"),
        Ok(false) => tracing::warn!(
            key = %owned.key,
            "the idempotency claim expired while its request ran; its response is not stored"
        ),
        Err(e) => tracing::warn!(
            key = %owned.key, error = %e,
            "storing an idempotent response failed; the key stays claimed until it expires"
        ),
    }
    Response::from_parts(parts, Body::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_visible_ascii_of_bounded_length() {
        let ok = |s: &str| parse_key(&HeaderValue::from_str(s).unwrap());
        assert_eq!(ok("abc-123").unwrap(), "abc-123");
        assert_eq!(ok("\"abc\"").unwrap(), "abc", "a structured-field string");
        assert_eq!(ok("\"a\\\"b\"").unwrap(), "\"a\\\"b\"", "kept as given");
        assert!(ok("").is_err());
        assert!(ok("\"\"").is_err());
        assert!(ok("a b").is_err());
        assert!(ok(&"k".repeat(255)).is_ok());
        assert!(ok(&"k".repeat(256)).is_err());
        let bytes = HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap();
        assert!(parse_key(&bytes).is_err());
    }

    #[test]
    fn fingerprints_separate_their_parts() {
        let a = fingerprint(&Method::POST, "/r", "/r", b"application/json", b"ab");
        let b = fingerprint(&Method::POST, "/r", "/r", b"application/jsona", b"b");
        assert_ne!(a, b);
        assert_eq!(
            a,
            fingerprint(&Method::POST, "/r", "/r", b"application/json", b"ab")
        );
        assert_eq!(a.len(), 64);
    }
}
