//! `Idempotency-Key` on POST and PATCH (docs/idempotency.md), against the
//! running app on both stores: a retry replays the stored response byte for
//! byte, another request under the same key is 409, keys are per principal,
//! bad keys are 400, keys expire, refusals are replayed too, concurrent
//! duplicates (on one node and, on PostgreSQL, on two) create one event.

use crate::auth_support::create_key;
use crate::helpers::*;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const REPLAYED: &str = "idempotent-replayed";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    text: String,
}

impl Answer {
    fn body(&self) -> Value {
        parse_body(&self.text)
    }

    fn replayed(&self) -> bool {
        self.headers
            .get(REPLAYED)
            .is_some_and(|v| v.as_bytes() == b"true")
    }

    fn id(&self) -> String {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        id_of(&(self.status, self.body()))
    }

    fn errors(&self, expected: StatusCode) -> Vec<String> {
        errors(&(self.status, self.body()), expected)
    }
}

/// Send `body` (JSON text as given) with `Idempotency-Key: key`.
async fn keyed(
    client: &reqwest::Client,
    method: Method,
    url: String,
    key: &[u8],
    body: &str,
) -> Answer {
    let res = client
        .request(method, url)
        .header("content-type", "application/json")
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(key).expect("a header value"),
        )
        .body(body.to_owned())
        .send()
        .await
        .expect("request failed");
    Answer {
        status: res.status(),
        headers: res.headers().clone(),
        text: res.text().await.expect("a body"),
    }
}

async fn post_event(app: &TestApp, key: &str, body: &Value) -> Answer {
    keyed(
        &app.client,
        Method::POST,
        app.url("/api/v1/events"),
        key.as_bytes(),
        &body.to_string(),
    )
    .await
}

async fn event_count(app: &TestApp) -> usize {
    app.list_all("/api/v1/events?limit=100").await.len()
}

#[tokio::test]
async fn a_retry_with_the_same_key_and_body_replays_the_stored_response() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let body = event_body(&rid, &Unit::new("idem"), true);
    let first = post_event(&app, "create-1", &body).await;
    let id = first.id();
    assert!(!first.replayed(), "the first answer is not a replay");
    let again = post_event(&app, "create-1", &body).await;
    assert_eq!(again.status, first.status);
    assert_eq!(again.text, first.text, "replayed byte for byte");
    assert_eq!(again.id(), id, "the same event");
    assert!(again.replayed(), "{:?}", again.headers);
    assert_eq!(
        again.headers.get("content-type"),
        first.headers.get("content-type")
    );
    assert!(
        again.headers.contains_key("x-request-id"),
        "outer layers still run"
    );
    assert_eq!(event_count(&app).await, 1, "one event stored");
    // The quoted (structured-field) form of the key is the same key.
    let quoted = post_event(&app, "\"create-1\"", &body).await;
    assert!(quoted.replayed());
    assert_eq!(quoted.id(), id);
    // Without the header nothing changes: each POST is a new event.
    let (a, b) = (app.post_event(&body).await, app.post_event(&body).await);
    assert_ne!(id_of(&a), id_of(&b));
    assert_eq!(event_count(&app).await, 3);
    let (status, metrics) = app.get_text("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    for outcome in ["stored", "replayed"] {
        assert!(
            metrics.contains(&format!("cairn_idempotency_total{{outcome=\"{outcome}\"}}")),
            "{outcome} is counted"
        );
    }
}

#[tokio::test]
async fn patch_is_idempotent_too() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let gid = app.create_group(&[&rid], true).await;
    let url = app.url(&format!("/api/v1/groups/{gid}"));
    let body = json!({"enabled": false}).to_string();
    let first = keyed(&app.client, Method::PATCH, url.clone(), b"patch-1", &body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.text);
    let again = keyed(&app.client, Method::PATCH, url, b"patch-1", &body).await;
    assert_eq!((again.status, &again.text), (first.status, &first.text));
    assert!(again.replayed());
}

#[tokio::test]
async fn the_same_key_with_another_request_is_409_naming_the_header() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let body = event_body(&rid, &Unit::new("idem"), true);
    post_event(&app, "k", &body).await.id();
    let other = event_body(&rid, &Unit::new("other"), true);
    let res = post_event(&app, "k", &other).await;
    let errs = res.errors(StatusCode::CONFLICT);
    assert_has_error(&errs, "Idempotency-Key");
    assert!(!res.replayed());
    // The same bytes on another route are another request.
    let res = keyed(
        &app.client,
        Method::POST,
        app.url("/api/v1/batch/events"),
        b"k",
        &body.to_string(),
    )
    .await;
    assert_has_error(&res.errors(StatusCode::CONFLICT), "Idempotency-Key");
    // The body is compared as sent: the same JSON spaced differently is
    // another request.
    let res = keyed(
        &app.client,
        Method::POST,
        app.url("/api/v1/events"),
        b"k",
        &serde_json::to_string_pretty(&body).unwrap(),
    )
    .await;
    assert_has_error(&res.errors(StatusCode::CONFLICT), "Idempotency-Key");
    assert_eq!(event_count(&app).await, 1);
}

