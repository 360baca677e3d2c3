//! Tracing and logs of the real binary (issue 6): spans exported over OTLP
//! to receivers written here (http/protobuf and gRPC) carry the caller's
//! trace, the trace id shows in the logs, and secrets never reach them.

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
use prost::Message;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::{Server, get_json, post_json};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// Spans received, with the `service.name` of their resource.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, OtlpSpan)>>>);

impl Received {
    fn take(&self, req: ExportTraceServiceRequest) {
        let mut all = self.0.lock().unwrap();
        for rs in req.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    all.push((service.clone(), span));
                }
            }
        }
    }

    fn spans(&self) -> Vec<(String, OtlpSpan)> {
        self.0.lock().unwrap().clone()
    }

    /// Wait until a span named `name` arrived (the exporter sends every
    /// 500 ms).
    async fn wait_for(&self, name: &str) -> Vec<(String, OtlpSpan)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans = self.spans();
            if spans.iter().any(|(_, s)| s.name == name) {
                return spans;
            }
            assert!(
                Instant::now() < deadline,
                "no span {name:?} exported within 20 s; got {:?}",
                spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A server exporting over OTLP/HTTP to a receiver of this test, with
/// `envs` besides `CAIRN_OTLP_ENDPOINT`. The data dir comes first so that
/// it is dropped after the server.
async fn exporting(envs: &[(&str, &str)]) -> (tempfile::TempDir, Server, Received) {
    exporting_to(Listen::Http, envs).await
}

/// How a test's collector listens.
#[derive(Clone, Copy, PartialEq)]
enum Listen {
    Http,
    /// HTTPS with the test certificate.
    Https,
    /// HTTPS, answering only clients with the test client certificate.
    HttpsClientAuth,
}

/// [`exporting`], to a receiver listening as `listen` says.
async fn exporting_to(
    listen: Listen,
    envs: &[(&str, &str)],
) -> (tempfile::TempDir, Server, Received) {
    let (endpoint, received) = http_receiver(listen).await;
    let (dir, server) = export_server(&endpoint, envs);
    (dir, server, received)
}

/// A server exporting to the collector at `endpoint`, with `envs` too.
fn export_server(endpoint: &str, envs: &[(&str, &str)]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![("CAIRN_OTLP_ENDPOINT", endpoint)];
    all.extend_from_slice(envs);
    let server = Server::start_with(dir.path(), &[], &all);
    (dir, server)
}

/// [`exporting_to`] over OTLP/gRPC.
async fn grpc_exporting(
    listen: Listen,
    envs: &[(&str, &str)],
) -> (tempfile::TempDir, Server, Received) {
    let (endpoint, received) = grpc_receiver(listen).await;
    let mut all = vec![("CAIRN_OTLP_PROTOCOL", "grpc")];
    all.extend_from_slice(envs);
    let (dir, server) = export_server(&endpoint, &all);
    (dir, server, received)
}

/// Post a traced event and check that its trace reached the collector;
/// the spans received.
async fn exports_the_callers_trace(
    server: &Server,
    received: &Received,
) -> Vec<(String, OtlpSpan)> {
    let res = traced_event(server).await;
    let tp = res.headers()["traceparent"].to_str().unwrap().to_owned();
    received.wait_for("completion.evaluate").await;
    let spans = received.wait_for("POST /api/v1/events").await;
    check_trace(&spans, &tp);
    spans
}

/// Post a traced event to a server whose exports fail, and wait (20 s at
/// most) for the log to say so; that line.
async fn failed_export_line(server: &Server) -> String {
    traced_event(server).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let log = server.log();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains("exporting spans over OTLP failed"))
        {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no failed export logged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An OTLP/HTTP receiver: `POST /v1/traces` with a protobuf body,
/// listening as `listen` says.
async fn http_receiver(listen: Listen) -> (String, Received) {
    use axum::routing::post;
    let received = Received::default();
    let r = received.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: axum::body::Bytes| {
            let r = r.clone();
            async move {
                match ExportTraceServiceRequest::decode(body.as_ref()) {
                    Ok(req) => {
                        r.take(req);
                        (
                            axum::http::StatusCode::OK,
                            [("content-type", "application/x-protobuf")],
                            ExportTraceServiceResponse::default().encode_to_vec(),
                        )
                    }
                    Err(_) => (
                        axum::http::StatusCode::BAD_REQUEST,
                        [("content-type", "text/plain")],
                        b"not an ExportTraceServiceRequest".to_vec(),
                    ),
                }
            }
        }),
    );
    let port = match listen {
        Listen::Http => None,
        Listen::Https => Some(cairn_testkit::tls::serve(app.clone()).await),
        Listen::HttpsClientAuth => Some(cairn_testkit::tls::serve_mtls(app.clone()).await),
    };
    if let Some(port) = port {
        return (format!("https://localhost:{port}"), received);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}"), received)
}

