//! CORS (`docs/edge.md` "CORS"): closed unless `cors_allowed_origins`
//! lists origins. Closed, no response carries CORS headers and a preflight
//! (`OPTIONS`) is answered like any other unsupported method (405), so a
//! browser refuses the cross-origin request. Open, tower-http's
//! `CorsLayer` answers preflights and marks responses for listed origins
//! only; any other origin gets no `Access-Control-Allow-Origin`.
//!
//! Every request that is not a preflight gets the headers tower-http gives
//! it from [`Cors::mark`], without building tower-http's per-request
//! state (a clone of the whole layer, its origin list included, and a
//! header map): their values are the ones tower-http itself produced for
//! a probe request when the router was built, so the two cannot differ
//! (a test compares them).

use super::config::EdgeConfig;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::Response;
use futures_util::FutureExt;
use tower::{Layer, ServiceExt};
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

/// Open CORS: tower-http's layer for preflights, and for every other
/// request the headers that layer adds, made once.
pub struct Cors {
    /// Answers `OPTIONS` (preflights).
    pub preflight: CorsLayer,
    origins: Vec<HeaderValue>,
    /// `Vary`, appended to every response.
    vary: HeaderValue,
    /// `Access-Control-Expose-Headers`, on every response.
    expose: HeaderValue,
}

impl Cors {
    /// `None` when no origin is listed (CORS closed).
    pub fn new(config: &EdgeConfig) -> Option<Self> {
        let (preflight, origins) = layer(config)?;
        // What tower-http adds to a listed origin's GET answer.
        let mut probe = Request::new(Body::empty());
        probe
            .headers_mut()
            .insert(header::ORIGIN, origins[0].clone());
        let ok = tower::service_fn(|_: Request| async {
            Ok::<_, std::convert::Infallible>(Response::new(Body::empty()))
        });
        let marked = preflight.layer(ok).oneshot(probe).now_or_never();
        let headers = match marked {
            Some(Ok(res)) => res.into_parts().0.headers,
            _ => HeaderMap::new(),
        };
        let (Some(vary), Some(expose)) = (
            headers.get(header::VARY).cloned(),
            headers.get(header::ACCESS_CONTROL_EXPOSE_HEADERS).cloned(),
        ) else {
            tracing::error!("CORS: tower-http's layer added no Vary or expose list to a probe");
            return None;
        };
        Some(Self {
            preflight,
            origins,
            vary,
            expose,
        })
    }

    /// The origin to allow for this request, if it names a listed one.
    pub fn allowed(&self, request: &HeaderMap) -> Option<HeaderValue> {
        request
            .get(header::ORIGIN)
            .filter(|o| self.origins.contains(o))
            .cloned()
    }

    /// Mark the answer to a request that is not a preflight, as tower-http
    /// does: `Vary` appended to what the handler set, the expose list, and
    /// the request's origin when it is listed ([`Cors::allowed`]).
    pub fn mark(&self, allowed: Option<HeaderValue>, response: &mut HeaderMap) {
        response.append(header::VARY, self.vary.clone());
        response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, self.expose.clone());
        if let Some(origin) = allowed {
            response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        }
    }
}

/// tower-http's layer and the origins it allows: `None` when no origin is
/// listed (CORS closed).
fn layer(config: &EdgeConfig) -> Option<(CorsLayer, Vec<HeaderValue>)> {
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
    Some((
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.clone()))
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
        origins,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The response headers tower-http's own layer gives `req`.
    fn by_tower_http(layer: &CorsLayer, req: Request) -> HeaderMap {
        let inner = tower::service_fn(|_: Request| async {
            let mut res = Response::new(Body::empty());
            res.headers_mut()
                .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            Ok::<_, std::convert::Infallible>(res)
        });
        match layer.layer(inner).oneshot(req).now_or_never() {
            Some(Ok(res)) => res.into_parts().0.headers,
            _ => panic!("tower-http's CORS layer did not answer at once"),
        }
    }

    #[test]
    fn answers_are_marked_exactly_as_tower_http_marks_them() {
        let config = EdgeConfig {
            cors_allowed_origins: vec![
                "https://app.example.com".into(),
                "http://localhost:3000".into(),
            ],
            ..EdgeConfig::default()
        };
        let cors = Cors::new(&config).expect("open");
        let cases: [(Method, Option<&str>); 5] = [
            (Method::GET, Some("https://app.example.com")),
            (Method::POST, Some("http://localhost:3000")),
            (Method::GET, Some("https://evil.example.com")),
            (Method::DELETE, None),
            (Method::PATCH, Some("https://app.example.com:443")),
        ];
        for (method, origin) in cases {
            let req = || {
                let mut req = Request::new(Body::empty());
                *req.method_mut() = method.clone();
                if let Some(o) = origin {
                    req.headers_mut()
                        .insert(header::ORIGIN, HeaderValue::from_static(o));
                }
                req
            };
            let expected = by_tower_http(&cors.preflight, req());
            let mut ours = HeaderMap::new();
            ours.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
            cors.mark(cors.allowed(req().headers()), &mut ours);
            assert_eq!(ours, expected, "{method} from {origin:?}");
            assert_eq!(
                ours.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN),
                matches!(
                    origin,
                    Some("https://app.example.com" | "http://localhost:3000")
                ),
                "{method} from {origin:?}"
            );
        }
    }

    #[test]
    fn no_listed_origin_is_closed() {
        assert!(Cors::new(&EdgeConfig::default()).is_none());
    }

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