#[tokio::test]
async fn keys_belong_to_their_principal() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let (_, other_key) = create_key(&app, &["admin"]).await;
    let other = client_with(Some(&other_key));
    let body = event_body(&rid, &Unit::new("idem"), true).to_string();
    let url = app.url("/api/v1/events");
    let mine = keyed(&app.client, Method::POST, url.clone(), b"shared", &body).await;
    let theirs = keyed(&other, Method::POST, url.clone(), b"shared", &body).await;
    assert_ne!(mine.id(), theirs.id(), "two callers, two events");
    assert!(!theirs.replayed());
    // Each replays its own.
    let mine_again = keyed(&app.client, Method::POST, url.clone(), b"shared", &body).await;
    let theirs_again = keyed(&other, Method::POST, url, b"shared", &body).await;
    assert_eq!(mine_again.id(), mine.id());
    assert_eq!(theirs_again.id(), theirs.id());
    assert!(mine_again.replayed() && theirs_again.replayed());
    assert_eq!(event_count(&app).await, 2);
}

#[tokio::test]
async fn bad_keys_are_400_naming_the_header_and_run_nothing() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let body = event_body(&rid, &Unit::new("idem"), true).to_string();
    let url = app.url("/api/v1/events");
    let long = "k".repeat(256);
    for key in [
        &b""[..],
        b"\"\"",
        b"two words",
        b"caf\xc3\xa9",
        b"tab\there",
        long.as_bytes(),
    ] {
        let res = keyed(&app.client, Method::POST, url.clone(), key, &body).await;
        let errs = res.errors(StatusCode::BAD_REQUEST);
        assert_has_error(&errs, "Idempotency-Key");
    }
    let longest = "k".repeat(255);
    keyed(
        &app.client,
        Method::POST,
        url.clone(),
        longest.as_bytes(),
        &body,
    )
    .await
    .id();
    // Two keys on one request: refused, whichever comes first.
    let res = app
        .client
        .post(url.clone())
        .header("content-type", "application/json")
        .header("idempotency-key", "twice-1")
        .header("idempotency-key", "twice-2")
        .body(body.clone())
        .send()
        .await
        .expect("request failed");
    let answer = (res.status(), res.json().await.expect("a JSON body"));
    let errs = errors(&answer, StatusCode::BAD_REQUEST);
    assert_has_error(&errs, "Idempotency-Key");
    assert!(errs.iter().any(|e| e.contains("2 times")), "{errs:?}");
    assert_eq!(event_count(&app).await, 1, "only the valid key ran");
    // Routes whose answers carry secrets take no key.
    let res = keyed(
        &app.client,
        Method::POST,
        app.url("/api/v1/keys"),
        b"key-1",
        &json!({"name": "k", "roles": ["viewer"]}).to_string(),
    )
    .await;
    assert_has_error(&res.errors(StatusCode::BAD_REQUEST), "Idempotency-Key");
    // Nor does GraphQL (its answer says so as a GraphQL error).
    let res = keyed(
        &app.client,
        Method::POST,
        app.url("/api/v1/graphql/query"),
        b"gql-1",
        &json!({"query": "{ __typename }"}).to_string(),
    )
    .await;
    assert_eq!(res.status, StatusCode::BAD_REQUEST, "{}", res.text);
    assert!(res.text.contains("Idempotency-Key"), "{}", res.text);
    // A key on a GET is ignored (GET is idempotent already).
    let res = keyed(
        &app.client,
        Method::GET,
        app.url("/api/v1/events"),
        b" ",
        "",
    )
    .await;
    assert_eq!(res.status, StatusCode::OK, "{}", res.text);
}

#[tokio::test]
async fn an_expired_key_runs_the_request_again() {
    let app = spawn_app_with(|s| s.idempotency_ttl_secs = 1).await;
    let rid = app.create_receiver().await;
    let body = event_body(&rid, &Unit::new("idem"), true);
    let first = post_event(&app, "short", &body).await.id();
    let replay = post_event(&app, "short", &body).await;
    assert!(replay.replayed());
    assert_eq!(replay.id(), first);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = post_event(&app, "short", &body).await;
    assert!(!later.replayed());
    assert_ne!(later.id(), first, "a new event");
    // Even with another body: the old key is gone.
    let other = event_body(&rid, &Unit::new("other"), true);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    post_event(&app, "short", &other).await.id();
    assert_eq!(event_count(&app).await, 3);
}