struct Grpc(Received);

#[async_trait::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.0.take(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver (the collector's `TraceService`), listening as
/// `listen` says.
async fn grpc_receiver(listen: Listen) -> (String, Received) {
    let received = Received::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let service = TraceServiceServer::new(Grpc(received.clone()));
    let mut server = tonic::transport::Server::builder();
    if listen != Listen::Http {
        let dir = cairn_testkit::tls::dir();
        let identity = tonic::transport::Identity::from_pem(
            std::fs::read(dir.join("server.pem")).unwrap(),
            std::fs::read(dir.join("server.key")).unwrap(),
        );
        let mut tls = tonic::transport::ServerTlsConfig::new().identity(identity);
        if listen == Listen::HttpsClientAuth {
            let client_ca = std::fs::read(cairn_testkit::tls::client_ca_file()).unwrap();
            tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(client_ca));
        }
        server = server.tls_config(tls).unwrap();
    }
    tokio::spawn(async move {
        let _ = server
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    let scheme = if listen == Listen::Http {
        "http"
    } else {
        "https"
    };
    (format!("{scheme}://localhost:{port}"), received)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &OtlpSpan, key: &str) -> Option<String> {
    let v = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    match v.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

/// A group named `name` of type `type_` over receiver `rid`; its id.
async fn make_group(server: &Server, name: &str, type_: &str, enabled: bool, rid: &str) -> String {
    let (status, body) = post_json(
        &server.client(),
        &server.url("/api/v1/groups"),
        &json!({"name": name, "type": type_, "version": "1", "description": "d",
                "enabled": enabled, "event_receiver_ids": [rid]}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    body["data"].as_str().unwrap().to_owned()
}

/// A receiver in a group and a request creating an event on it (so the
/// completion rule runs), sent with a known `traceparent`; the response.
async fn traced_event(server: &Server) -> reqwest::Response {
    let client = server.client();
    let (status, body) = post_json(
        &client,
        &server.url("/api/v1/receivers"),
        &json!({"name": "r", "type": "build", "version": "1", "description": "d", "schema": {}}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}\n{}", server.log());
    let rid = body["data"].as_str().unwrap().to_owned();
    make_group(server, "g", "t", true, &rid).await;
    let res = client
        .post(server.url("/api/v1/events"))
        .header("content-type", "application/json")
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .header("tracestate", "vendor=abc")
        .body(
            json!({"name": "n", "version": "1", "release": "r", "platform_id": "p",
                   "package": "k", "description": "d", "payload": {}, "success": true,
                   "event_receiver_id": rid})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res
}

/// One trace's spans among those received, with a lookup by name that
/// lists the trace's spans when the name is missing.
struct Trace<'a>(Vec<&'a OtlpSpan>);

impl<'a> Trace<'a> {
    fn of(spans: &'a [(String, OtlpSpan)], trace_id: &str) -> Self {
        Self(
            spans
                .iter()
                .map(|(_, s)| s)
                .filter(|s| hex(&s.trace_id) == trace_id)
                .collect(),
        )
    }

    fn names(&self) -> Vec<&str> {
        self.0.iter().map(|s| s.name.as_str()).collect()
    }

    fn span(&self, name: &str) -> &'a OtlpSpan {
        self.0
            .iter()
            .copied()
            .find(|s| s.name == name)
            .unwrap_or_else(|| {
                panic!(
                    "no {name:?} span in the trace; spans in it: {:?}",
                    self.names()
                )
            })
    }
}

/// The exported spans of the traced request: the HTTP server span is a
/// child of the caller's span, the store call and the completion check
/// are its descendants in the same trace, and the response names the
/// server span in its `traceparent`.
fn check_trace(spans: &[(String, OtlpSpan)], response_traceparent: &str) {
    let trace = Trace::of(spans, TRACE_ID);
    let http = trace.span("POST /api/v1/events");
    assert_eq!(hex(&http.parent_span_id), PARENT_ID, "HTTP span's parent");
    assert_eq!(http.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(attr(http, "http.route").as_deref(), Some("/api/v1/events"));
    assert_eq!(attr(http, "http.request.method").as_deref(), Some("POST"));
    assert_eq!(
        attr(http, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert!(attr(http, "request_id").is_some(), "request id attribute");
    for log_only in ["trace_id", "span_id"] {
        assert_eq!(
            attr(http, log_only),
            None,
            "the span's own ids are not repeated as attributes"
        );
    }
    assert_eq!(http.trace_state, "vendor=abc", "tracestate carried");
    for s in &trace.0 {
        assert!(
            s.start_time_unix_nano > 0 && s.end_time_unix_nano >= s.start_time_unix_nano,
            "{}: starts at {} and ends at {}",
            s.name,
            s.start_time_unix_nano,
            s.end_time_unix_nano
        );
    }
    assert_eq!(
        response_traceparent,
        format!("00-{TRACE_ID}-{}-01", hex(&http.span_id)),
        "the response's traceparent names the server span"
    );
    let store = trace.span("store.create_events");
    assert_eq!(
        store.parent_span_id, http.span_id,
        "store span under the HTTP span"
    );
    let completion = trace.span("completion.evaluate");
    assert_eq!(
        completion.parent_span_id, store.span_id,
        "completion under the store call"
    );
    assert_eq!(attr(completion, "completed").as_deref(), Some("true"));
}

fn service_names(spans: &[(String, OtlpSpan)]) -> Vec<String> {
    let mut names: Vec<String> = spans.iter().map(|(s, _)| s.clone()).collect();
    names.dedup();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_http_in_the_callers_trace() {
    let (_dir, server, received) = exporting(&[
        ("CAIRN_OTLP_PROTOCOL", "http/protobuf"),
        ("CAIRN_OTLP_SERVICE_NAME", "cairn-http-test"),
        ("CAIRN_SINKS", r#"[{name="mem",kind="memory"}]"#),
    ])
    .await;
    let res = traced_event(&server).await;
    let tp = res.headers()["traceparent"].to_str().unwrap().to_owned();
    received.wait_for("completion.evaluate").await;
    let spans = received.wait_for("POST /api/v1/events").await;
    check_trace(&spans, &tp);
    // Delivery: one trace per relay batch, the sink call inside it.
    let spans = received.wait_for("outbox.deliver mem").await;
    let batch = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.name == "outbox.deliver mem")
        .unwrap();
    assert!(
        batch.parent_span_id.is_empty(),
        "a batch starts its own trace"
    );
    assert_eq!(attr(batch, "sink").as_deref(), Some("mem"));
    // The batch that delivered the event's message links to the request
    // span that wrote it.
    let (server_span, deadline) = (&tp[36..52], Instant::now() + Duration::from_secs(10));
    let linked = loop {
        let linked = received.spans().into_iter().any(|(_, s)| {
            s.name == "outbox.deliver mem"
                && s.links
                    .iter()
                    .any(|l| hex(&l.trace_id) == TRACE_ID && hex(&l.span_id) == server_span)
        });
        if linked || Instant::now() > deadline {
            break linked;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        linked,
        "a delivery batch links to the writing request's span {tp}"
    );
    let spans = received.wait_for("sink.deliver").await;
    assert!(
        spans.iter().any(|(_, s)| s.name == "sink.deliver"
            && s.trace_id == batch.trace_id
            && s.parent_span_id == batch.span_id),
        "the sink call inside its batch"
    );
    assert_eq!(service_names(&spans), vec!["cairn-http-test".to_owned()]);
}

/// A get of an event reads the event from storage (a `store.event` span
/// under the server span) and its receiver from the process's receiver
/// cache: a memory hit, which makes no span. The request's log lines carry
/// the exported span's ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_https_to_a_collector_the_ca_file_trusts() {
    let ca = cairn_testkit::tls::ca_file();
    let (_dir, server, received) = exporting_to(
        Listen::Https,
        &[
            ("CAIRN_OTLP_CA_FILE", ca.to_str().unwrap()),
            ("CAIRN_OTLP_PROTOCOL", "http/protobuf"),
        ],
    )
    .await;
    exports_the_callers_trace(&server, &received).await;
    drop(server);

    // Without the CA file the system's roots decide, and they do not hold
    // the test CA: every export fails its handshake, nothing arrives, and
    // the log says why.
    let (_dir, server, untrusted) = exporting_to(Listen::Https, &[]).await;
    let line = failed_export_line(&server).await;
    assert!(line.contains("invalid peer certificate"), "{line}");
    assert!(untrusted.spans().is_empty(), "nothing was accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_traces_the_store_read_and_not_the_cached_receiver() {
    const GET_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    let (_dir, server, received) = exporting(&[
        ("CAIRN_OTLP_PROTOCOL", "http/protobuf"),
        ("CAIRN_LOG_FORMAT", "json"),
        ("RUST_LOG", "info,cairn_api=debug"),
    ])
    .await;
    let created: Value = traced_event(&server).await.json().await.unwrap();
    let id = created["data"]
        .as_str()
        .expect("the new event's id")
        .to_owned();
    let res = server
        .client()
        .get(server.url(&format!("/api/v1/events/{id}")))
        .header("traceparent", format!("00-{GET_TRACE}-{PARENT_ID}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let spans = received.wait_for("GET /api/v1/events/{id}").await;
    let trace = Trace::of(&spans, GET_TRACE);
    let (http, store) = (
        trace.span("GET /api/v1/events/{id}"),
        trace.span("store.event"),
    );
    assert_eq!(
        store.parent_span_id, http.span_id,
        "store read under the request"
    );
    assert_eq!(attr(store, "db.operation").as_deref(), Some("event"));
    // Every span of the request ends before its server span, so all of
    // them were exported by the time that one arrived.
    assert_eq!(
        trace.0.len(),
        2,
        "only the request and the store read: {:?}",
        trace.names()
    );
    let log = server.log();
    let lines = json_lines(&log);
    let mine: Vec<&Value> = lines
        .iter()
        .filter(|l| l["trace_id"] == GET_TRACE)
        .collect();
    assert!(!mine.is_empty(), "no log line of the get; log:\n{log}");
    for line in mine {
        assert_eq!(line["span_id"], hex(&http.span_id), "{line}");
        assert_eq!(request_span(line).unwrap()["trace_id"], GET_TRACE, "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_grpc_in_the_callers_trace() {
    let (_dir, server, received) = grpc_exporting(
        Listen::Http,
        &[("CAIRN_OTLP_SERVICE_NAME", "cairn-grpc-test")],
    )
    .await;
    let spans = exports_the_callers_trace(&server, &received).await;
    assert_eq!(service_names(&spans), vec!["cairn-grpc-test".to_owned()]);
}

/// A collector that asks for a client certificate gets the configured one,
/// over http/protobuf (`cairn-http`, as the webhook sink's) and gRPC
/// (tonic's TLS); without one the gRPC collector takes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_to_a_collector_that_asks_for_a_client_certificate() {
    let ca = cairn_testkit::tls::ca_file();
    let (cert, key) = cairn_testkit::tls::client_identity();
    let trust = ("CAIRN_OTLP_CA_FILE", ca.to_str().unwrap());
    let identity = [
        trust,
        ("CAIRN_OTLP_CLIENT_CERT_FILE", cert.to_str().unwrap()),
        ("CAIRN_OTLP_CLIENT_KEY_FILE", key.to_str().unwrap()),
    ];
    let mut http = vec![("CAIRN_OTLP_PROTOCOL", "http/protobuf")];
    http.extend_from_slice(&identity);
    let (_dir, server, received) = exporting_to(Listen::HttpsClientAuth, &http).await;
    exports_the_callers_trace(&server, &received).await;
    drop(server);

    let (_dir, server, received) = grpc_exporting(Listen::HttpsClientAuth, &identity).await;
    exports_the_callers_trace(&server, &received).await;
    drop(server);

    let (_dir, server, refused) = grpc_exporting(Listen::HttpsClientAuth, &[trust]).await;
    failed_export_line(&server).await;
    assert!(refused.spans().is_empty(), "nothing was accepted");
}

/// gRPC over TLS: exported to a collector whose certificate the CA file
/// trusts; without it the system's roots decide, every export fails its
/// handshake, and the log says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp_grpc_with_tls_to_a_collector_the_ca_file_trusts() {
    let ca = cairn_testkit::tls::ca_file();
    let trust = [("CAIRN_OTLP_CA_FILE", ca.to_str().unwrap())];
    let (_dir, server, received) = grpc_exporting(Listen::Https, &trust).await;
    exports_the_callers_trace(&server, &received).await;
    drop(server);

    let (_dir, server, untrusted) = grpc_exporting(Listen::Https, &[]).await;
    let line = failed_export_line(&server).await;
    assert!(line.contains("invalid peer certificate"), "{line}");
    assert!(untrusted.spans().is_empty(), "nothing was accepted");
}

/// A caller that says "not sampled" is followed: nothing of its trace is
/// exported, while a request without `traceparent` starts a sampled trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_sampling_decision_is_followed() {
    let (_dir, server, received) = exporting(&[]).await;
    let client = server.client();
    let unsampled = "0af7651916cd43dd8448eb211c80319c";
    let (tp, _) = traced(
        client.get(server.url("/api/v1/receivers")),
        &format!("00-{unsampled}-b7ad6b7169203331-00"),
    )
    .await;
    assert!(tp.ends_with("-00"), "{tp}");
    let res = client
        .get(server.url("/api/v1/groups"))
        .send()
        .await
        .unwrap();
    let fresh = res.headers()["traceparent"].to_str().unwrap().to_owned();
    let spans = received.wait_for("GET /api/v1/groups").await;
    let fresh_trace = &fresh[3..35];
    assert_ne!(fresh_trace, unsampled);
    assert!(
        spans.iter().any(|(_, s)| s.name == "GET /api/v1/groups"
            && hex(&s.trace_id) == fresh_trace
            && s.parent_span_id.is_empty()),
        "a new root span for the request without traceparent"
    );
    assert!(
        !spans.iter().any(|(_, s)| hex(&s.trace_id) == unsampled),
        "an unsampled trace was exported"
    );
}

/// With `otlp_sampling_ratio = 0` a new trace is not exported and its
/// `traceparent` says so (flags `00`), while a caller's sampled trace is
/// still followed and exported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_the_server_does_not_sample_answers_not_sampled() {
    let (_dir, server, received) = exporting(&[("CAIRN_OTLP_SAMPLING_RATIO", "0")]).await;
    let client = server.client();
    let res = client
        .get(server.url("/api/v1/receivers"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let tp = res.headers()["traceparent"].to_str().unwrap().to_owned();
    let (trace_id, _, flags) = cairn_api::edge::trace::parse_traceparent(&tp).expect("W3C");
    assert_eq!(flags, 0, "{tp}: not sampled");
    let unsampled = format!("{trace_id:032x}");
    assert_ne!(unsampled, TRACE_ID);

    let res = client
        .get(server.url("/api/v1/groups"))
        .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
        .send()
        .await
        .unwrap();
    let followed = res.headers()["traceparent"].to_str().unwrap().to_owned();
    assert!(
        followed.starts_with(&format!("00-{TRACE_ID}-")) && followed.ends_with("-01"),
        "{followed}"
    );
    // Exported after the first request's spans would have been.
    let spans = received.wait_for("GET /api/v1/groups").await;
    assert!(spans.iter().any(|(_, s)| hex(&s.trace_id) == TRACE_ID));
    assert!(
        !spans.iter().any(|(_, s)| hex(&s.trace_id) == unsampled),
        "a trace the server did not sample was exported"
    );
}

fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

/// The request span's fields on a JSON log line (the outermost span).
fn request_span(line: &Value) -> Option<&Value> {
    line["spans"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == "request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_traceparent_a_new_trace_id_is_made_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &["--log-format", "json"],
        &[("RUST_LOG", "info,cairn=debug,cairn_api=debug")],
    );
    let client = server.client();
    let res = client
        .get(server.url("/api/v1/events"))
        .header("x-request-id", "no-parent-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let tp = res.headers()["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(tp.len(), 55, "{tp}");
    let (trace, span) = (&tp[3..35], &tp[36..52]);
    assert_ne!(trace, "0".repeat(32));
    // Malformed: a new trace, never an error.
    let res = client
        .get(server.url("/api/v1/events"))
        .header("traceparent", "00-XYZ-nonsense-01")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let other = res.headers()["traceparent"].to_str().unwrap().to_owned();
    assert_ne!(&other[3..35], trace);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = server.log();
    let lines = json_lines(&log);
    let mine: Vec<&Value> = lines
        .iter()
        .filter(|l| request_span(l).is_some_and(|s| s["request_id"] == "no-parent-1"))
        .collect();
    assert!(!mine.is_empty(), "no log line of the request; log:\n{log}");
    for line in mine {
        let s = request_span(line).unwrap();
        assert_eq!(s["trace_id"], trace, "{line}");
        assert_eq!(s["span_id"], span, "{line}");
        // ...and at the top level of the line, for log pipelines.
        assert_eq!(line["trace_id"], trace, "{line}");
        assert_eq!(line["span_id"], span, "{line}");
        assert_eq!(line["request_id"], "no-parent-1", "{line}");
    }
}

/// Every kind of secret a request can carry, sent to a server logging at
/// debug level (request headers, refused payloads): none of them is in its
/// output, while the lines of those requests are, with their ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_scrubbed_from_the_logs() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &["--log-format", "json"],
        &[
            ("RUST_LOG", "info,cairn=debug,cairn_api=debug"),
            (
                "CAIRN_LOG_SCRUB_FIELDS",
                r#"["password","token","secret","ssn"]"#,
            ),
        ],
    );
    let admin_key = server.admin_key().expect("admin key").to_owned();
    let client = server.client();
    let bare = support::client();
    let password = "pw-Sup3r-Secret-9481";
    let (status, body) = post_json(
        &client,
        &server.url("/api/v1/users"),
        &json!({"name": "alice", "password": password, "roles": ["producer"]}),
    )
    .await
    .unwrap();
    assert_eq!(status, 201, "{body}");
    let res = bare
        .post(server.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .header("x-request-id", "scrub-login")
        .body(json!({"username": "alice", "password": password}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let tokens: Value = res.json().await.unwrap();
    let access = tokens["data"]["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["data"]["refresh_token"].as_str().unwrap().to_owned();
    // A wrong password, a refresh, an access token, a cookie, an API key
    // header and an unknown bearer token.
    let res = bare
        .post(server.url("/api/v1/auth/login"))
        .header("content-type", "application/json")
        .body(json!({"username": "alice", "password": "wrong-Pa55-7716"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let res = bare
        .post(server.url("/api/v1/auth/refresh"))
        .header("content-type", "application/json")
        .body(json!({"refresh_token": refresh}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = bare
        .get(server.url("/api/v1/receivers"))
        .header("authorization", format!("Bearer {access}"))
        .header("cookie", "session=cookie-Secret-5521; theme=dark")
        .header("x-api-key", "xkey-Secret-3390")
        .header("x-request-id", "scrub-headers")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = bare
        .get(server.url("/api/v1/events"))
        .header("authorization", "Bearer cairn_not-a-Real-Key-6604")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    // A refused event whose payload holds scrubbed fields.
    let (status, body) = post_json(
        &client,
        &server.url("/api/v1/receivers"),
        &json!({"name": "r", "type": "build", "version": "1", "description": "d",
                "schema": {"type": "object", "required": ["must_have"]}}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let rid = body["data"].as_str().unwrap().to_owned();
    let res = client
        .post(server.url("/api/v1/events"))
        .header("content-type", "application/json")
        .header("x-request-id", "scrub-payload")
        .body(
            json!({"name": "n", "version": "1", "release": "r", "platform_id": "p",
                   "package": "k", "description": "d", "success": true,
                   "event_receiver_id": rid,
                   "payload": {"visible": "marker-4471", "db_password": "payload-Secret-1209",
                               "nested": [{"customer_ssn": "123-45-6789"}]}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let log = server.log();
    for secret in [
        admin_key.as_str(),
        password,
        "wrong-Pa55-7716",
        access.as_str(),
        refresh.as_str(),
        "cookie-Secret-5521",
        "xkey-Secret-3390",
        "not-a-Real-Key-6604",
        "payload-Secret-1209",
        "123-45-6789",
    ] {
        assert!(!log.contains(secret), "{secret:?} is in the log:\n{log}");
    }
    let lines = json_lines(&log);
    let of = |id: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|l| request_span(l).is_some_and(|s| s["request_id"] == id))
            .collect()
    };
    for id in ["scrub-login", "scrub-headers", "scrub-payload"] {
        let mine = of(id);
        assert!(!mine.is_empty(), "no log line of request {id}; log:\n{log}");
        for line in &mine {
            let trace = request_span(line).unwrap()["trace_id"]
                .as_str()
                .unwrap_or("");
            assert_eq!(trace.len(), 32, "trace id on {line}");
        }
    }
    let headers = of("scrub-headers")
        .into_iter()
        .find(|l| l["fields"]["message"] == "request headers")
        .expect("the headers line");
    let shown = headers["fields"]["headers"].as_str().unwrap();
    assert!(
        shown.contains("[redacted]") && shown.contains("\"host\""),
        "{shown}"
    );
    let refused = of("scrub-payload")
        .into_iter()
        .find(|l| l["fields"]["message"] == "event refused: invalid input")
        .expect("the refused-payload line");
    let payload = refused["fields"]["payload"].as_str().unwrap();
    assert!(payload.contains("marker-4471"), "{payload}");
    assert!(payload.contains("[redacted]"), "{payload}");
}

/// The same trace on the PostgreSQL store (its event writers run each
/// request's completion checks inside that request's span); skipped,
/// saying so, without `CAIRN_TEST_DATABASE_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_in_the_callers_trace_on_postgres() {
    let Some(server_url) = std::env::var("CAIRN_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        eprintln!("skipping: CAIRN_TEST_DATABASE_URL is unset");
        return;
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let name = format!("cairn_obs_{}_{nanos}", std::process::id());
    cairn_store::postgres::create_database(&server_url, &name)
        .await
        .unwrap();
    let url = cairn_store::postgres::database_url(&server_url, &name).unwrap();
    let (endpoint, received) = http_receiver(Listen::Http).await;
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(
        dir.path(),
        &["--database-url", &url],
        &[("CAIRN_OTLP_ENDPOINT", endpoint.as_str())],
    );
    let res = traced_event(&server).await;
    let tp = res.headers()["traceparent"].to_str().unwrap().to_owned();
    received.wait_for("completion.evaluate").await;
    let spans = received.wait_for("POST /api/v1/events").await;
    server.kill();
    if let Err(e) = cairn_store::postgres::drop_database(&server_url, &name).await {
        eprintln!("could not drop test database {name}: {e}");
    }
    check_trace(&spans, &tp);
}

/// A webhook receiver on 127.0.0.1 (`POST /hook`, answered 204) keeping
/// each call's `traceparent` header and body; its `[[sinks]]` value.
type Calls = Arc<Mutex<Vec<(Option<String>, String)>>>;

async fn webhook_receiver() -> (String, Calls) {
    use axum::routing::post;
    let calls: Calls = Arc::default();
    let kept = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: String| {
            let kept = kept.clone();
            async move {
                let tp = headers
                    .get("traceparent")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                kept.lock().unwrap().push((tp, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let sinks = format!(r#"[{{name="hook",kind="webhook",url="http://{addr}/hook",secret="s3"}}]"#);
    (sinks, calls)
}

/// A webhook delivery carries `traceparent` naming its `sink.deliver`
/// span, so the receiver can join the delivery batch's trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_deliveries_carry_the_batch_trace() {
    let (endpoint, received) = http_receiver(Listen::Http).await;
    let (sinks, calls) = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        dir.path(),
        &[],
        &[
            ("CAIRN_OTLP_ENDPOINT", endpoint.as_str()),
            ("CAIRN_SINKS", sinks.as_str()),
        ],
    );
    let (status, body) = post_json(
        &server.client(),
        &server.url("/api/v1/receivers"),
        &json!({"name": "r", "type": "t", "version": "1", "description": "d", "schema": {}}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let spans = received.wait_for("sink.deliver").await;
    let delivered = calls.lock().unwrap().clone();
    assert!(!delivered.is_empty(), "no webhook call");
    let tp = delivered[0]
        .0
        .clone()
        .expect("a traceparent on the webhook call");
    assert_eq!(tp.len(), 55, "{tp}");
    let (trace, parent) = (&tp[3..35], &tp[36..52]);
    assert!(
        spans.iter().any(|(_, s)| s.name == "sink.deliver"
            && hex(&s.trace_id) == trace
            && hex(&s.span_id) == parent),
        "the webhook's traceparent names the sink.deliver span: {tp}"
    );
}

/// Send `req` with this `traceparent`; it must succeed and answer with the
/// server span's `traceparent` in the same trace.
async fn traced(req: reqwest::RequestBuilder, sent: &str) -> (String, reqwest::Response) {
    let res = req.header("traceparent", sent).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let answered = res.headers()["traceparent"].to_str().unwrap().to_owned();
    assert_eq!(
        answered.get(..36),
        sent.get(..36),
        "{answered}, sent {sent}"
    );
    (answered, res)
}

/// The id of the one receiver `traced_event` made.
async fn of_receiver(server: &Server) -> String {
    let (status, list) = get_json(&server.client(), &server.url("/api/v1/receivers?name=r"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{list}");
    list["data"][0]["id"].as_str().unwrap().to_owned()
}

/// A delivered message carries, as its CloudEvents `traceparent`
/// attribute, the server span of the request whose write caused it: the
/// event's message and the completion message that event caused, in the
/// caller's trace, whether written through REST or GraphQL; so do a
/// group change's message and the completions that change finds, and the
/// messages of receiver and group creations. No exporter is configured:
/// trace context alone gives the ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivered_messages_carry_the_writing_requests_traceparent() {
    let (sinks, calls) = webhook_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[], &[("CAIRN_SINKS", sinks.as_str())]);
    let res = traced_event(&server).await;
    let answered = res
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .expect("a traceparent on the response")
        .to_owned();
    assert!(
        answered.starts_with(&format!("00-{TRACE_ID}-")) && !answered.contains(PARENT_ID),
        "the server span, in the caller's trace: {answered}"
    );
    // The same through GraphQL, in another trace, for another unit.
    const GQL_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    let rid = of_receiver(&server).await;
    let (answered_gql, res) = traced(
        server
            .client()
            .post(server.url("/api/v1/graphql/query"))
            .json(&json!({
                "query": "mutation($e: CreateEventInput!) { create_event(event: $e) }",
                "variables": {"e": {"name": "n", "version": "1", "release": "r2",
                    "platform_id": "p", "package": "k", "description": "d", "payload": "{}",
                    "success": true, "event_receiver_id": rid}}
            })),
        &format!("00-{GQL_TRACE}-{PARENT_ID}-01"),
    )
    .await;
    let body: Value = res.json().await.unwrap();
    assert!(body["data"]["create_event"].is_string(), "{body}");
    // A second group, made disabled, then enabled by a traced PATCH: the
    // change's message and the completions it finds carry that request's.
    const PATCH_TRACE: &str = "5a6b7c8d9e0f11223344556677889900";
    let g2 = make_group(&server, "g2", "t2", false, &rid).await;
    let (answered_patch, _) = traced(
        server
            .client()
            .patch(server.url(&format!("/api/v1/groups/{g2}")))
            .json(&json!({"enabled": true})),
        &format!("00-{PATCH_TRACE}-{PARENT_ID}-01"),
    )
    .await;
    // Receiver, group, two events and their completions, the second group's
    // creation and change, and its two completions.
    let deadline = Instant::now() + Duration::from_secs(20);
    let delivered = loop {
        let got: Vec<Value> = calls
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, body)| serde_json::from_str(body).ok())
            .collect();
        if got.len() >= 10 || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let of_type =
        |t: &str| -> Vec<&Value> { delivered.iter().filter(|m| m["type"] == t).collect() };
    let traces = |t: &str| -> Vec<(String, String)> {
        of_type(t)
            .iter()
            .map(|m| (m["release"].to_string(), m["traceparent"].to_string()))
            .collect()
    };
    // Per unit (release r, then r2), the traceparent of type `t`'s messages.
    let expect = |t: &str, r: &str, r2: &str| {
        let want = vec![
            ("\"r\"".to_owned(), format!("\"{r}\"")),
            ("\"r2\"".to_owned(), format!("\"{r2}\"")),
        ];
        assert_eq!(traces(t), want, "{t} messages: {delivered:#?}");
    };
    expect("build", &answered, &answered_gql); // the events'
    expect("t", &answered, &answered_gql); // the completions they caused
    expect("t2", &answered_patch, &answered_patch); // those the change found
    let event = of_type("build");
    let modified = of_type("cairn.event.receiver.group.modified");
    assert_eq!(modified.len(), 1, "{delivered:#?}");
    assert_eq!(modified[0]["traceparent"], answered_patch.as_str());
    // A request sent without `traceparent` gets a trace of the server's
    // own, which its messages name.
    for t in [
        "cairn.event.receiver.created",
        "cairn.event.receiver.group.created",
    ] {
        for m in of_type(t) {
            let tp = m["traceparent"].as_str().unwrap_or_default();
            assert!(
                tp.len() == 55 && tp.starts_with("00-") && !tp.contains(TRACE_ID),
                "{m:#}"
            );
        }
    }
    // The event as the API shows it is unchanged.
    let id = event[0]["data"]["events"][0]["id"].as_str().unwrap();
    let (status, shown) = get_json(
        &server.client(),
        &server.url(&format!("/api/v1/events/{id}")),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{shown}");
    assert!(!shown.to_string().contains("traceparent"), "{shown}");
}

/// A log level above `info`, or one naming only some targets, still keeps
/// the request span for the log: the lines logged inside a request carry
/// its ids at any level.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_lines_carry_the_request_ids_at_any_log_level() {
    // (log filter, a message logged inside the request at that filter);
    // `cairn::startup=info` keeps the line that names the bound port.
    for (filter, message) in [
        ("warn,cairn::startup=info", "fault injected"),
        ("cairn_api=debug,cairn::startup=info", "request headers"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start_with(
            dir.path(),
            &["--log-format", "json"],
            &[
                ("RUST_LOG", filter),
                ("CAIRN_FAULT_INJECTION_ENABLED", "true"),
                (
                    "CAIRN_FAULT_INJECTION",
                    r#"[{route="/api/v1/groups",probability=1.0,kind="error",status=503}]"#,
                ),
            ],
        );
        let res = server
            .client()
            .get(server.url("/api/v1/groups"))
            .header("x-request-id", "quiet-level-1")
            .header("traceparent", format!("00-{TRACE_ID}-{PARENT_ID}-01"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 503, "{filter}: the injected fault");
        let tp = res.headers()["traceparent"].to_str().unwrap().to_owned();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let log = server.log();
        let lines = json_lines(&log);
        let line = lines
            .iter()
            .find(|l| l["fields"]["message"] == message)
            .unwrap_or_else(|| panic!("{filter}: no {message:?} line; log:\n{log}"));
        assert_eq!(line["request_id"], "quiet-level-1", "{filter}: {line}");
        assert_eq!(line["trace_id"], TRACE_ID, "{filter}: {line}");
        assert_eq!(line["span_id"], &tp[36..52], "{filter}: {line}");
        if filter.starts_with("warn") {
            assert!(
                lines
                    .iter()
                    .all(|l| l["level"] != "INFO" || l["target"] == "cairn::startup"),
                "{filter}: no other info line is logged; log:\n{log}"
            );
        }
    }
}
