//! Logging and trace export set-up: text for people, JSON for machines,
//! always to stderr; with `otlp_endpoint` set, spans are also exported
//! over OTLP (http/protobuf or gRPC) in batches off the request path.

use crate::settings::{LogFormat, OtlpProtocol, Settings};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// tracing-subscriber's JSON lines, with the ids of the request a line
/// belongs to (`trace_id`, `span_id`, `request_id` of its `request` span)
/// copied to the top level, so a log pipeline can index them without
/// walking `spans`. Lines outside a request are written unchanged.
struct TopLevelIds<J> {
    json: J,
}

const HOISTED: &[&str] = &["trace_id", "span_id", "request_id"];

/// The request span's fields that carry its ids for log lines, as hex text
/// (`cairn_api::edge::trace`).
const LOG_IDS: [&str; 2] = ["trace_id", "span_id"];

impl<S, N, J> tracing_subscriber::fmt::FormatEvent<S, N> for TopLevelIds<J>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'w> tracing_subscriber::fmt::FormatFields<'w> + 'static,
    J: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut line = String::new();
        self.json.format_event(
            ctx,
            tracing_subscriber::fmt::format::Writer::new(&mut line),
            event,
        )?;
        writer.write_str(&hoist_ids(line))
    }
}

/// `line` (one JSON object and a newline) with [`HOISTED`] fields of its
/// `request` span added at the top level; unchanged when it has none.
fn hoist_ids(line: String) -> String {
    let Ok(serde_json::Value::Object(mut object)) =
        serde_json::from_str::<serde_json::Value>(line.trim_end())
    else {
        return line;
    };
    let ids: Vec<(String, serde_json::Value)> = object
        .get("spans")
        .and_then(|s| s.as_array())
        .and_then(|spans| spans.iter().rev().find(|s| s["name"] == "request"))
        .map(|span| {
            HOISTED
                .iter()
                .filter_map(|k| span.get(*k).map(|v| ((*k).to_owned(), v.clone())))
                .collect()
        })
        .unwrap_or_default();
    if ids.is_empty() {
        return line;
    }
    for (k, v) in ids {
        object.entry(k).or_insert(v);
    }
    match serde_json::to_string(&object) {
        Ok(mut out) => {
            out.push('\n');
            out
        }
        Err(_) => line,
    }
}

/// Span names that may be exported with no span current.
const TRACE_ROOTS: &[&str] = &["request", "outbox.deliver", "sink.deliver"];

/// What must be flushed before the process exits.
#[derive(Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Export the spans still queued (bounded by `otlp_timeout_ms`), then
    /// stop the exporter. Never blocks the runtime's worker threads.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("cairn: flushing traces at shutdown: {e}"),
            Err(e) => eprintln!("cairn: flushing traces at shutdown: {e}"),
        }
    }
}

