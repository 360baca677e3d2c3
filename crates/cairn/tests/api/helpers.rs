//! Shared harness: start an [`Application`] on a fresh store and talk to it
//! over HTTP like any client would.
//!
//! One suite, two test targets: `tests/api` runs it on the embedded store
//! (each app gets a fresh data directory), `tests/api_postgres` compiles the
//! same modules with `SUITE_STORE = "postgres"`, where each app also gets a
//! fresh database (`cairn_test_*`, dropped with the app) on the server named
//! by `CAIRN_TEST_DATABASE_URL`; with that variable unset the PostgreSQL
//! target says so and skips.

use cairn::settings::Settings;
use cairn::startup::Application;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A well-formed ULID that no test ever creates.
pub const UNKNOWN_ID: &str = "01ARZ3NDEKTSV4RRFFQ69G5FAV";

pub type Response = (StatusCode, Value);

pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    /// Kept alive for as long as the app; removed on drop.
    pub data_dir: TempDir,
    pub settings: Settings,
    /// The first-start admin API key (`<data-dir>/admin.key`), which
    /// `client` sends on every request; `None` with authentication off.
    pub admin_key: Option<String>,
    /// The app's authentication state: tests sign tokens with its real
    /// signing key to check how claims are verified.
    pub auth: std::sync::Arc<cairn_api::auth::Auth>,
    /// The app's PostgreSQL database, when the suite runs against one.
    pub database: Option<TestDatabase>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<Result<(), String>>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let data_dir = tempfile::tempdir().expect("failed to create a temporary data dir");
    let mut settings = Settings::default();
    point_at(&mut settings, &data_dir);
    let database = match test_store() {
        TestStore::Sqlite => None,
        TestStore::Postgres(server) => {
            let db = TestDatabase::create(server).await;
            settings.database_url = Some(db.url.clone());
            Some(db)
        }
    };
    configure(&mut settings);
    let (addr, shutdown, handle, auth) = start(settings.clone()).await;
    let admin_key = read_admin_key(&data_dir);
    TestApp {
        address: format!("http://{addr}"),
        addr,
        client: client_with(admin_key.as_deref()),
        admin_key,
        auth,
        data_dir,
        settings,
        database,
        shutdown: Some(shutdown),
        handle: Some(handle),
    }
}

enum TestStore {
    Sqlite,
    /// The server URL to create test databases on.
    Postgres(String),
}

/// Which store this test target runs the suite against (`SUITE_STORE` in
/// the target's `main.rs`).
fn test_store() -> TestStore {
    match crate::SUITE_STORE {
        "postgres" => match std::env::var("CAIRN_TEST_DATABASE_URL") {
            Ok(url) if !url.is_empty() => TestStore::Postgres(url),
            _ => {
                // Skip the whole target, saying why. Written straight to
                // stderr: libtest's capture would swallow eprintln! here.
                use std::io::Write;
                let _ = writeln!(
                    std::io::stderr(),
                    "skipping the API suite on PostgreSQL: CAIRN_TEST_DATABASE_URL is unset \
                     (e.g. postgres://postgres@127.0.0.1:5432/postgres; .ci/run sets it)"
                );
                std::process::exit(0);
            }
        },
        _ => TestStore::Sqlite,
    }
}

/// A database created for one test app and dropped with it.
pub struct TestDatabase {
    server: String,
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    async fn create(server: String) -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let name = format!(
            "cairn_test_{}_{nanos}_{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        cairn_store::postgres::create_database(&server, &name)
            .await
            .expect("failed to create a test database");
        let url = cairn_store::postgres::database_url(&server, &name)
            .expect("failed to build the test database URL");
        Self { server, name, url }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // Drop is synchronous and may run inside the test's runtime: use a
        // thread with a runtime of its own. FORCE closes the app's
        // connections if it is still stopping.
        let server = self.server.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(cairn_store::postgres::drop_database(&server, &name))
                .map_err(|e| e.to_string())
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("dropping test database {} panicked", self.name),
        }
    }
}

fn point_at(settings: &mut Settings, data_dir: &TempDir) {
    settings.listen = "127.0.0.1:0".parse().expect("loopback address");
    settings.data_dir = data_dir.path().to_path_buf();
}

/// The admin key the app wrote on its first start, if it did.
fn read_admin_key(data_dir: &TempDir) -> Option<String> {
    std::fs::read_to_string(data_dir.path().join("admin.key"))
        .ok()
        .map(|k| k.trim().to_owned())
}

/// A client sending no credentials.
pub fn new_client() -> reqwest::Client {
    client_with(None)
}

