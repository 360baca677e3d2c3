//! The HTTP edge seen by a client: security headers (JSON and HTML, the
//! GraphQL IDE's CSP hashes), CORS closed and open, compression by
//! negotiation, ETag / If-None-Match, and 413 (docs/edge.md).

use crate::helpers::*;
use base64::Engine;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::Read;

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|v| v.to_str().expect("an ASCII header"))
}

/// A client that never decodes bodies and sends the app's key.
fn raw_client(app: &TestApp) -> reqwest::Client {
    let mut headers = HeaderMap::new();
    if let Some(key) = &app.admin_key {
        headers.insert(
            "authorization",
            format!("Bearer {key}").parse().expect("a header value"),
        );
    }
    reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .no_brotli()
        .no_zstd()
        .no_deflate()
        .default_headers(headers)
        .build()
        .expect("an HTTP client")
}

fn assert_security_headers(headers: &HeaderMap, what: &str) {
    assert_eq!(
        header(headers, "x-content-type-options"),
        Some("nosniff"),
        "{what}"
    );
    assert_eq!(header(headers, "x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(
        header(headers, "referrer-policy"),
        Some("no-referrer"),
        "{what}"
    );
    assert_eq!(
        header(headers, "strict-transport-security"),
        None,
        "{what}: no HSTS over plain HTTP"
    );
}

/// `'sha256-...'` of an inline element's text.
fn csp_hash(text: &str) -> String {
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// The text between `open` and the next `close`.
fn between<'a>(page: &'a str, open: &str, close: &str) -> &'a str {
    let start = page
        .find(open)
        .unwrap_or_else(|| panic!("{open} in the page"))
        + open.len();
    let len = page[start..]
        .find(close)
        .unwrap_or_else(|| panic!("{close} after {open}"));
    &page[start..start + len]
}

