//! The outermost layer: a request id (`X-Request-Id`, accepted or made)
//! and the W3C Trace Context (`traceparent`, `tracestate`) of every
//! request, and the request's tracing span that carries both into every
//! log line and, with an OTLP exporter installed, becomes the HTTP server
//! span of the trace (docs/observability.md).

use crate::AppState;
use crate::edge::pipeline::Next;
use crate::metrics::RequestId;
use axum::extract::{MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use axum::response::Response;
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Instrument;
use tracing::field::Empty;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
/// Longest `tracestate` carried (the W3C limit for what must be propagated).
const MAX_TRACESTATE: usize = 512;

/// The observability settings of the API layer (`ApiConfig::observability`).
#[derive(Debug, Clone)]
pub struct ObservabilityConfig {
    /// Read `traceparent`/`tracestate`, give each request a trace id and
    /// answer with the server span's `traceparent`. Off: request ids only.
    pub trace_context: bool,
    /// Count and time requests (`cairn_http_*`) and sample the gauges read
    /// at scrape time. Off: `/metrics` still answers with what the rest of
    /// the process records.
    pub metrics: bool,
    /// Receiver types that get their own `receiver_type` label; later
    /// ones are counted as `other`.
    pub receiver_types_max: usize,
    /// What logged headers and bodies go through.
    pub scrub: std::sync::Arc<super::scrub::Scrubber>,
    /// With spans exported over OTLP: the share of new traces sampled
    /// (a caller's `traceparent` decides for its own). `None`: no export.
    pub export_ratio: Option<f64>,
}

/// The target of a request span whose trace is not exported. The
/// OpenTelemetry layer skips such spans and everything under them, so an
/// unsampled request costs it nothing (sampling in the SDK alone would
/// still build every span's data).
pub const QUIET_TARGET: &str = "cairn::quiet";

/// The target of a request span whose trace is exported.
pub const EXPORTED_TARGET: &str = "cairn::request";

/// Whether this request's spans are exported: the caller's sampled flag
/// when it sent one, else a draw at `ratio`.
fn exported(ratio: Option<f64>, parent: Option<&TraceParent>) -> bool {
    match (ratio, parent) {
        (None, _) => false,
        (Some(_), Some(p)) => p.flags & 1 == 1,
        (Some(r), None) => ((random_u64() >> 11) as f64 / (1u64 << 53) as f64) < r,
    }
}

impl Default for ObservabilityConfig {
    fn default() -> Self {
        Self {
            trace_context: true,
            metrics: true,
            receiver_types_max: 50,
            scrub: std::sync::Arc::new(super::scrub::Scrubber::default()),
            export_ratio: None,
        }
    }
}

/// An incoming `traceparent` (and the `tracestate` that came with it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
    pub tracestate: Option<String>,
}

fn hex_lower(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parse one `traceparent` value per W3C Trace Context level 1: version
/// `00` is exactly `00-<32 hex>-<16 hex>-<2 hex>`; a higher version (not
/// `ff`) may append `-...` after those fields, which is ignored. Hex must be
/// lower case, and neither id may be all zeros. `None` for anything else.
pub fn parse_traceparent(value: &str) -> Option<(u128, u64, u8)> {
    let bytes = value.as_bytes();
    if bytes.len() < 55 {
        return None;
    }
    let version = value.get(0..2)?;
    if !hex_lower(version) || version == "ff" {
        return None;
    }
    if version == "00" && bytes.len() != 55 {
        return None;
    }
    if bytes.len() > 55 && bytes[55] != b'-' {
        return None;
    }
    if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
        return None;
    }
    let (trace, parent, flags) = (value.get(3..35)?, value.get(36..52)?, value.get(53..55)?);
    if !(hex_lower(trace) && hex_lower(parent) && hex_lower(flags)) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?;
    let parent_id = u64::from_str_radix(parent, 16).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    if trace_id == 0 || parent_id == 0 {
        return None;
    }
    Some((trace_id, parent_id, flags))
}

