//! Response compression (`docs/edge.md` "Compression"): gzip, br or zstd
//! as the client's `Accept-Encoding` prefers (q-values honoured, `q=0`
//! refuses), streamed by tower-http as the body is produced. Bodies
//! smaller than `compression_min_bytes`, event streams, images and
//! responses already encoded are sent as they are; a WebSocket upgrade
//! (101, no body) never is. `*` stands for every coding the request does
//! not name (RFC 9110 section 12.5.3), which tower-http does not read, so
//! [`wildcard`] spells it out for it.

use super::config::EdgeConfig;
use axum::http::HeaderValue;
use tower_http::compression::predicate::{And, NotForContentType, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel};

pub type When = And<And<And<SizeAbove, NotForContentType>, NotForContentType>, NotForContentType>;

/// The layer (`compression = false`: none).
pub fn layer(config: &EdgeConfig) -> Option<CompressionLayer<When>> {
    if !config.compression {
        return None;
    }
    let when = SizeAbove::new(config.compression_min_bytes)
        .and(NotForContentType::SSE)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::GRPC);
    Some(
        CompressionLayer::new()
            .gzip(true)
            .br(true)
            .zstd(true)
            .no_deflate()
            // One level for all three (tower-http takes one). Level 1 by
            // default: a streamed zstd encoder at level 4 zeroes 2 MiB of
            // match tables for every response (768 KiB at 3, 64 KiB at 1),
            // and brotli's own default (11) costs tens of milliseconds.
            .quality(CompressionLevel::Precise(i32::from(
                config.compression_level,
            )))
            .compress_when(when),
    )
}

/// The codings served here, in the server's order of preference.
const CODINGS: [&str; 3] = ["zstd", "br", "gzip"];

/// What `*` in these `Accept-Encoding` values grants, as an extra value
/// naming the served codings the values do not name, at the `*`'s q-value
/// (`zstd;q=0.5, br;q=0.5`); `None` without a `*`, with `*;q=0`, or when
/// every coding is named.
pub fn wildcard(values: &[HeaderValue]) -> Option<HeaderValue> {
    let mut star_q = None;
    let mut named = [false; CODINGS.len()];
    for item in values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let mut parts = item.split(';');
        let coding = parts.next().unwrap_or("").trim();
        if coding == "*" {
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q=")))
                .next()
                .unwrap_or("1")
                .trim();
            star_q = Some(q.to_owned());
        } else if let Some(i) = CODINGS.iter().position(|c| c.eq_ignore_ascii_case(coding)) {
            named[i] = true;
        }
    }
    let q = star_q?;
    // A malformed q-value is taken as tower-http takes one: not at all.
    let weight: f32 = q.parse().ok().filter(|w: &f32| (0.0..=1.0).contains(w))?;
    if weight == 0.0 {
        return None;
    }
    let granted: Vec<String> = CODINGS
        .iter()
        .zip(named)
        .filter(|(_, named)| !named)
        .map(|(c, _)| format!("{c};q={q}"))
        .collect();
    if granted.is_empty() {
        return None;
    }
    HeaderValue::from_str(&granted.join(", ")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(values: &[&str]) -> Option<String> {
        let values: Vec<HeaderValue> = values
            .iter()
            .map(|v| HeaderValue::from_str(v).unwrap())
            .collect();
        wildcard(&values).map(|v| v.to_str().unwrap().to_owned())
    }

    #[test]
    fn a_wildcard_grants_the_codings_not_named_at_its_weight() {
        assert_eq!(
            expand(&["*"]).as_deref(),
            Some("zstd;q=1, br;q=1, gzip;q=1")
        );
        assert_eq!(
            expand(&["gzip;q=0, *;q=0.5"]).as_deref(),
            Some("zstd;q=0.5, br;q=0.5")
        );
        assert_eq!(
            expand(&["br", "*; q=0.2"]).as_deref(),
            Some("zstd;q=0.2, gzip;q=0.2")
        );
        assert_eq!(expand(&["*;q=0"]), None);
        assert_eq!(expand(&["*;q=2"]), None);
        assert_eq!(expand(&["gzip, br"]), None);
        assert_eq!(expand(&["zstd;q=0, br;q=0, gzip;q=0, *"]), None);
    }
}