/// Install the global subscriber. `RUST_LOG`, when set, overrides the
/// configured level. Must run inside the Tokio runtime when
/// `otlp_endpoint` is set (exports run on it).
pub fn init(settings: &Settings) -> Telemetry {
    let filter = with_request_spans(
        EnvFilter::try_from_default_env()
            .or_else(|_| EnvFilter::try_new(&settings.log_level))
            .unwrap_or_else(|_| EnvFilter::new("info")),
    );
    // Colour only for a terminal, and never when NO_COLOR is set.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let fmt: Box<dyn Layer<Registry> + Send + Sync> = match settings.log_format() {
        LogFormat::Text => fmt.fmt_fields(TextFields).with_filter(filter).boxed(),
        LogFormat::Json => fmt
            .json()
            .map_event_format(|json| TopLevelIds { json })
            .with_filter(filter)
            .boxed(),
    };
    let (provider, otel_error) = match &settings.otlp_endpoint {
        Some(endpoint) => match provider(settings, endpoint) {
            Ok(p) => (Some(p), None),
            Err(e) => (None, Some(e)),
        },
        None => (None, None),
    };
    let otel = provider.as_ref().map(|p| {
        let spans = if settings.trace_spans {
            tracing::Level::DEBUG
        } else {
            tracing::Level::INFO
        };
        // Only Cairn's own spans: never the exporter's HTTP/gRPC client
        // (that would trace the export itself), never log events; and
        // nothing of a request the edge did not sample (its span's target
        // is `QUIET_TARGET`): those never reach the exporter's machinery.
        let ours = move |meta: &tracing::Metadata<'_>| {
            meta.is_span()
                && meta.target().starts_with("cairn")
                && *meta.level() <= spans
                && meta.target() != cairn_api::edge::trace::QUIET_TARGET
        };
        let only_ours = tracing_subscriber::filter::dynamic_filter_fn(move |meta, cx| {
            if !ours(meta) {
                return false;
            }
            match cx.lookup_current() {
                Some(current) => current
                    .scope()
                    .all(|s| s.metadata().target() != cairn_api::edge::trace::QUIET_TARGET),
                // With no span current, only the spans that start a trace
                // (a request, an outbox batch) or name their parent
                // explicitly (a batch's delivery). Anything else here is
                // work of a request whose own span was not made (e.g. a
                // completion check on the writer thread of a quiet
                // request): exporting it would make an orphan trace.
                None => TRACE_ROOTS.contains(&meta.name()),
            }
        })
        // Whether a callsite can ever pass depends on its metadata alone:
        // said once per callsite, every other one (events, other crates'
        // spans, the quiet request span) is never offered to this filter
        // again, and the process's max level is the spans' level rather
        // than TRACE (a dynamic filter without a hint admits any level, so
        // every `trace!` and `debug!` anywhere was evaluated on each hit).
        .with_callsite_filter(move |meta| {
            if ours(meta) {
                tracing::subscriber::Interest::sometimes()
            } else {
                tracing::subscriber::Interest::never()
            }
        })
        .with_max_level_hint(spans);
        // Each span carries the attributes it was given and nothing per
        // span that the bridge would compute on every enter and close
        // (source location, thread, target, busy/idle times); and entering
        // a span does not make its context current (nothing here reads
        // `opentelemetry::Context::current`; spans are joined through
        // `OpenTelemetrySpanExt`). Exported spans cost less to build and
        // to send.
        NoEnterExit(
            tracing_opentelemetry::layer()
                .with_tracer(p.tracer("cairn"))
                .with_location(false)
                .with_threads(false)
                .with_target(false)
                .with_tracked_inactivity(false)
                .with_context_activation(false)
                .with_filter(only_ours),
        )
    });
    let result = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .try_init();
    if let Err(e) = result {
        eprintln!("cairn: logging was already initialised: {e}");
    }
    match (&otel_error, &settings.otlp_endpoint) {
        (Some(e), _) => {
            tracing::error!(error = %e, "OTLP trace export is off: the exporter could not be built")
        }
        (None, Some(endpoint)) => tracing::info!(
            endpoint = %endpoint,
            protocol = ?settings.otlp_protocol,
            ratio = settings.otlp_sampling_ratio,
            "exporting traces over OTLP"
        ),
        (None, None) => {}
    }
    Telemetry { provider }
}

/// The log filter, with the request span on at any level that logs
/// anything: it carries the request id and trace ids that every line
/// logged inside a request shows (docs/observability.md "Logs"). Without
/// this, a level above `info` (`warn`), or one naming only some targets
/// (`cairn_api=debug`), would drop the span and with it the ids of every
/// line under it.
fn with_request_spans(filter: EnvFilter) -> EnvFilter {
    use tracing::level_filters::LevelFilter;
    if filter.max_level_hint() == Some(LevelFilter::OFF) {
        return filter;
    }
    [
        cairn_api::edge::trace::QUIET_TARGET,
        cairn_api::edge::trace::EXPORTED_TARGET,
    ]
    .into_iter()
    .fold(filter, |filter, target| {
        match format!("{target}=info").parse() {
            Ok(directive) => filter.add_directive(directive),
            Err(_) => filter,
        }
    })
}

