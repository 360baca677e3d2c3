//! The GraphQL IDE: GraphiQL with every asset compiled into the binary
//! (assets/graphiql/README.md says where each file comes from), so it
//! works with no internet access.

use crate::error::ApiError;
use crate::extract::PathArgs;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

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

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>Cairn GraphQL</title>
  <style>body { margin: 0; height: 100vh; } #graphiql { height: 100vh; }</style>
  <link rel="stylesheet" href="/api/v1/graphql/assets/graphiql.min.css">
</head>
<body>
  <div id="graphiql">Loading the GraphQL IDE…</div>
  <script src="/api/v1/graphql/assets/react.production.min.js"></script>
  <script src="/api/v1/graphql/assets/react-dom.production.min.js"></script>
  <script src="/api/v1/graphql/assets/graphiql.min.js"></script>
  <script>
    const ws = (location.protocol === "https:" ? "wss://" : "ws://") + location.host;
    const fetcher = GraphiQL.createFetcher({
      url: location.origin + "/api/v1/graphql/query",
      subscriptionUrl: ws + "/api/v1/graphql/query",
    });
    ReactDOM.createRoot(document.getElementById("graphiql")).render(
      React.createElement(GraphiQL, { fetcher: fetcher, defaultEditorToolsVisibility: true })
    );
  </script>
</body>
</html>
"#;

pub async fn page() -> Response {
    let mut res = PAGE.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
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