/// The request's trace context: exactly one valid `traceparent` header
/// (several make it invalid), with the `tracestate` headers joined by
/// commas when not longer than 512 bytes. Anything malformed is ignored:
/// the request starts a new trace, it is never refused.
pub fn incoming(headers: &HeaderMap) -> Option<TraceParent> {
    let mut values = headers.get_all(&TRACEPARENT).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let (trace_id, parent_id, flags) = parse_traceparent(first.to_str().ok()?.trim())?;
    let states: Vec<&str> = headers
        .get_all(&TRACESTATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    let tracestate = Some(states.join(","))
        .filter(|s| !s.is_empty() && s.len() <= MAX_TRACESTATE && s.is_ascii());
    Some(TraceParent {
        trace_id,
        parent_id,
        flags,
        tracestate,
    })
}

/// A fresh random, non-zero 64-bit id, from the thread's own generator
/// (fastrand's, seeded from the process's random hash keys): trace and
/// span ids must be unpredictable enough not to collide, not secret, and
/// a request makes up to four of them.
fn random_u64() -> u64 {
    loop {
        let v = fastrand::u64(..);
        if v != 0 {
            return v;
        }
    }
}

/// A fresh random 128-bit trace id (W3C: all bits random).
fn random_u128() -> u128 {
    (u128::from(random_u64()) << 64) | u128::from(random_u64())
}

fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// The ids that identify this request in its trace.
#[derive(Debug, Clone, Copy)]
pub struct TraceIds {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

impl TraceIds {
    /// The `traceparent` naming this server's span,
    /// `00-<trace id>-<span id>-<flags>` (`None` for an all-zero id, which
    /// neither the layer nor OpenTelemetry makes).
    pub fn traceparent(&self) -> Option<cairn_domain::TraceParent> {
        cairn_domain::TraceParent::new(self.trace_id, self.span_id, self.sampled)
    }
}

tokio::task_local! {
    /// Set for the work of a request whose trace the exporter skips.
    static QUIET: bool;
}

/// Whether the request this task serves is one whose trace is not
/// exported (an exporter is installed and did not sample it). Its inner
/// spans (store calls) are then not made at all: made, each cost the
/// span registry and the exporter's filter a visit on creation, every poll
/// and close, only to be dropped. Outside a request: `false`.
pub fn quiet() -> bool {
    QUIET.try_with(|q| *q).unwrap_or(false)
}

/// Request id, trace context and the request span (see module docs).
pub async fn layer(state: &AppState, mut req: Request, next: impl Next) -> Response {
    // The id, and the value echoed: the caller's own header value, or
    // the new ULID's text made once for both.
    let given = req.headers().get(&REQUEST_ID).and_then(|v| {
        let id = v.to_str().ok().filter(|id| acceptable(id))?;
        Some((id.to_owned(), Ok(v.clone())))
    });
    let (id, echoed) = match given {
        Some(given) => given,
        None => {
            let mut text = [0u8; ulid::ULID_LEN];
            let text = ulid::Ulid::new().array_to_str(&mut text);
            (text.to_owned(), HeaderValue::from_str(text))
        }
    };
    let route = req.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map(MatchedPath::as_str);
    let method = req.method().clone();
    // Formatted only by a layer that records it (the exporter's).
    let name = SpanName(&method, route.unwrap_or("unmatched"));
    let observability = &state.config.observability;
    let parent = if observability.trace_context {
        incoming(req.headers())
    } else {
        None
    };
    let export = exported(observability.export_ratio, parent.as_ref());
    // An exporter is installed and skips this trace.
    let quiet = observability.export_ratio.is_some() && !export;
    // Unless this request's trace is exported (then the OpenTelemetry
    // layer's span context is authoritative), the ids are made here and go
    // on the span as it is made: recording them afterwards costs every
    // layer a second visit, and joining a trace through the bridge costs a
    // span the exporter never sees. A trace the exporter skips answers
    // "not sampled".
    let local = (observability.trace_context && !export).then(|| {
        let mut ids = local_ids(parent.as_ref());
        if quiet {
            ids.sampled = false;
        }
        ids
    });
    let hex = local.map(|i| (IdHex::trace(i.trace_id), IdHex::span(i.span_id)));
    macro_rules! request_span {
        ($target:expr) => {
            tracing::info_span!(
                target: $target,
                "request",
                otel.name = %name,
                otel.kind = "server",
                otel.status_code = Empty,
                http.request.method = %method,
                http.route = route.unwrap_or("unmatched"),
                url.path = %req.uri().path(),
                http.response.status_code = Empty,
                request_id = %id,
                trace_id = hex.as_ref().map(|(t, _)| t.as_str()),
                span_id = hex.as_ref().map(|(_, s)| s.as_str()),
            )
        };
    }
    let span = if export {
        request_span!(EXPORTED_TARGET)
    } else {
        request_span!(QUIET_TARGET)
    };
    let trace = match local {
        Some(ids) => Some(ids),
        None if observability.trace_context => Some(start_trace(&span, parent)),
        None => None,
    };
    // Formatted (and scrubbed) only if a layer takes the event.
    span.in_scope(|| {
        tracing::debug!(
            headers = %Scrubbed(&state.config.observability.scrub, req.headers()),
            "request headers"
        );
    });
    // A write's messages name this span; a read writes none.
    let traceparent = trace.and_then(|ids| ids.traceparent());
    let writes = !matches!(method, axum::http::Method::GET | axum::http::Method::HEAD);
    req.extensions_mut()
        .insert(RequestId(id, traceparent.filter(|_| writes)));
    // Boxed: `Instrumented` then moves a pointer, not the rest of the
    // pipeline's future (kilobytes, copied several times per request).
    let mut res = QUIET
        .scope(quiet, Box::pin(next.run(req)))
        .instrument(span.clone())
        .await;
    let status = res.status();
    if res.extensions().get::<super::fault::Dropped>().is_some() {
        // No status is sent: the connection is closed unanswered.
        span.record("otel.status_code", "error");
    } else {
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "error");
        }
    }
    if let Ok(v) = echoed {
        res.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    if let Some(tp) = traceparent
        && let Ok(v) = HeaderValue::from_bytes(tp.as_bytes())
    {
        res.headers_mut().insert(TRACEPARENT.clone(), v);
    }
    res
}

/// `<method> <route>`: the server span's name.
struct SpanName<'a>(&'a axum::http::Method, &'a str);

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0, self.1)
    }
}

