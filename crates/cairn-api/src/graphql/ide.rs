//! The GraphQL IDE: GraphiQL with every asset compiled into the binary
//! (assets/graphiql/README.md says where each file comes from), so it
//! works with no internet access.

use crate::error::ApiError;
use crate::extract::PathArgs;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::sync::LazyLock;

/// (file name, content type, bytes)
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "graphiql.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql.min.js"),
    ),
    (
        "graphiql.min.css",
        "text/css; charset=utf-8",
        include_bytes!("../../assets/graphiql/graphiql.min.css"),
    ),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../assets/graphiql/react-dom.production.min.js"),
    ),
];

/// The page's one inline style sheet (allowed by its hash).
const STYLE: &str = "body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }";

/// The page's one inline script (allowed by its hash).
const SCRIPT: &str = r#"
    const ws = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
    const fetcher = GraphiQL.createFetcher({
      url: location.origin + "/api/v1/graphql/query",
      subscriptionUrl: ws + "/api/v1/graphql/query",
    });
    ReactDOM.createRoot(document.getElementById("graphiql")).render(
      React.createElement(GraphiQL, { fetcher: fetcher, defaultEditorToolsVisibility: true })
    );
  "#;

static PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Cairn GraphQL</title>
  <style>{STYLE}</style>
  <link rel="stylesheet" href="/api/v1/graphql/assets/graphiql.min.css">
</head>
<body>
  <div id="graphiql">Loading the GraphQL IDE…</div>
  <script src="/api/v1/graphql/assets/react.production.min.js"></script>
  <script src="/api/v1/graphql/assets/react-dom.production.min.js"></script>
  <script src="/api/v1/graphql/assets/graphiql.min.js"></script>
  <script>{SCRIPT}</script>
</body>
</html>
"#
    )
});

/// `'sha256-<base64>'` of an inline element's text, as CSP wants it.
fn csp_hash(text: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    format!(
        "'sha256-{}'",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(text.as_bytes()))
    )
}

/// The page's Content-Security-Policy: its own assets and its one inline
/// script and style by hash (never `'unsafe-inline'`), data: fonts and
/// images from the style sheet, requests and WebSockets to this origin
/// only, no frames, no plugins, no forms, no `<base>`.
static CSP: LazyLock<String> = LazyLock::new(|| {
    format!(
        "default-src 'none'; script-src 'self' {}; style-src 'self' {}; \
         img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        csp_hash(SCRIPT),
        csp_hash(STYLE)
    )
});

pub async fn page() -> Response {
    let mut res = PAGE.as_str().into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The security-headers layer sends it (docs/edge.md).
    res.extensions_mut()
        .insert(crate::edge::headers::PageCsp(CSP.as_str()));
    res
}

pub async fn asset(PathArgs(file): PathArgs<String>) -> Result<Response, ApiError> {
    let (_, content_type, bytes) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::NotFound(format!("no GraphQL IDE asset {file:?}")))?;
    let mut res = bytes.into_response();
    let headers = res.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    Ok(res)
}