/// A client sending `Authorization: Bearer <token>` on every request.
pub fn client_with(token: Option<&str>) -> reqwest::Client {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {token}")
                .parse()
                .expect("a token is a valid header value"),
        );
    }
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .default_headers(headers)
        .build()
        .expect("failed to build the HTTP client")
}

async fn start(
    settings: Settings,
) -> (
    SocketAddr,
    oneshot::Sender<()>,
    JoinHandle<Result<(), String>>,
    std::sync::Arc<cairn_api::auth::Auth>,
) {
    let app = Application::build(settings)
        .await
        .expect("failed to build the application");
    let addr = app.local_addr();
    let auth = app.auth();
    let (tx, rx) = oneshot::channel::<()>();
    // Dropping the sender (e.g. when the TestApp is dropped) also stops the app.
    let shutdown = async move {
        let _ = rx.await;
    };
    let handle = tokio::spawn(async move {
        app.run_until_stopped(shutdown)
            .await
            .map_err(|e| format!("{e:?}"))
    });
    (addr, tx, handle, auth)
}

impl TestApp {
    /// The store kind the app should report: `postgres` when it runs on a
    /// test database, `sqlite` otherwise.
    pub fn expected_store(&self) -> &'static str {
        if self.database.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// Send `key` from now on (a second node on the same database has no
    /// admin key file of its own: the first node made it).
    pub fn use_key(&mut self, key: Option<String>) {
        self.client = client_with(key.as_deref());
        self.admin_key = key;
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// Stop gracefully and wait until the server has finished; panics if it
    /// reports an error or does not finish in time.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(handle) = self.handle.take() {
            let result = tokio::time::timeout(Duration::from_secs(30), handle)
                .await
                .expect("the server did not stop within 30 s of the shutdown signal")
                .expect("the server task panicked");
            result.expect("run_until_stopped returned an error");
        }
    }

    /// Stop gracefully, then start a new application on the same data dir.
    pub async fn restart(&mut self) {
        self.stop().await;
        let mut settings = self.settings.clone();
        point_at(&mut settings, &self.data_dir);
        let (addr, shutdown, handle, auth) = start(settings).await;
        self.auth = auth;
        self.addr = addr;
        self.address = format!("http://{addr}");
        self.client = client_with(self.admin_key.as_deref());
        self.shutdown = Some(shutdown);
        self.handle = Some(handle);
    }

    // ---- raw requests -------------------------------------------------------

    /// Send a request; the body, when given, is sent as JSON text with
    /// `Content-Type: application/json`.
    pub async fn send(&self, method: Method, path: &str, body: Option<&Value>) -> Response {
        let mut req = self.client.request(method, self.url(path));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let res = req.send().await.expect("request failed");
        let status = res.status();
        let text = res.text().await.expect("failed to read the body");
        (status, parse_body(&text))
    }

    /// Send any bytes with any content type; returns status, headers and text.
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        content_type: Option<&str>,
        body: impl Into<reqwest::Body>,
    ) -> (StatusCode, HeaderMap, String) {
        let mut req = self.client.request(method, self.url(path)).body(body);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let res = req.send().await.expect("request failed");
        let status = res.status();
        let headers = res.headers().clone();
        let text = res.text().await.expect("failed to read the body");
        (status, headers, text)
    }

    /// POST JSON text exactly as given; returns status and raw response text.
    pub async fn post_text(&self, path: &str, body: &str) -> (StatusCode, String) {
        let (status, _, text) = self
            .send_raw(
                Method::POST,
                path,
                Some("application/json"),
                body.to_owned(),
            )
            .await;
        (status, text)
    }

    pub async fn get_text(&self, path: &str) -> (StatusCode, String) {
        let (status, _, text) = self.send_raw(Method::GET, path, None, "").await;
        (status, text)
    }

    pub async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> Response {
        self.send(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.send(Method::DELETE, path, None).await
    }

    pub async fn post_receiver(&self, body: &Value) -> Response {
        self.post("/api/v1/receivers", body).await
    }

    pub async fn post_event(&self, body: &Value) -> Response {
        self.post("/api/v1/events", body).await
    }

    pub async fn post_batch(&self, body: &Value) -> Response {
        self.post("/api/v1/batch/events", body).await
    }

    pub async fn post_group(&self, body: &Value) -> Response {
        self.post("/api/v1/groups", body).await
    }

    pub async fn patch_group(&self, id: &str, body: &Value) -> Response {
        self.patch(&format!("/api/v1/groups/{id}"), body).await
    }

    // ---- creating things that must succeed -----------------------------------

    pub async fn create_receiver(&self) -> String {
        self.create_receiver_with_schema(json!({})).await
    }

    pub async fn create_receiver_with_schema(&self, schema: Value) -> String {
        let res = self.post_receiver(&receiver_body("r", schema)).await;
        id_of(&res)
    }

    pub async fn create_event(&self, receiver_id: &str, unit: &Unit, success: bool) -> String {
        let res = self
            .post_event(&event_body(receiver_id, unit, success))
            .await;
        id_of(&res)
    }

    pub async fn create_group(&self, receiver_ids: &[&str], enabled: bool) -> String {
        let res = self.post_group(&group_body(receiver_ids, enabled)).await;
        id_of(&res)
    }

    pub async fn set_enabled(&self, group_id: &str, enabled: bool) {
        let res = self
            .patch_group(group_id, &json!({ "enabled": enabled }))
            .await;
        assert_eq!(data(&res), &json!(group_id), "PATCH returns the id");
    }

    /// GET `/api/v1/{kind}/{id}`: must be 200 with a one-element array.
    pub async fn get_one(&self, kind: &str, id: &str) -> Value {
        let res = self.get(&format!("/api/v1/{kind}/{id}")).await;
        let arr = data(&res).as_array().expect("data is an array").clone();
        assert_eq!(arr.len(), 1, "GET {kind}/{id} returns one element: {arr:?}");
        arr.into_iter().next().unwrap()
    }

    /// Follow `next_cursor` until the last page; `path` may carry a query.
    pub async fn list_all(&self, path: &str) -> Vec<Value> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10_000 {
            let url = match &cursor {
                None => path.to_owned(),
                Some(c) => format!("{path}{sep}cursor={}", enc(c)),
            };
            let res = self.get(&url).await;
            out.extend(data(&res).as_array().expect("data is an array").clone());
            match res.1.get("next_cursor") {
                Some(Value::String(c)) => cursor = Some(c.clone()),
                None | Some(Value::Null) => return out,
                Some(other) => panic!("next_cursor is not a string: {other}"),
            }
        }
        panic!("pagination did not end after 10000 pages");
    }

    pub async fn status(&self, group_id: &str, unit: &Unit) -> Value {
        let res = self
            .get(&format!(
                "/api/v1/groups/{group_id}/status?{}",
                unit.query()
            ))
            .await;
        data(&res).clone()
    }

    pub async fn is_complete(&self, group_id: &str, unit: &Unit) -> bool {
        self.status(group_id, unit).await["complete"]
            .as_bool()
            .expect("complete is a boolean")
    }

    pub async fn completions(&self, group_id: &str) -> Vec<Value> {
        self.list_all(&format!("/api/v1/groups/{group_id}/completions?limit=1000"))
            .await
    }

    /// Completions recorded for one unit.
    pub async fn completions_for(&self, group_id: &str, unit: &Unit) -> Vec<Value> {
        self.completions(group_id)
            .await
            .into_iter()
            .filter(|c| unit.matches(c))
            .collect()
    }
}