/// A request's headers as the log shows them, scrubbed when formatted.
struct Scrubbed<'a>(&'a super::scrub::Scrubber, &'a HeaderMap);

impl std::fmt::Display for Scrubbed<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0.headers(self.1))
    }
}

/// For a request whose trace is exported: join the caller's trace (or
/// start one) through the OpenTelemetry layer, whose span context is
/// authoritative, and record the ids on the span so that every log line
/// inside it shows them. Should the layer have made no context, the ids
/// are made here.
fn start_trace(span: &tracing::Span, parent: Option<TraceParent>) -> TraceIds {
    if let Some(p) = &parent {
        let state = p
            .tracestate
            .as_deref()
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let remote = SpanContext::new(
            TraceId::from(p.trace_id),
            SpanId::from(p.parent_id),
            TraceFlags::new(p.flags),
            true,
            state,
        );
        // Fails (harmlessly) when no OpenTelemetry layer is installed.
        let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
    }
    let otel = span.context();
    let sc = otel.span().span_context().clone();
    let ids = if sc.is_valid() {
        TraceIds {
            trace_id: u128::from_be_bytes(sc.trace_id().to_bytes()),
            span_id: u64::from_be_bytes(sc.span_id().to_bytes()),
            sampled: sc.is_sampled(),
        }
    } else {
        local_ids(parent.as_ref())
    };
    span.record("trace_id", IdHex::trace(ids.trace_id).as_str());
    span.record("span_id", IdHex::span(ids.span_id).as_str());
    ids
}

/// Ids made without an OpenTelemetry layer: the caller's trace (and
/// sampled flag) when it sent one, else a new trace; always a new span.
fn local_ids(parent: Option<&TraceParent>) -> TraceIds {
    TraceIds {
        trace_id: parent.map_or_else(random_u128, |p| p.trace_id),
        span_id: random_u64(),
        sampled: parent.is_none_or(|p| p.flags & 1 == 1),
    }
}

/// An id as W3C writes it, in lower-case hex (32 digits for a trace id,
/// 16 for a span id), on the stack. Given to the span as text, so that the
/// log layer copies it instead of running a formatter for each field.
struct IdHex<const N: usize>([u8; N]);

impl IdHex<32> {
    fn trace(id: u128) -> Self {
        let mut out = [0u8; 32];
        cairn_domain::trace::hex_into(&mut out, &id.to_be_bytes());
        Self(out)
    }
}

impl IdHex<16> {
    fn span(id: u64) -> Self {
        let mut out = [0u8; 16];
        cairn_domain::trace::hex_into(&mut out, &id.to_be_bytes());
        Self(out)
    }
}

impl<const N: usize> IdHex<N> {
    /// Hex digits are ASCII, so this is never empty.
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_00_is_parsed() {
        let v = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(v),
            Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, 1))
        );
    }

    #[test]
    fn malformed_values_are_refused() {
        for v in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(parse_traceparent(v), None, "{v:?}");
        }
    }

    #[test]
    fn ids_are_written_as_w3c_hex() {
        let ids = TraceIds {
            trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
            span_id: 0x00f067aa0ba902b7,
            sampled: true,
        };
        let tp = ids.traceparent().unwrap().to_string();
        assert_eq!(
            tp,
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(parse_traceparent(&tp), Some((ids.trace_id, ids.span_id, 1)));
        let unsampled = TraceIds {
            trace_id: 1,
            span_id: 2,
            sampled: false,
        };
        assert_eq!(
            unsampled.traceparent().unwrap().as_str(),
            "00-00000000000000000000000000000001-0000000000000002-00"
        );
        assert_eq!(IdHex::trace(0xab).as_str(), format!("{:032x}", 0xab));
        assert_eq!(IdHex::span(u64::MAX).as_str(), "ffffffffffffffff");
    }

    #[test]
    fn a_later_version_may_append_fields() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-extra";
        assert!(parse_traceparent(v).is_some());
    }

    #[test]
    fn two_traceparent_headers_are_ignored_and_tracestate_is_joined() {
        let mut h = HeaderMap::new();
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        h.append(TRACEPARENT.clone(), HeaderValue::from_static(tp));
        h.append(TRACESTATE.clone(), HeaderValue::from_static("a=1"));
        h.append(TRACESTATE.clone(), HeaderValue::from_static("b=2"));
        let got = incoming(&h).map(|p| p.tracestate);
        assert_eq!(got, Some(Some("a=1,b=2".to_owned())));
        h.append(TRACEPARENT.clone(), HeaderValue::from_static(tp));
        assert_eq!(incoming(&h), None);
    }
}
