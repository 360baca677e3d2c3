//! Shared helpers of the authentication tests (`auth_*` modules): make
//! users, keys and grants through the admin API, log in, read the audit
//! log, send requests with any credentials, and take JWTs apart.

use crate::helpers::{Response, TestApp, client_with, data, parse_body};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

/// The password every test user gets.
pub const PASSWORD: &str = "correct horse battery";

/// The built-in roles, in the order the matrices list them.
pub const ROLES: [&str; 4] = ["admin", "maintainer", "producer", "reader"];

/// A status, the headers and the parsed body of one answer.
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// Send a request with `client` (its default headers carry the
/// credentials, if any); a body is sent as JSON.
pub async fn send_as(
    client: &reqwest::Client,
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<&Value>,
) -> Answer {
    send_with(client, app, method, path, body, &[]).await
}

/// [`send_as`] with extra headers.
pub async fn send_with(
    client: &reqwest::Client,
    app: &TestApp,
    method: Method,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = client.request(method, app.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let res = req.send().await.expect("request failed");
    let status = res.status();
    let headers = res.headers().clone();
    let text = res.text().await.expect("failed to read the body");
    let body = if text.starts_with('{') || text.starts_with('[') {
        parse_body(&text)
    } else {
        Value::String(text)
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// GET with a bearer token.
pub async fn get_as(token: &str, app: &TestApp, path: &str) -> Answer {
    send_as(&client_with(Some(token)), app, Method::GET, path, None).await
}

/// POST JSON with a bearer token.
pub async fn post_as(token: &str, app: &TestApp, path: &str, body: &Value) -> Answer {
    send_as(
        &client_with(Some(token)),
        app,
        Method::POST,
        path,
        Some(body),
    )
    .await
}

/// A 401 with the `WWW-Authenticate: Bearer` challenge.
#[track_caller]
pub fn assert_unauthorized(a: &Answer, what: &str) {
    assert_eq!(
        a.status,
        StatusCode::UNAUTHORIZED,
        "{what}: expected 401, body {}",
        a.body
    );
    let challenge = a
        .headers
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: 401 without WWW-Authenticate"))
        .to_str()
        .unwrap();
    assert!(challenge.starts_with("Bearer"), "{what}: {challenge}");
    assert!(
        a.body["data"].is_null(),
        "{what}: nothing served: {}",
        a.body
    );
}

/// The `data` of a success envelope: 200, or 201 for a create.
#[track_caller]
pub fn created(res: &Response) -> &Value {
    let (status, body) = res;
    assert!(
        *status == StatusCode::CREATED || *status == StatusCode::OK,
        "expected 200/201, got {status}: {body}"
    );
    assert_eq!(body["errors"], json!([]), "{body}");
    &body["data"]
}

/// A new API key with these roles, made by the admin; `(id, key)`.
pub async fn create_key(app: &TestApp, roles: &[&str]) -> (String, String) {
    create_key_with(app, json!({"name": "test key", "roles": roles})).await
}

/// A new API key from this body; `(id, key)`.
pub async fn create_key_with(app: &TestApp, body: Value) -> (String, String) {
    let res = app.post("/api/v1/keys", &body).await;
    let d = created(&res);
    (
        d["id"].as_str().expect("key id").to_owned(),
        d["key"].as_str().expect("the key itself").to_owned(),
    )
}

/// A new user with these roles and [`PASSWORD`], made by the admin.
pub async fn create_user(app: &TestApp, name: &str, roles: &[&str]) {
    let res = app
        .post(
            "/api/v1/users",
            &json!({"name": name, "password": PASSWORD, "roles": roles}),
        )
        .await;
    assert_eq!(created(&res)["name"], json!(name));
}

/// POST /api/v1/auth/login without credentials.
pub async fn login_raw(app: &TestApp, name: &str, password: &str) -> Answer {
    send_with(
        &crate::helpers::new_client(),
        app,
        Method::POST,
        "/api/v1/auth/login",
        Some(&json!({"username": name, "password": password})),
        &[],
    )
    .await
}

/// Log in with [`PASSWORD`]; the token pair.
pub async fn login(app: &TestApp, name: &str) -> Value {
    let a = login_raw(app, name, PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "login of {name}: {}", a.body);
    a.body["data"].clone()
}

/// The access token of a fresh login.
pub async fn access_token(app: &TestApp, name: &str) -> String {
    login(app, name).await["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// POST /api/v1/auth/refresh without credentials.
pub async fn refresh_raw(app: &TestApp, refresh_token: &str) -> Answer {
    send_as(
        &crate::helpers::new_client(),
        app,
        Method::POST,
        "/api/v1/auth/refresh",
        Some(&json!({"refresh_token": refresh_token})),
    )
    .await
}

/// Grant `permissions` on a receiver to a principal, as the admin; the
/// grant id.
pub async fn grant_receiver(
    app: &TestApp,
    principal: &str,
    receiver_id: &str,
    permissions: &[&str],
) -> String {
    let res = app
        .post(
            "/api/v1/grants",
            &json!({"principal": principal, "receiver_id": receiver_id, "permissions": permissions}),
        )
        .await;
    created(&res)["id"].as_str().expect("grant id").to_owned()
}

/// Audit entries (newest first) matching a query such as `action=auth.login`.
pub async fn audit(app: &TestApp, query: &str) -> Vec<Value> {
    let res = app.get(&format!("/api/v1/audit?limit=1000&{query}")).await;
    data(&res).as_array().expect("audit entries").clone()
}

/// Whether an audit entry with this action and target exists.
pub async fn audited(app: &TestApp, action: &str, target: &str) -> bool {
    audit(app, &format!("action={action}"))
        .await
        .iter()
        .any(|e| e["target"] == json!(target))
}

/// How many events are stored.
pub async fn event_count(app: &TestApp) -> usize {
    app.list_all("/api/v1/events?limit=1000").await.len()
}

/// How many receivers are stored.
pub async fn receiver_count(app: &TestApp) -> usize {
    app.list_all("/api/v1/receivers?limit=1000").await.len()
}

/// POST a GraphQL document with a bearer token; status and body.
pub async fn graphql_as(token: Option<&str>, app: &TestApp, query: &str) -> (StatusCode, Value) {
    let a = send_as(
        &client_with(token),
        app,
        Method::POST,
        "/api/v1/graphql/query",
        Some(&json!({ "query": query })),
    )
    .await;
    (a.status, a.body)
}

/// The `extensions.code` of every GraphQL error.
pub fn graphql_codes(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errs| {
            errs.iter()
                .map(|e| e["extensions"]["code"].as_str().unwrap_or("").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

// ---- JWTs ----------------------------------------------------------------------

/// The decoded header and payload of a JWT.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let mut part = || {
        let text = it.next().expect("a JWT has three parts");
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(text).expect("base64url")).expect("JSON")
    };
    let header = part();
    let payload = part();
    (header, payload)
}

/// base64url (no padding) of JSON.
pub fn b64_json(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// Seconds since the epoch.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// HMAC-SHA256 (RFC 2104) with the `sha2` crate.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let inner = inner.finalize();
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner);
    outer.finalize().into()
}

#[test]
fn hmac_sha256_matches_rfc_4231_case_2() {
    let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
    let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    );
}

// ---- GraphQL subscriptions over graphql-transport-ws -----------------------------

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open a graphql-transport-ws socket and send `connection_init` with this
/// payload; the socket and the server's first answer (`connection_ack`,
/// or `None` when it closed the connection instead).
pub async fn ws_open(app: &TestApp, init_payload: Option<Value>) -> (Ws, Option<Value>) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}/api/v1/graphql/query", app.addr)
        .into_client_request()
        .expect("ws request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("websocket handshake");
    let init = match init_payload {
        Some(p) => json!({"type": "connection_init", "payload": p}),
        None => json!({"type": "connection_init"}),
    };
    ws_send(&mut ws, init).await;
    let first = ws_next(&mut ws, Duration::from_secs(10)).await;
    (ws, first)
}

/// A socket authenticated with `token` in the `connection_init` payload;
/// panics unless the server acknowledges it.
pub async fn ws_connect_as(app: &TestApp, token: &str) -> Ws {
    let (ws, first) = ws_open(
        app,
        Some(json!({"Authorization": format!("Bearer {token}")})),
    )
    .await;
    let first = first.expect("the server closed the socket instead of acknowledging it");
    assert_eq!(first["type"], json!("connection_ack"), "{first}");
    ws
}

pub async fn ws_send(ws: &mut Ws, msg: Value) {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Text(msg.to_string().into()))
        .await
        .expect("ws send");
}

/// The next protocol message within `wait` (pings answered); `None` once
/// the socket is closed. Panics when nothing arrives in time.
pub async fn ws_next(ws: &mut Ws, wait: Duration) -> Option<Value> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(wait, ws.next())
            .await
            .expect("a websocket message in time");
        match msg {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("JSON message");
                if v["type"] == json!("ping") {
                    ws_send(ws, json!({"type": "pong"})).await;
                    continue;
                }
                return Some(v);
            }
            Some(Ok(_)) => continue,
        }
    }
}

pub async fn ws_subscribe(ws: &mut Ws, id: &str, query: &str) {
    ws_send(
        ws,
        json!({"id": id, "type": "subscribe", "payload": {"query": query}}),
    )
    .await;
}

/// The error codes a subscription message carries (`error` messages hold
/// the errors as payload, `next` ones in `payload.errors`).
pub fn ws_error_codes(msg: &Value) -> Vec<String> {
    let errs = if msg["type"] == json!("error") {
        msg["payload"].clone()
    } else {
        msg["payload"]["errors"].clone()
    };
    graphql_codes(&json!({ "errors": errs }))
}