#[tokio::test]
async fn every_response_carries_security_headers_and_html_a_strict_csp() {
    let app = spawn_app().await;
    let client = raw_client(&app);
    for path in [
        "/healthz/liveness",
        "/api/v1/receivers",
        "/api/v1/no-such-route",
        "/metrics",
    ] {
        let res = client.get(app.url(path)).send().await.expect("request");
        assert_security_headers(res.headers(), path);
        assert_eq!(
            header(res.headers(), "content-security-policy"),
            None,
            "{path}: CSP only on HTML"
        );
    }
    // An unauthenticated refusal gets them too.
    let res = new_client()
        .get(app.url("/api/v1/receivers"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_security_headers(res.headers(), "401");

    // Responses carrying credentials are not to be stored.
    let res = client
        .get(app.url("/api/v1/auth/whoami"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(res.headers(), "cache-control"), Some("no-store"));

    // The GraphQL IDE: its CSP allows exactly its own assets and its one
    // inline script and style, by hash.
    let res = client
        .get(app.url("/api/v1/graphql"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert!(
        header(res.headers(), "content-type")
            .unwrap_or("")
            .starts_with("text/html")
    );
    assert_security_headers(res.headers(), "IDE");
    let csp = header(res.headers(), "content-security-policy")
        .expect("the IDE page has a CSP")
        .to_owned();
    let page = res.text().await.expect("the page");
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    assert!(directives.contains(&"default-src 'none'"), "{csp}");
    assert!(directives.contains(&"frame-ancestors 'none'"), "{csp}");
    assert!(directives.contains(&"base-uri 'none'"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && !csp.contains("unsafe-eval"),
        "{csp}"
    );
    assert!(!csp.contains('*'), "no wildcard sources: {csp}");
    let script = between(&page, "<script>", "</script>");
    let style = between(&page, "<style>", "</style>");
    let script_src = directives
        .iter()
        .find(|d| d.starts_with("script-src "))
        .expect("a script-src");
    assert!(
        script_src.contains(&csp_hash(script)),
        "the inline script's hash is allowed: {script_src}"
    );
    assert_eq!(
        page.matches("<script>").count(),
        1,
        "one inline script, the hashed one"
    );
    let style_src = directives
        .iter()
        .find(|d| d.starts_with("style-src "))
        .expect("a style-src");
    assert!(style_src.contains(&csp_hash(style)), "{style_src}");
    // Every script the page loads is same-origin.
    for src in page.split("<script src=\"").skip(1) {
        let src = &src[..src.find('"').expect("closing quote")];
        assert!(src.starts_with("/api/v1/graphql/assets/"), "{src}");
        let asset = client.get(app.url(src)).send().await.expect("asset");
        assert_eq!(asset.status(), StatusCode::OK, "{src}");
    }
}

#[tokio::test]
async fn security_headers_can_be_switched_off() {
    let app = spawn_app_with(|s| s.security_headers = false).await;
    let res = raw_client(&app)
        .get(app.url("/api/v1/graphql"))
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    for name in [
        "x-content-type-options",
        "x-frame-options",
        "referrer-policy",
        "content-security-policy",
    ] {
        assert_eq!(header(res.headers(), name), None, "{name}");
    }
}

#[tokio::test]
async fn cors_is_closed_by_default() {
    let app = spawn_app().await;
    let client = raw_client(&app);
    let res = client
        .get(app.url("/api/v1/receivers"))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(res.headers(), "access-control-allow-origin"), None);
    let preflight = new_client()
        .request(Method::OPTIONS, app.url("/api/v1/events"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .expect("preflight");
    assert!(
        !preflight.status().is_success(),
        "a preflight is refused: {}",
        preflight.status()
    );
    for name in [
        "access-control-allow-origin",
        "access-control-allow-methods",
        "access-control-allow-headers",
    ] {
        assert_eq!(header(preflight.headers(), name), None, "{name}");
    }
}

#[tokio::test]
async fn cors_opens_for_listed_origins_only() {
    let allowed = "https://app.example.com";
    let app = spawn_app_with(|s| {
        s.cors_allowed_origins = vec![allowed.to_owned(), "http://localhost:3000".to_owned()];
        s.cors_max_age_secs = 120;
    })
    .await;
    let client = raw_client(&app);
    let res = client
        .get(app.url("/api/v1/receivers"))
        .header("origin", allowed)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(
        header(res.headers(), "access-control-allow-origin"),
        Some(allowed)
    );
    let exposed = header(res.headers(), "access-control-expose-headers")
        .expect("exposed headers")
        .to_ascii_lowercase();
    for name in ["x-request-id", "etag", "retry-after", "ratelimit-remaining"] {
        assert!(exposed.contains(name), "{name} in {exposed}");
    }
    assert!(
        header(res.headers(), "vary")
            .unwrap_or("")
            .to_ascii_lowercase()
            .contains("origin"),
        "responses vary by Origin"
    );

    let preflight = new_client()
        .request(Method::OPTIONS, app.url("/api/v1/events"))
        .header("origin", allowed)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type,idempotency-key",
        )
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        header(preflight.headers(), "access-control-allow-origin"),
        Some(allowed)
    );
    let methods = header(preflight.headers(), "access-control-allow-methods").expect("methods");
    assert!(
        methods.contains("POST") && methods.contains("PATCH"),
        "{methods}"
    );
    let headers = header(preflight.headers(), "access-control-allow-headers")
        .expect("headers")
        .to_ascii_lowercase();
    for name in [
        "authorization",
        "content-type",
        "idempotency-key",
        "x-request-id",
        "traceparent",
    ] {
        assert!(headers.contains(name), "{name} in {headers}");
    }
    assert_eq!(
        header(preflight.headers(), "access-control-max-age"),
        Some("120")
    );
    assert_security_headers(preflight.headers(), "preflight");

    // Any other origin gets nothing that would let a browser read.
    for other in [
        "https://evil.example.com",
        "https://app.example.com.evil.io",
    ] {
        let res = client
            .get(app.url("/api/v1/receivers"))
            .header("origin", other)
            .send()
            .await
            .expect("request");
        assert_eq!(
            header(res.headers(), "access-control-allow-origin"),
            None,
            "{other}"
        );
        let preflight = new_client()
            .request(Method::OPTIONS, app.url("/api/v1/events"))
            .header("origin", other)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .expect("preflight");
        assert_eq!(
            header(preflight.headers(), "access-control-allow-origin"),
            None,
            "{other}"
        );
    }
}

/// Enough receivers that the list is well over the compression minimum.
async fn big_list(app: &TestApp) -> String {
    for i in 0..12 {
        let res = app
            .post_receiver(&receiver_body(
                &format!("compressible-{i}"),
                json!({"type": "object"}),
            ))
            .await;
        id_of(&res);
    }
    "/api/v1/receivers?limit=100".to_owned()
}

fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match encoding {
        "gzip" => {
            flate2::read::GzDecoder::new(bytes)
                .read_to_end(&mut out)
                .expect("valid gzip");
        }
        "br" => {
            brotli::Decompressor::new(bytes, 4096)
                .read_to_end(&mut out)
                .expect("valid brotli");
        }
        "zstd" => {
            out = zstd::stream::decode_all(bytes).expect("valid zstd");
        }
        other => panic!("unexpected encoding {other}"),
    }
    out
}

#[tokio::test]
async fn responses_are_compressed_as_negotiated() {
    let app = spawn_app().await;
    let path = big_list(&app).await;
    let client = raw_client(&app);
    let plain = client.get(app.url(&path)).send().await.expect("request");
    assert_eq!(plain.status(), StatusCode::OK);
    assert_eq!(
        header(plain.headers(), "content-encoding"),
        None,
        "identity when not asked"
    );
    let identity: Value =
        serde_json::from_slice(&plain.bytes().await.expect("body")).expect("JSON");
    assert!(identity.to_string().len() > 1024, "the list is big enough");

    for (accept, expected) in [
        ("gzip", "gzip"),
        ("br", "br"),
        ("zstd", "zstd"),
        ("gzip;q=0.5, br;q=1.0", "br"),
        ("br;q=0.1, zstd;q=0.9, gzip;q=0.5", "zstd"),
        ("br;q=0, gzip", "gzip"),
        // `*` is every coding not named (RFC 9110 section 12.5.3).
        ("*", "zstd"),
        ("zstd;q=0, *;q=0.5", "br"),
        ("gzip, *;q=0.1", "gzip"),
    ] {
        let res = client
            .get(app.url(&path))
            .header("accept-encoding", accept)
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::OK, "{accept}");
        assert_eq!(
            header(res.headers(), "content-encoding"),
            Some(expected),
            "{accept}"
        );
        assert!(
            header(res.headers(), "vary")
                .unwrap_or("")
                .to_ascii_lowercase()
                .contains("accept-encoding"),
            "{accept}: Vary: Accept-Encoding"
        );
        let body = res.bytes().await.expect("body");
        let decoded: Value = serde_json::from_slice(&decode(expected, &body)).expect("JSON");
        assert_eq!(decoded, identity, "{accept}: the same document");
        assert!(body.len() < identity.to_string().len(), "{accept}: smaller");
    }
    for accept in [
        "identity",
        "gzip;q=0",
        "compress",
        "*;q=0",
        "zstd;q=0, br;q=0, gzip;q=0, *",
    ] {
        let res = client
            .get(app.url(&path))
            .header("accept-encoding", accept)
            .send()
            .await
            .expect("request");
        assert_eq!(header(res.headers(), "content-encoding"), None, "{accept}");
    }
    // Tiny bodies are not worth it: sent as they are, and (as tower-http
    // does for a body below its size predicate) without `Vary`.
    let res = client
        .get(app.url("/healthz/liveness"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .expect("request");
    assert_eq!(header(res.headers(), "content-encoding"), None);
    assert_eq!(header(res.headers(), "vary"), None);
    let tiny = res.bytes().await.expect("body");
    assert!(
        !tiny.is_empty() && tiny.len() < 1024,
        "{} bytes",
        tiny.len()
    );
}

#[tokio::test]
async fn compression_can_be_switched_off() {
    let app = spawn_app_with(|s| s.compression = false).await;
    let path = big_list(&app).await;
    let res = raw_client(&app)
        .get(app.url(&path))
        .header("accept-encoding", "gzip, br, zstd")
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(header(res.headers(), "content-encoding"), None);
    serde_json::from_slice::<Value>(&res.bytes().await.expect("body")).expect("plain JSON");
}

async fn get_with(
    client: &reqwest::Client,
    method: Method,
    url: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = client.request(method, url);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.bytes().await.expect("body").to_vec())
}

#[tokio::test]
async fn etag_gives_304_until_the_resource_changes() {
    let app = spawn_app().await;
    let client = raw_client(&app);
    let id = app.create_receiver().await;
    let one = app.url(&format!("/api/v1/receivers/{id}"));
    let (status, headers, body) = get_with(&client, Method::GET, &one, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let tag = header(&headers, "etag").expect("an ETag").to_owned();
    assert!(tag.starts_with("W/\"") && tag.ends_with('"'), "weak: {tag}");
    assert!(!body.is_empty());

    for condition in [tag.as_str(), "*", &format!("\"other\", {tag}"), &tag[2..]] {
        let (status, headers, body) =
            get_with(&client, Method::GET, &one, &[("if-none-match", condition)]).await;
        assert_eq!(status, StatusCode::NOT_MODIFIED, "{condition}");
        assert_eq!(header(&headers, "etag"), Some(tag.as_str()), "{condition}");
        assert!(body.is_empty(), "{condition}: a 304 has no body");
    }
    let (status, _, body) = get_with(
        &client,
        Method::GET,
        &one,
        &[("if-none-match", "W/\"stale\"")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!body.is_empty());

    // The validator is the same whatever the encoding.
    let list = app.url("/api/v1/receivers?limit=100");
    for i in 0..12 {
        id_of(
            &app.post_receiver(&receiver_body(&format!("r{i}"), json!({})))
                .await,
        );
    }
    let (_, plain, _) = get_with(&client, Method::GET, &list, &[]).await;
    let (_, gzip, _) = get_with(&client, Method::GET, &list, &[("accept-encoding", "gzip")]).await;
    assert_eq!(header(&gzip, "content-encoding"), Some("gzip"));
    let list_tag = header(&plain, "etag").expect("list ETag").to_owned();
    assert_eq!(header(&gzip, "etag"), Some(list_tag.as_str()));
    let (status, not_modified, _) = get_with(
        &client,
        Method::GET,
        &list,
        &[("if-none-match", &list_tag), ("accept-encoding", "br")],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    // The 304 varies as the 200 does (a cache takes the 304's Vary): the
    // list is long enough to be compressed, the single receiver is not.
    let varies = |headers: &HeaderMap| {
        headers
            .get_all("vary")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|v| v.trim().to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    assert!(varies(&plain).contains(&"accept-encoding".to_owned()));
    assert_eq!(
        varies(&not_modified),
        varies(&plain),
        "304 and 200 vary alike"
    );
    let (status, small, _) = get_with(
        &client,
        Method::GET,
        &one,
        &[("if-none-match", tag.as_str())],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert_eq!(
        varies(&small),
        varies(&headers),
        "a small body varies by nothing"
    );
    assert!(!varies(&small).contains(&"accept-encoding".to_owned()));

    // HEAD: the same validator, and 304 too.
    let (status, headers, body) = get_with(&client, Method::HEAD, &list, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.is_empty());
    assert_eq!(header(&headers, "etag"), Some(list_tag.as_str()));
    let (status, _, _) = get_with(
        &client,
        Method::HEAD,
        &list,
        &[("if-none-match", &list_tag)],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);

    // A change: the old validator no longer matches.
    app.create_receiver().await;
    let (status, headers, body) =
        get_with(&client, Method::GET, &list, &[("if-none-match", &list_tag)]).await;
    assert_eq!(status, StatusCode::OK, "changed resource");
    let new_tag = header(&headers, "etag").expect("a new ETag");
    assert_ne!(new_tag, list_tag);
    assert!(!body.is_empty());

    // No validators on writes, errors or non-API routes.
    let (status, headers, _) = app
        .send_raw(
            Method::POST,
            "/api/v1/receivers",
            Some("application/json"),
            receiver_body("w", json!({})).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "etag"), None, "POST");
    let (status, headers, _) = get_with(
        &client,
        Method::GET,
        &app.url(&format!("/api/v1/receivers/{UNKNOWN_ID}")),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(header(&headers, "etag"), None, "404");
    let (_, headers, _) = get_with(&client, Method::GET, &app.url("/metrics"), &[]).await;
    assert_eq!(header(&headers, "etag"), None, "/metrics");
}

#[tokio::test]
async fn etags_can_be_switched_off() {
    let app = spawn_app_with(|s| s.etag = false).await;
    let (status, headers, _) = get_with(
        &raw_client(&app),
        Method::GET,
        &app.url("/api/v1/receivers"),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "etag"), None);
}

#[tokio::test]
async fn an_oversized_body_is_413_with_the_envelope_and_headers() {
    let app = spawn_app_with(|s| s.max_body_bytes = 2048).await;
    let receiver = app.create_receiver().await;
    let mut body = event_body(&receiver, &Unit::new("big"), true);
    body["payload"] = json!({ "blob": "x".repeat(4096) });
    let (status, headers, text) = app
        .send_raw(
            Method::POST,
            "/api/v1/events",
            Some("application/json"),
            body.to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert_security_headers(&headers, "413");
    let errs = assert_envelope_error(&parse_body(&text));
    assert_has_error(&errs, "body: ");
}