/// The OTLP/HTTP exporter's client: `cairn-http`'s, so an `https://`
/// collector is verified against the system's roots or `otlp_ca_file`.
/// The exporter leaves the time limit to the client.
#[derive(Clone)]
struct OtlpHttp {
    client: cairn_http::HttpClient,
    timeout: Duration,
}

impl std::fmt::Debug for OtlpHttp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtlpHttp")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The most of a collector's answer read: an `ExportTraceServiceResponse`
/// is a few bytes (a partial-success message at most).
const MAX_OTLP_ANSWER_BYTES: usize = 1 << 20;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for OtlpHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let request = http::Request::from_parts(parts, http_body_util::Full::new(body));
        let sent = self.client.send(request, MAX_OTLP_ANSWER_BYTES);
        let answer = match tokio::time::timeout(self.timeout, sent).await {
            Err(_) => Err(format!("no answer within {} ms", self.timeout.as_millis())),
            Ok(Err(e)) => Err(e),
            Ok(Ok((status, Err(e)))) => Err(format!("HTTP {status}: {e}")),
            Ok(Ok((status, Ok(body)))) => Ok((status, body)),
        };
        match answer {
            Ok((status, body)) => {
                let mut response = http::Response::new(body);
                *response.status_mut() = status;
                Ok(response)
            }
            Err(reason) => {
                if let Ok(mut last) = LAST_CLIENT_ERROR.lock() {
                    *last = Some(reason.clone());
                }
                Err(reason.into())
            }
        }
    }
}

/// TLS of the OTLP/gRPC exporter (tonic's, on rustls with ring): the
/// collector's certificate checked against the CAs of `otlp_ca_file`, or
/// else the system's roots, and the client certificate presented if set.
fn grpc_tls(
    settings: &Settings,
) -> Result<opentelemetry_otlp::tonic_types::transport::ClientTlsConfig, String> {
    use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
    let tls = match settings.otlp_ca_file.as_deref() {
        None => ClientTlsConfig::new().with_native_roots(),
        Some(file) => {
            // Checked as every component's CA file is; tonic takes the PEM.
            let pem = cairn_http::ca_pem(file).map_err(|e| format!("otlp_{e}"))?;
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem))
        }
    };
    match settings.otlp_identity().map_err(|e| format!("otlp_{e}"))? {
        None => Ok(tls),
        Some(identity) => {
            let (cert, key) = identity.pem().map_err(|e| format!("otlp_{e}"))?;
            Ok(tls.identity(Identity::from_pem(cert, key)))
        }
    }
}