// ---- bodies ------------------------------------------------------------------

pub fn receiver_body(name: &str, schema: Value) -> Value {
    json!({
        "name": name,
        "type": "build",
        "version": "1.0.0",
        "description": "a receiver",
        "schema": schema,
    })
}

/// The five fields that identify a unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unit {
    pub name: String,
    pub version: String,
    pub release: String,
    pub platform_id: String,
    pub package: String,
}

impl Unit {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: "1.0.0".to_owned(),
            release: "2024.01".to_owned(),
            platform_id: "x86_64-linux".to_owned(),
            package: "oci".to_owned(),
        }
    }

    /// A copy with one field changed.
    pub fn with(&self, field: &str, value: &str) -> Self {
        let mut u = self.clone();
        *match field {
            "name" => &mut u.name,
            "version" => &mut u.version,
            "release" => &mut u.release,
            "platform_id" => &mut u.platform_id,
            "package" => &mut u.package,
            other => panic!("not a unit field: {other}"),
        } = value.to_owned();
        u
    }

    pub fn pairs(&self) -> [(&'static str, &str); 5] {
        [
            ("name", &self.name),
            ("version", &self.version),
            ("release", &self.release),
            ("platform_id", &self.platform_id),
            ("package", &self.package),
        ]
    }

    /// `name=..&version=..&...`, percent-encoded.
    pub fn query(&self) -> String {
        query(&self.pairs())
    }

    /// Whether a JSON object carries exactly this unit.
    pub fn matches(&self, v: &Value) -> bool {
        self.pairs()
            .iter()
            .all(|(k, val)| v.get(*k).and_then(Value::as_str) == Some(*val))
    }
}

pub const UNIT_FIELDS: [&str; 5] = ["name", "version", "release", "platform_id", "package"];

