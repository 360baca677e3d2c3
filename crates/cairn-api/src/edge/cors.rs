//! CORS (`docs/edge.md` "CORS"): closed unless `cors_allowed_origins`
//! lists origins. Closed, no response carries CORS headers and a preflight
//! (`OPTIONS`) is answered like any other unsupported method (405), so a
//! browser refuses the cross-origin request. Open, tower-http's
//! `CorsLayer` answers preflights and marks responses for listed origins
//! only; any other origin gets no `Access-Control-Allow-Origin`.

use super::config::EdgeConfig;
use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers a browser may send cross-origin.
const ALLOWED_HEADERS: &[&str] = &[
    "authorization",
    "content-type",
    "idempotency-key",
    "x-request-id",
    "traceparent",
    "tracestate",
    "if-none-match",
];

/// Response headers a cross-origin script may read.
const EXPOSED_HEADERS: &[&str] = &[
    "x-request-id",
    "etag",
    "retry-after",
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "location",
];

/// Check one configured origin: `scheme://host[:port]`, `http` or
/// `https`, nothing after the authority (no path, no trailing slash), no
/// wildcard. The error says why.
pub fn check_origin(origin: &str) -> Result<(), String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("{origin:?} must start with http:// or https://"))?;
    if rest.is_empty() {
        return Err(format!("{origin:?} has no host"));
    }
    if rest.contains(['/', '?', '#', '*', '@']) || rest.bytes().any(|b| !b.is_ascii_graphic()) {
        return Err(format!(
            "{origin:?} must be exactly scheme://host[:port] (no path, trailing slash, \
             wildcard or user)"
        ));
    }
    if let Some((_, port)) = rest.rsplit_once(':')
        && !rest.ends_with(']')
        && port.parse::<u16>().is_err()
    {
        return Err(format!("{origin:?} has a bad port"));
    }
    HeaderValue::from_str(origin).map_err(|_| format!("{origin:?} is not a valid header value"))?;
    Ok(())
}

/// The layer: `None` when no origin is listed (CORS closed).
pub fn layer(config: &EdgeConfig) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = config
        .cors_allowed_origins
        .iter()
        .filter_map(|o| match HeaderValue::from_str(o) {
            Ok(v) => Some(v),
            Err(_) => {
                tracing::warn!(origin = %o, "ignoring a CORS origin that is not a header value");
                None
            }
        })
        .collect();
    if origins.is_empty() {
        return None;
    }
    let names = |list: &[&'static str]| -> Vec<HeaderName> {
        list.iter().map(|h| HeaderName::from_static(h)).collect()
    };
    let mut allowed = names(ALLOWED_HEADERS);
    allowed.push(header::ACCEPT);
    Some(
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins))
            .allow_methods([
                Method::GET,
                Method::HEAD,
                Method::POST,
                Method::PATCH,
                Method::DELETE,
            ])
            .allow_headers(allowed)
            .expose_headers(names(EXPOSED_HEADERS))
            .max_age(config.cors_max_age),
    )
}

#[cfg(test)]
mod tests {
    use super::check_origin;

    #[test]
    fn origins_must_be_exact() {
        for ok in [
            "https://app.example.com",
            "http://localhost:3000",
            "https://[::1]:8443",
        ] {
            assert!(check_origin(ok).is_ok(), "{ok}");
        }
        for bad in [
            "*",
            "app.example.com",
            "https://app.example.com/",
            "https://*.example.com",
            "https://a.example.com/path",
            "https://",
            "https://h:port",
            "ftp://h",
        ] {
            assert!(check_origin(bad).is_err(), "{bad}");
        }
    }
}