/// The tracer provider: parent-based ratio sampling, one bounded batch
/// processor, the OTLP exporter run on the Tokio runtime.
fn provider(settings: &Settings, endpoint: &str) -> Result<SdkTracerProvider, String> {
    let timeout = Duration::from_millis(settings.otlp_timeout_ms);
    let exporter = match settings.otlp_protocol {
        OtlpProtocol::HttpProtobuf => {
            let base = endpoint.trim_end_matches('/');
            let url = if base.ends_with("/v1/traces") {
                base.to_owned()
            } else {
                format!("{base}/v1/traces")
            };
            let trust = match cairn_http::parse_url(&url) {
                Ok(uri) => cairn_http::Trust::for_url(&uri, settings.otlp_ca_file.as_deref()),
                Err(why) => return Err(format!("otlp_endpoint {url:?}: {why}")),
            };
            let identity = settings.otlp_identity().map_err(|e| format!("otlp_{e}"))?;
            let client = cairn_http::HttpClient::with_identity(trust, identity)
                .map_err(|e| format!("otlp: {e}"))?;
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_http_client(OtlpHttp { client, timeout })
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint(url)
                .with_timeout(timeout)
                .build()
        }
        OtlpProtocol::Grpc => {
            use opentelemetry_otlp::WithTonicConfig as _;
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.to_owned())
                .with_timeout(timeout);
            if endpoint.starts_with("https://") {
                builder.with_tls_config(grpc_tls(settings)?).build()
            } else {
                builder.build()
            }
        }
    }
    .map_err(|e| e.to_string())?;
    let handle = tokio::runtime::Handle::try_current()
        .map_err(|_| "no Tokio runtime to export on".to_owned())?;
    let pending = Arc::new(AtomicUsize::new(0));
    let exporter = OnRuntime {
        inner: Arc::new(exporter),
        handle,
        pending: pending.clone(),
    };
    let max = settings.otlp_queue_size;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(max)
                .with_max_export_batch_size(512.min(max))
                .with_scheduled_delay(Duration::from_millis(500))
                .build(),
        )
        .build();
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(settings.otlp_service_name.clone())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_span_processor(Bounded {
            inner: batch,
            pending,
            max,
        })
        .with_sampler(EdgeSampled {
            inner: Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                settings.otlp_sampling_ratio,
            ))),
        })
        .with_resource(resource)
        .build())
}

/// Requests are sampled by the edge (`edge::trace`) before any span is
/// made, so a request's root (server) span that reaches the SDK is always
/// recorded; spans under a parent follow it, and traces that start off the
/// request path (outbox deliveries) draw at the configured ratio.
#[derive(Debug, Clone)]
struct EdgeSampled {
    inner: Sampler,
}