pub fn event_body(receiver_id: &str, unit: &Unit, success: bool) -> Value {
    json!({
        "name": unit.name,
        "version": unit.version,
        "release": unit.release,
        "platform_id": unit.platform_id,
        "package": unit.package,
        "description": "something happened",
        "payload": {"k": "v"},
        "success": success,
        "event_receiver_id": receiver_id,
    })
}

pub fn group_body(receiver_ids: &[&str], enabled: bool) -> Value {
    json!({
        "name": "release-gate",
        "type": "gate",
        "version": "1",
        "description": "ready to release",
        "enabled": enabled,
        "event_receiver_ids": receiver_ids,
    })
}

// ---- assertions ----------------------------------------------------------------

pub fn parse_body(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    serde_json::from_str(text).unwrap_or_else(|e| panic!("response is not JSON ({e}): {text:?}"))
}

/// A success envelope: 200, `errors: []`; returns `data`.
#[track_caller]
pub fn data(res: &Response) -> &Value {
    let (status, body) = res;
    assert_eq!(*status, StatusCode::OK, "expected 200, body: {body}");
    assert_eq!(body["errors"], json!([]), "success has errors: []: {body}");
    assert!(
        body.get("data").is_some(),
        "success envelope has data: {body}"
    );
    &body["data"]
}

/// A failure envelope with the given status: `data: null` and at least one
/// error string; returns the errors.
#[track_caller]
pub fn errors(res: &Response, expected: StatusCode) -> Vec<String> {
    let (status, body) = res;
    assert_eq!(*status, expected, "unexpected status, body: {body}");
    assert_envelope_error(body)
}

#[track_caller]
pub fn assert_envelope_error(body: &Value) -> Vec<String> {
    let obj = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {body}"));
    assert!(
        obj.contains_key("data") && obj["data"].is_null(),
        "failure has data: null: {body}"
    );
    let errs: Vec<String> = obj
        .get("errors")
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("failure has an errors array: {body}"))
        .iter()
        .map(|e| {
            e.as_str()
                .unwrap_or_else(|| panic!("error is not a string: {e}"))
                .to_owned()
        })
        .collect();
    assert!(!errs.is_empty(), "failure has at least one error: {body}");
    errs
}

/// The id returned by a successful create.
#[track_caller]
pub fn id_of(res: &Response) -> String {
    let id = data(res)
        .as_str()
        .unwrap_or_else(|| panic!("create returns an id string: {}", res.1))
        .to_owned();
    assert_ulid(&id);
    id
}

#[track_caller]
pub fn assert_ulid(id: &str) {
    const CROCKFORD: &str = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    assert_eq!(id.len(), 26, "a ULID has 26 characters: {id:?}");
    assert!(
        id.chars().all(|c| CROCKFORD.contains(c)),
        "a ULID is Crockford base32 (upper case): {id:?}"
    );
    assert!(
        matches!(id.as_bytes()[0], b'0'..=b'7'),
        "a ULID fits 128 bits: {id:?}"
    );
}

/// RFC 3339, UTC, `Z` suffix, exactly six fractional digits.
#[track_caller]
pub fn assert_timestamp(v: &Value) {
    let s = v
        .as_str()
        .unwrap_or_else(|| panic!("timestamp is a string: {v}"));
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    let ok = b.len() == 27
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
        && b[26] == b'Z';
    assert!(
        ok,
        "timestamp is RFC 3339 UTC with microseconds and Z: {s:?}"
    );
}

/// Whether any error starts with the prefix.
pub fn has_error(errs: &[String], prefix: &str) -> bool {
    errs.iter().any(|e| e.starts_with(prefix))
}

#[track_caller]
pub fn assert_has_error(errs: &[String], prefix: &str) {
    assert!(
        has_error(errs, prefix),
        "expected an error starting with {prefix:?}, got {errs:?}"
    );
}

/// Every error is `field: message`.
#[track_caller]
pub fn assert_field_errors(errs: &[String]) {
    for e in errs {
        let (field, message) = e
            .split_once(": ")
            .unwrap_or_else(|| panic!("error is not \"field: message\": {e:?}"));
        assert!(
            !field.trim().is_empty() && !message.trim().is_empty(),
            "{e:?}"
        );
    }
}

// ---- URLs ------------------------------------------------------------------------

/// Percent-encode one query component.
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn query(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The ids of a list of objects.
pub fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|v| v["id"].as_str().expect("id is a string").to_owned())
        .collect()
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Small pause so that consecutive timestamps differ.
pub async fn tick() {
    tokio::time::sleep(Duration::from_millis(3)).await;
}
