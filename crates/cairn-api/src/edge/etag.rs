//! `ETag` and `If-None-Match` on `GET`/`HEAD /api/v1/...` (`docs/edge.md`
//! "Conditional GET"). The validator is weak, `W/"<hash>"`, from SHA-256
//! of the JSON body as the handler produced it (before compression, which
//! sits outside this layer), so it is the same whatever encoding was
//! negotiated. A matching `If-None-Match` (a list, or `*`; weak comparison,
//! RFC 9110 section 13.1.2) turns a 200 into a 304 with the `ETag` and no
//! body. Only 200 JSON responses get one; WebSocket upgrades never.
//!
//! A 304 carries the `Vary` the 200 would have (RFC 9110 section 15.4.5):
//! the handler's is copied here, and the 304 is marked [`NotModified`]
//! with the length of the body it stands for, so that the compression
//! stage (outside this one) adds the `Vary: accept-encoding` it gives a
//! body that long.

use crate::edge::pipeline::Next;
use crate::error::ApiError;
use axum::body::{Body, Bytes, HttpBody as _};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http_body_util::BodyExt as _;
use sha2::{Digest, Sha256};

/// In the extensions of a 304 made here: the length of the 200's body it
/// replaces.
#[derive(Debug, Clone, Copy)]
pub struct NotModified {
    pub body_len: u64,
}

/// The middleware; `State(false)` only passes through.
pub async fn conditional(enabled: bool, mut req: Request, next: impl Next) -> Response {
    let head = req.method() == Method::HEAD;
    if !enabled
        || !(head || req.method() == Method::GET)
        || !req.uri().path().starts_with("/api/v1/")
        || req.headers().contains_key(header::UPGRADE)
    {
        return next.run(req).await;
    }
    let if_none_match = req.headers().get(header::IF_NONE_MATCH).cloned();
    // axum answers HEAD by running the GET handler and dropping the body
    // at the innermost route: ask for GET so there is a body to hash; the
    // outer route drops it again for HEAD.
    if head {
        *req.method_mut() = Method::GET;
    }
    let res = next.run(req).await;
    if res.status() != StatusCode::OK
        || res.headers().contains_key(header::ETAG)
        || !is_json(res.headers())
    {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let bytes = match whole(body).await {
        Ok(b) => b,
        Err(e) => {
            return ApiError::Internal(format!("reading a response body for its ETag: {e}"))
                .into_response();
        }
    };
    let digest = Sha256::digest(&bytes);
    // `W/"` + 22 characters of base64 (128 bits) + `"`, on the stack.
    let mut tag = [0u8; 26];
    tag[..3].copy_from_slice(b"W/\"");
    tag[25] = b'"';
    let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode_slice(&digest[..16], &mut tag[3..25]);
    let (Ok(22), Ok(tag)) = (encoded, std::str::from_utf8(&tag)) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    let Ok(value) = HeaderValue::from_str(tag) else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    if let Some(condition) = if_none_match
        && matches(&condition, tag)
    {
        let mut not_modified = StatusCode::NOT_MODIFIED.into_response();
        not_modified.extensions_mut().insert(NotModified {
            body_len: bytes.len() as u64,
        });
        let headers = not_modified.headers_mut();
        headers.insert(header::ETAG, value);
        for name in [
            header::CACHE_CONTROL,
            header::CONTENT_LOCATION,
            header::DATE,
            header::EXPIRES,
            header::VARY,
        ] {
            for v in parts.headers.get_all(&name) {
                headers.append(name.clone(), v.clone());
            }
        }
        return not_modified;
    }
    parts.headers.insert(header::ETAG, value);
    Response::from_parts(parts, Body::from(bytes))
}

/// The body's bytes. A handler's JSON is one frame, taken as it is; a
/// body of several frames is collected (trailers, which JSON answers do
/// not have, are dropped as `axum::body::to_bytes` drops them).
async fn whole(mut body: Body) -> Result<Bytes, axum::Error> {
    let first = match body.frame().await {
        None => return Ok(Bytes::new()),
        Some(frame) => frame?.into_data().unwrap_or_default(),
    };
    if body.is_end_stream() {
        return Ok(first);
    }
    let rest = body.collect().await?.to_bytes();
    let mut all = Vec::with_capacity(first.len() + rest.len());
    all.extend_from_slice(&first);
    all.extend_from_slice(&rest);
    Ok(Bytes::from(all))
}

fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    // What every handler here sets, compared as it is.
    if value.as_bytes() == b"application/json" {
        return true;
    }
    value.to_str().ok().is_some_and(|v| {
        let essence = v.split(';').next().unwrap_or("").trim();
        essence.eq_ignore_ascii_case("application/json")
    })
}

/// Does `If-None-Match` match `tag`? `*` matches any current
/// representation; otherwise any listed entity-tag equal to `tag` once both
/// drop their `W/` (weak comparison).
fn matches(condition: &HeaderValue, tag: &str) -> bool {
    let Ok(condition) = condition.to_str() else {
        return false;
    };
    fn opaque(t: &str) -> &str {
        t.trim().trim_start_matches("W/")
    }
    let ours = opaque(tag);
    condition.split(',').any(|candidate| {
        let candidate = candidate.trim();
        candidate == "*" || opaque(candidate) == ours
    })
}

#[cfg(test)]
mod tests {
    use super::{is_json, matches};
    use axum::http::{HeaderMap, HeaderValue, header};

    #[tokio::test]
    async fn a_body_is_read_whole_in_one_frame_or_many() {
        use super::whole;
        use axum::body::{Body, Bytes};
        assert_eq!(whole(Body::from("{\"a\":1}")).await.unwrap(), "{\"a\":1}");
        assert_eq!(whole(Body::empty()).await.unwrap(), Bytes::new());
        let frames = futures_util::stream::iter(
            ["{\"a\":", "[1,", "2]}"].map(|s| Ok::<_, std::io::Error>(Bytes::from(s))),
        );
        assert_eq!(
            whole(Body::from_stream(frames)).await.unwrap(),
            "{\"a\":[1,2]}"
        );
        let failing =
            futures_util::stream::iter([Ok(Bytes::from("{")), Err(std::io::Error::other("gone"))]);
        assert!(whole(Body::from_stream(failing)).await.is_err());
    }

    #[test]
    fn json_is_recognised_with_or_without_parameters() {
        let typed = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(v));
            h
        };
        for yes in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            " application/json ;q=1",
        ] {
            assert!(is_json(&typed(yes)), "{yes}");
        }
        for no in [
            "text/plain",
            "application/jsonx",
            "application/problem+json",
            "",
        ] {
            assert!(!is_json(&typed(no)), "{no}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let tag = "W/\"abc\"";
        for yes in [
            "W/\"abc\"",
            "\"abc\"",
            "*",
            "\"x\", W/\"abc\"",
            " \"y\" ,\"abc\" ",
        ] {
            assert!(matches(&HeaderValue::from_static(yes), tag), "{yes}");
        }
        for no in ["\"abd\"", "W/\"ab\"", "abc", "\"\"", ""] {
            assert!(!matches(&HeaderValue::from_static(no), tag), "{no}");
        }
    }
}