impl opentelemetry_sdk::trace::ShouldSample for EdgeSampled {
    fn should_sample(
        &self,
        parent_context: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        span_kind: &opentelemetry::trace::SpanKind,
        attributes: &[opentelemetry::KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry_sdk::trace::SamplingResult {
        use opentelemetry::trace::TraceContextExt;
        let root = parent_context.is_none_or(|c| !c.span().span_context().is_valid());
        let sampler = if root && *span_kind == opentelemetry::trace::SpanKind::Server {
            &Sampler::AlwaysOn
        } else {
            &self.inner
        };
        sampler.should_sample(parent_context, trace_id, name, span_kind, attributes, links)
    }
}

/// Runs each export on the Tokio runtime (the SDK's batch thread has no
/// reactor for the HTTP and gRPC clients) and counts the outcome.
#[derive(Debug)]
struct OnRuntime<E> {
    inner: Arc<E>,
    handle: tokio::runtime::Handle,
    pending: Arc<AtomicUsize>,
}

impl<E: SpanExporter + 'static> SpanExporter for OnRuntime<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let inner = self.inner.clone();
        let result = match self
            .handle
            .spawn(async move { inner.export(batch).await })
            .await
        {
            Ok(r) => r,
            Err(e) => Err(OTelSdkError::InternalFailure(format!("export task: {e}"))),
        };
        let _ = self
            .pending
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |p| {
                Some(p.saturating_sub(n))
            });
        if let Err(e) = &result {
            warn_export_failed(n, e);
        }
        let outcome = if result.is_ok() { "exported" } else { "failed" };
        metrics::counter!("cairn_trace_spans_exported_total", "outcome" => outcome)
            .increment(n as u64);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// Say that exports fail, at most once a minute (each failure is counted
/// in `cairn_trace_spans_exported_total{outcome="failed"}`).
fn warn_export_failed(spans: usize, error: &OTelSdkError) {
    static LAST: std::sync::Mutex<Option<std::time::Instant>> = std::sync::Mutex::new(None);
    let now = std::time::Instant::now();
    let Ok(mut last) = LAST.lock() else {
        return;
    };
    if last.is_some_and(|t| now.duration_since(t) < Duration::from_secs(60)) {
        return;
    }
    *last = Some(now);
    // The http/protobuf exporter reports a failed request as a "network
    // error"; what the client saw (a refused connection, a certificate that
    // does not verify) is kept by `OtlpHttp`. The gRPC exporter's error
    // says it itself.
    match LAST_CLIENT_ERROR.lock().ok().and_then(|mut r| r.take()) {
        Some(reason) => tracing::warn!(
            spans,
            error = %error,
            %reason,
            "exporting spans over OTLP failed; they are dropped"
        ),
        None => tracing::warn!(
            spans,
            error = %error,
            "exporting spans over OTLP failed; they are dropped"
        ),
    }
}

/// The last reason an OTLP/HTTP request failed in `OtlpHttp` (the exporter
/// is process-wide, as this is).
static LAST_CLIENT_ERROR: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// The batch processor behind a bound of its own, so that spans dropped
/// for a full queue are counted (`cairn_trace_spans_exported_total{outcome="dropped"}`).
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    pending: Arc<AtomicUsize>,
    max: usize,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if !span.span_context.is_sampled() {
            return;
        }
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.max {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            metrics::counter!("cairn_trace_spans_exported_total", "outcome" => "dropped")
                .increment(1);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// Text-format fields as the default formatter writes them, without the
/// `otel.*` fields (span naming for the exporter; the span's name and
/// route are already on the line).
struct TextFields;

impl<'w> tracing_subscriber::fmt::FormatFields<'w> for TextFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: tracing_subscriber::fmt::format::Writer<'w>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = TextVisitor {
            writer: &mut writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct TextVisitor<'a, 'w> {
    writer: &'a mut tracing_subscriber::fmt::format::Writer<'w>,
    first: bool,
    result: std::fmt::Result,
}

impl tracing::field::Visit for TextVisitor<'_, '_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        // As they are: the message, and a request's hex ids (given as text
        // so that no formatter runs for them on every request).
        let name = field.name();
        if name == "message" || LOG_IDS.contains(&name) {
            self.write_text(field, value);
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

impl TextVisitor<'_, '_> {
    /// The separator and `name=` due before a field's value, or `None`
    /// for a field not written (`otel.*`, `log.*`, or after an error).
    fn prefix(&mut self, field: &tracing::field::Field) -> Option<(&'static str, &'static str)> {
        let name = field.name();
        if self.result.is_err() || name.starts_with("otel.") || name.starts_with("log.") {
            return None;
        }
        let sep = if self.first { "" } else { " " };
        self.first = false;
        Some((sep, if name == "message" { "" } else { name }))
    }

    fn write(&mut self, field: &tracing::field::Field, value: std::fmt::Arguments<'_>) {
        if let Some((sep, name)) = self.prefix(field) {
            self.result = if name.is_empty() {
                write!(self.writer, "{sep}{value}")
            } else {
                write!(self.writer, "{sep}{name}={value}")
            };
        }
    }

    /// As `write`, for a value written as it is (no formatter runs).
    fn write_text(&mut self, field: &tracing::field::Field, value: &str) {
        if let Some((sep, name)) = self.prefix(field) {
            let w = &mut *self.writer;
            self.result = w.write_str(sep).and_then(|()| {
                if !name.is_empty() {
                    w.write_str(name)?;
                    w.write_char('=')?;
                }
                w.write_str(value)
            });
        }
    }
}

/// Whether `values` holds nothing but [`LOG_IDS`] fields.
fn only_log_ids(values: &tracing::span::Record<'_>) -> bool {
    struct Names(bool);
    impl tracing::field::Visit for Names {
        fn record_debug(&mut self, field: &tracing::field::Field, _: &dyn std::fmt::Debug) {
            self.0 &= LOG_IDS.contains(&field.name());
        }
    }
    let mut names = Names(!values.is_empty());
    values.record(&mut names);
    names.0
}

/// A layer that is not told when a span is entered or exited.
///
/// For the OpenTelemetry layer, which neither tracks busy/idle time nor
/// activates contexts: it would only note an exit time, and a span without
/// one ends when it closes. Each call still cost a lookup of the span in
/// the registry for the layer's per-layer filter, on every poll of every
/// instrumented future. (Not for the log layer: its `EnvFilter` follows
/// entered spans for span-scoped directives such as `[request]=debug`.)
/// Everything else is passed on unchanged, `on_layer` (where a per-layer
/// filter registers itself) and `downcast_raw` (how the OpenTelemetry
/// layer's span context is found) included.
struct NoEnterExit<L>(L);

impl<S, L> Layer<S> for NoEnterExit<L>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }

    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        self.0.register_callsite(metadata)
    }

