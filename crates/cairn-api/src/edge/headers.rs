//! Security headers on every response (`docs/edge.md` "Security
//! headers"): `X-Content-Type-Options`, `X-Frame-Options`,
//! `Referrer-Policy`, a strict `Content-Security-Policy` on HTML, `Cache-Control: no-store` on
//! credential routes, and `Strict-Transport-Security` when serving TLS.
//! A header the handler already set is kept.

use super::config::EdgeConfig;
use crate::edge::pipeline::Next;
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::Response;
use std::sync::Arc;

/// The CSP of an HTML page that is not [`PageCsp`]-marked: nothing may load.
pub const DEFAULT_HTML_CSP: &str =
    "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How long browsers keep to HTTPS once they saw it (one year).
pub const HSTS: &str = "max-age=31536000";

/// Put in a response's extensions by an HTML handler whose page needs a
/// policy of its own (the GraphQL IDE: its scripts by hash).
#[derive(Debug, Clone, Copy)]
pub struct PageCsp(pub &'static str);

/// What [`apply`] adds; built once per router.
#[derive(Debug, Clone)]
pub struct Policy {
    enabled: bool,
    hsts: bool,
}

impl Policy {
    pub fn new(config: &EdgeConfig) -> Arc<Self> {
        Arc::new(Self {
            enabled: config.security_headers,
            hsts: config.tls,
        })
    }
}

/// Routes whose answers carry secrets (tokens, new API keys) or identities.
fn carries_credentials(path: &str) -> bool {
    ["/api/v1/auth/", "/api/v1/keys", "/api/v1/users"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// The middleware (with `security_headers = false` it only passes through).
pub async fn apply(policy: &Policy, req: Request, next: impl Next) -> Response {
    if !policy.enabled {
        return next.run(req).await;
    }
    let credentials = carries_credentials(req.uri().path());
    let mut res = next.run(req).await;
    let page_csp = res.extensions().get::<PageCsp>().map(|c| c.0);
    let html = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            let v = v.trim_start().as_bytes();
            v.len() >= 9 && v[..9].eq_ignore_ascii_case(b"text/html")
        });
    let headers = res.headers_mut();
    let mut set = |name: HeaderName, value: HeaderValue| {
        headers.entry(name).or_insert(value);
    };
    set(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    set(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    set(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if html {
        set(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(page_csp.unwrap_or(DEFAULT_HTML_CSP)),
        );
    }
    if credentials {
        set(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if policy.hsts {
        set(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static(HSTS),
        );
    }
    res
}
