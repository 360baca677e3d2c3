//! HTTP webhook sink: one POST per message, the CloudEvents JSON as body
//! (structured mode), signed: `X-Cairn-Timestamp` is the Unix time in
//! seconds and `X-Cairn-Signature` is `sha256=<hex HMAC-SHA256 of
//! "<timestamp>.<body>" keyed with the secret>`. Any 2xx is delivered;
//! anything else (or no answer within the timeout) is a failure.
//!
//! `https://` URLs are verified against the system's CA roots, or only
//! against the CAs of `ca_file` when it is set (a private CA). The client
//! is hyper-util's pooled one behind hyper-rustls (ring, TLS 1.2 and 1.3).

use crate::{OutboxMessage, Sink, SinkError};
use async_trait::async_trait;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

pub const TIMESTAMP_HEADER: &str = "x-cairn-timestamp";
pub const SIGNATURE_HEADER: &str = "x-cairn-signature";
/// The message id again, for receivers that deduplicate before parsing.
pub const MESSAGE_ID_HEADER: &str = "x-cairn-message-id";
pub const CONTENT_TYPE: &str = "application/cloudevents+json; charset=utf-8";

/// The most of a receiver's answer body read (and dropped) so that its
/// connection can be used again; a longer answer closes the connection.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL to POST to.
    pub url: String,
    /// HMAC key shared with the receiver.
    pub secret: String,
    /// Per-request timeout (milliseconds), connecting and the TLS handshake
    /// included.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// PEM file of the CA certificates an `https://` receiver's certificate
    /// must chain to, instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .field("timeout_ms", &self.timeout_ms)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

fn default_timeout_ms() -> u64 {
    5_000
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>.<body>").
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    let mut mac = match hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

pub struct WebhookSink {
    name: String,
    url: http::Uri,
    secret: Vec<u8>,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl WebhookSink {
    pub fn new(name: &str, config: &WebhookConfig) -> Result<Self, String> {
        let url: http::Uri = config
            .url
            .parse()
            .map_err(|e| format!("webhook url {:?}: {e}", config.url))?;
        let https = match url.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => {
                return Err(format!(
                    "webhook url {:?}: must be an http:// or https:// URL",
                    config.url
                ));
            }
        };
        if url.host().is_none_or(str::is_empty) {
            return Err(format!("webhook url {:?}: names no host", config.url));
        }
        if config.secret.is_empty() {
            return Err("webhook secret must not be empty".into());
        }
        let roots = match (&config.ca_file, https) {
            (Some(file), _) => ca_roots(file)?,
            (None, true) => system_roots()?,
            // Never used: an http:// URL makes no TLS connection.
            (None, false) => RootCertStore::empty(),
        };
        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let tls = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("webhook TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            name: name.to_owned(),
            url,
            secret: config.secret.as_bytes().to_vec(),
            timeout: Duration::from_millis(config.timeout_ms.max(1)),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    async fn post(&self, m: &OutboxMessage) -> Result<(), String> {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        let signature = signature(&self.secret, &timestamp, m.json.as_bytes());
        let mut req = http::Request::post(self.url.clone())
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(TIMESTAMP_HEADER, &timestamp)
            .header(SIGNATURE_HEADER, signature)
            .header(MESSAGE_ID_HEADER, m.id.to_string());
        if let Some(tp) = traceparent() {
            req = req.header("traceparent", tp.as_str());
        }
        let req = req
            .body(Full::new(Bytes::from(m.json.clone())))
            .map_err(|e| format!("POST {}: {e}", self.url))?;
        let exchange = async {
            let res = self
                .client
                .request(req)
                .await
                .map_err(|e| format!("POST {}: {}", self.url, with_causes(&e)))?;
            let status = res.status();
            // What the receiver says is not used; reading it lets the
            // connection serve the next message.
            let _ = Limited::new(res.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            Ok::<_, String>(status)
        };
        let status = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                format!(
                    "POST {}: no answer within {} ms",
                    self.url,
                    self.timeout.as_millis()
                )
            })??;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("POST {}: HTTP {status}", self.url))
        }
    }
}

/// The CA certificates of a PEM file, every one usable.
fn ca_roots(file: &Path) -> Result<RootCertStore, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let named = |why: String| format!("webhook ca_file {}: {why}", file.display());
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| named(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| named(e.to_string()))?;
    if certs.is_empty() {
        return Err(named("holds no certificate".into()));
    }
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| named(format!("a certificate is not a usable CA: {e}")))?;
    }
    Ok(roots)
}

/// The system's CA roots (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured);
/// certificates that do not parse are skipped, none at all is an error.
fn system_roots() -> Result<RootCertStore, String> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map(|e| format!(" ({e})"))
            .unwrap_or_default();
        return Err(format!(
            "webhook: no CA certificates found on this system for an https:// url{why}; \
             install them or set ca_file"
        ));
    }
    Ok(roots)
}

/// An error and its causes: hyper-util's own text is only "client error
/// (Connect)"; the TLS reason (an unknown issuer, a name mismatch) is a
/// cause.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

/// The W3C `traceparent` of the current span (the relay's `sink.deliver`),
/// when trace export is on: the receiver's spans then join the delivery
/// batch's trace. `None` without an OpenTelemetry layer.
fn traceparent() -> Option<cairn_domain::TraceParent> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let span = cx.span();
    let sc = span.span_context();
    // `None` for the invalid (all-zero) context a span without a layer has.
    cairn_domain::TraceParent::new(
        u128::from_be_bytes(sc.trace_id().to_bytes()),
        u64::from_be_bytes(sc.span_id().to_bytes()),
        sc.is_sampled(),
    )
}

#[async_trait]
impl Sink for WebhookSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, batch: &[OutboxMessage]) -> Result<(), SinkError> {
        for (i, m) in batch.iter().enumerate() {
            self.post(m)
                .await
                .map_err(|reason| SinkError::new(i, format!("message {}: {reason}", m.id)))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use hmac::{KeyInit, Mac};

    fn hmac_hex(key: &[u8], data: &[u8]) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
        mac.update(data);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn signs_timestamp_dot_body() {
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            super::signature(b"k", "1700000000", br#"{"id":"x"}"#),
            format!("sha256={}", hmac_hex(b"k", br#"1700000000.{"id":"x"}"#))
        );
    }
}