    fn enabled(
        &self,
        metadata: &tracing::Metadata<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.0.enabled(metadata, ctx)
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_new_span(attrs, id, ctx);
    }

    /// Except a record of only the log fields `trace_id` and `span_id`
    /// (the edge writes them once it knows an exported request's ids):
    /// they repeat the span's own ids, so the exporter would only build,
    /// encode and send two redundant attributes per span.
    fn on_record(
        &self,
        span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if only_log_ids(values) {
            return;
        }
        self.0.on_record(span, values, ctx);
    }

    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(
        &self,
        event: &tracing::Event<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) -> bool {
        self.0.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_event(event, ctx);
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        self.0.on_close(id, ctx);
    }

    fn on_id_change(
        &self,
        old: &tracing::span::Id,
        new: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        self.0.on_id_change(old, new, ctx);
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        self.0.max_level_hint()
    }

    unsafe fn downcast_raw(&self, id: std::any::TypeId) -> Option<*const ()> {
        if id == std::any::TypeId::of::<Self>() {
            return Some(self as *const Self as *const ());
        }
        // SAFETY: the inner layer answers for its own types, as `Layered`
        // asks each of its layers.
        unsafe { self.0.downcast_raw(id) }
    }
}

#[cfg(test)]
mod tests {
    use super::{TextFields, hoist_ids};
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    #[test]
    fn text_lines_show_ids_bare_other_text_quoted_and_no_otel_fields() {
        let out = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .without_time()
            .fmt_fields(TextFields)
            .with_writer(out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "request",
                otel.name = "GET /api/v1/events/{id}",
                http.route = "/api/v1/events/{id}",
                request_id = %"r-1",
                trace_id = "4bf92f3577b34da6a3ce929d0e0e4736",
                span_id = "00f067aa0ba902b7",
            );
            span.in_scope(|| tracing::info!(status = 200, "done"));
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains(
                "request{http.route=\"/api/v1/events/{id}\" request_id=r-1 \
                 trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7}:"
            ),
            "{text}"
        );
        assert!(text.contains("done status=200"), "{text}");
        assert!(!text.contains("otel"), "{text}");
    }

    #[test]
    fn a_request_line_gets_its_ids_at_the_top_level() {
        let line = r#"{"level":"INFO","fields":{"message":"m"},"spans":[{"name":"request","request_id":"r1","trace_id":"t1","span_id":"s1"},{"name":"store.get","x":1}]}"#;
        let out: serde_json::Value = serde_json::from_str(&hoist_ids(format!("{line}\n"))).unwrap();
        assert_eq!(out["trace_id"], "t1");
        assert_eq!(out["span_id"], "s1");
        assert_eq!(out["request_id"], "r1");
        assert_eq!(out["fields"]["message"], "m", "the rest is kept");
        assert_eq!(out["spans"][1]["name"], "store.get");
    }

    #[test]
    fn other_lines_are_written_unchanged() {
        for line in [
            "{\"level\":\"INFO\",\"fields\":{\"message\":\"listening\"}}\n",
            "{\"spans\":[{\"name\":\"outbox.deliver\"}]}\n",
            "not json\n",
        ] {
            assert_eq!(hoist_ids(line.to_owned()), line);
        }
    }
}