#[tokio::test]
async fn a_refused_request_is_stored_and_replayed() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let mut bad = event_body(&rid, &Unit::new("idem"), true);
    bad["name"] = json!("");
    let first = post_event(&app, "bad-1", &bad).await;
    let errs = first.errors(StatusCode::BAD_REQUEST);
    assert_has_error(&errs, "name");
    let again = post_event(&app, "bad-1", &bad).await;
    assert_eq!((again.status, &again.text), (first.status, &first.text));
    assert!(again.replayed());
    // The key is spent: fixing the body needs a new key.
    let good = event_body(&rid, &Unit::new("idem"), true);
    post_event(&app, "bad-1", &good)
        .await
        .errors(StatusCode::CONFLICT);
    post_event(&app, "bad-2", &good).await.id();
    assert_eq!(event_count(&app).await, 1);
}

#[tokio::test]
async fn a_response_too_large_to_store_releases_its_key() {
    let app = spawn_app_with(|s| s.idempotency_max_response_bytes = 16).await;
    let rid = app.create_receiver().await;
    let body = event_body(&rid, &Unit::new("idem"), true);
    let first = post_event(&app, "big", &body).await.id();
    let again = post_event(&app, "big", &body).await;
    assert!(!again.replayed(), "nothing was stored to replay");
    assert_ne!(again.id(), first, "the key was released: it ran again");
}

#[tokio::test]
async fn switched_off_the_header_is_ignored() {
    let app = spawn_app_with(|s| s.idempotency_enabled = false).await;
    let rid = app.create_receiver().await;
    let body = event_body(&rid, &Unit::new("idem"), true);
    let first = post_event(&app, "k", &body).await.id();
    let again = post_event(&app, "k", &body).await;
    assert!(!again.replayed());
    assert_ne!(again.id(), first);
    let bad = post_event(&app, "two words", &body).await;
    bad.id();
}

/// `n` requests with one key at once against `targets` (round robin):
/// exactly one event, every success is it, every other answer is 409 "in
/// progress" with a Retry-After.
async fn race(targets: &[&TestApp], n: usize, key: &str) {
    let rid = targets[0].create_receiver().await;
    let body = event_body(&rid, &Unit::new("race"), true).to_string();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let app = targets[i % targets.len()];
            let (client, url) = (app.client.clone(), app.url("/api/v1/events"));
            let (body, key, barrier) = (body.clone(), key.to_owned(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                keyed(&client, Method::POST, url, key.as_bytes(), &body).await
            })
        })
        .collect();
    let mut ids = Vec::new();
    let mut in_progress = 0;
    for t in tasks {
        let res = t.await.expect("a request task");
        match res.status {
            StatusCode::OK => ids.push(res.id()),
            StatusCode::CONFLICT => {
                assert_has_error(&res.errors(StatusCode::CONFLICT), "Idempotency-Key");
                assert!(res.headers.contains_key("retry-after"), "{:?}", res.headers);
                in_progress += 1;
            }
            other => panic!("unexpected {other}: {}", res.text),
        }
    }
    assert!(!ids.is_empty(), "at least the winner succeeds");
    let successes = ids.len();
    eprintln!("race: {successes} successes, {in_progress} in progress");
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 1, "every success is the one event: {ids:?}");
    assert_eq!(successes + in_progress, n);
    let events = targets[0].list_all("/api/v1/events?limit=100").await;
    assert_eq!(events.len(), 1, "exactly one event: {events:?}");
    assert_eq!(events[0]["id"], json!(ids[0]));
    // Once done, every node replays it.
    for app in targets {
        let res = keyed(
            &app.client,
            Method::POST,
            app.url("/api/v1/events"),
            key.as_bytes(),
            &body,
        )
        .await;
        assert!(res.replayed());
        assert_eq!(res.id(), ids[0]);
    }
}

#[tokio::test]
async fn concurrent_duplicates_create_one_event() {
    let app = spawn_app().await;
    race(&[&app], 20, "burst").await;
}

#[tokio::test]
async fn two_nodes_racing_one_key_create_one_event() {
    let a = spawn_app().await;
    let Some(db) = &a.database else {
        eprintln!("skipping: two nodes share a store only on PostgreSQL (the api_postgres target)");
        return;
    };
    let url = db.url.clone();
    let mut b = spawn_app_with(|s| s.database_url = Some(url)).await;
    b.use_key(a.admin_key.clone());
    race(&[&a, &b], 20, "two-nodes").await;
}
