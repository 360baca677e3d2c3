use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A receiver body padded (with an ignored field) to exactly `len` bytes.
fn receiver_text_of_len(len: usize) -> String {
    let base = json!({
        "name": "r", "type": "t", "version": "1", "description": "d", "schema": {}, "pad": ""
    })
    .to_string();
    assert!(len >= base.len(), "{len} < {}", base.len());
    let text = base.replace(
        r#""pad":"""#,
        &format!(r#""pad":"{}""#, "x".repeat(len - base.len())),
    );
    assert_eq!(text.len(), len);
    text
}

async fn assert_nothing_stored(app: &TestApp) {
    for path in ["/api/v1/receivers", "/api/v1/events", "/api/v1/groups"] {
        assert!(
            app.list_all(path).await.is_empty(),
            "{path} is empty after failed requests"
        );
    }
}

#[tokio::test]
async fn body_over_the_limit_is_413_and_stores_nothing() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    let (status, text) = app
        .post_text("/api/v1/receivers", &receiver_text_of_len(1025))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text}");
    assert_envelope_error(&parse_body(&text));
    assert_nothing_stored(&app).await;

    let (status, text) = app
        .post_text("/api/v1/receivers", &receiver_text_of_len(1024))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a body of exactly the limit is fine: {text}"
    );
    let rid = parse_body(&text)["data"].as_str().unwrap().to_owned();

    // Every route that takes a body enforces the limit.
    let mut big_event = event_body(&rid, &Unit::new("u"), true);
    big_event["payload"] = json!({"blob": "x".repeat(2000)});
    errors(
        &app.post_event(&big_event).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    errors(
        &app.post_batch(&json!([big_event])).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    let mut big_group = group_body(&[&rid], true);
    big_group["description"] = json!("x".repeat(2000));
    errors(
        &app.post_group(&big_group).await,
        StatusCode::PAYLOAD_TOO_LARGE,
    );
    assert!(app.list_all("/api/v1/events").await.is_empty());
    assert!(app.list_all("/api/v1/groups").await.is_empty());
}

#[tokio::test]
async fn default_body_limit_is_one_mebibyte() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let mut body = event_body(&rid, &Unit::new("u"), true);
    body["payload"] = json!({"blob": "x".repeat(1000 * 1000)});
    let id = id_of(&app.post_event(&body).await);
    assert_eq!(
        app.get_one("events", &id).await["payload"]["blob"]
            .as_str()
            .unwrap()
            .len(),
        1000 * 1000
    );
    body["payload"] = json!({"blob": "x".repeat(1024 * 1024)});
    errors(&app.post_event(&body).await, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(app.list_all("/api/v1/events").await.len(), 1);
}

#[tokio::test]
async fn malformed_json_is_400_and_says_where() {
    let app = spawn_app().await;
    let body = "{\n  \"name\": \"x\",\n  \"type\": \n}";
    let (status, text) = app.post_text("/api/v1/receivers", body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let errs = assert_envelope_error(&parse_body(&text));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_field_errors(&errs);
    assert!(
        errs[0].contains("line 4") && errs[0].contains("column"),
        "the message says where: {errs:?}"
    );

    let (status, text) = app.post_text("/api/v1/events", r#"{"name": "x""#).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let errs = assert_envelope_error(&parse_body(&text));
    assert!(
        errs[0].contains("line 1") && errs[0].contains("column"),
        "{errs:?}"
    );
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn malformed_json_is_rejected_on_every_body_route() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    let g = app.create_group(&[&r], false).await;
    let cases = [
        (Method::POST, "/api/v1/receivers".to_owned()),
        (Method::POST, "/api/v1/events".to_owned()),
        (Method::POST, "/api/v1/batch/events".to_owned()),
        (Method::POST, "/api/v1/groups".to_owned()),
        (Method::PATCH, format!("/api/v1/groups/{g}")),
        (Method::POST, format!("/api/v1/groups/{g}/receivers")),
    ];
    for (method, path) in cases {
        for bad in [
            "{",
            "[1, 2",
            "{\"a\": tru}",
            "{\"a\": 1} trailing",
            "",
            "nul",
        ] {
            let (status, _, text) = app
                .send_raw(method.clone(), &path, Some("application/json"), bad)
                .await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{method} {path} {bad:?}: {text}"
            );
            let errs = assert_envelope_error(&parse_body(&text));
            assert_field_errors(&errs);
        }
    }
    assert_eq!(app.list_all("/api/v1/receivers").await.len(), 1);
    assert!(app.list_all("/api/v1/events").await.is_empty());
    assert_eq!(app.list_all("/api/v1/groups").await.len(), 1);
}

#[tokio::test]
async fn a_json_body_that_is_not_an_object_is_rejected() {
    let app = spawn_app().await;
    for body in [json!([1, 2]), json!("name"), json!(7), Value::Null] {
        for path in ["/api/v1/receivers", "/api/v1/events", "/api/v1/groups"] {
            let errs = errors(&app.post(path, &body).await, StatusCode::BAD_REQUEST);
            assert_field_errors(&errs);
        }
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn wrong_content_type_is_415() {
    let app = spawn_app().await;
    let valid = receiver_body("r", json!({})).to_string();
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let (status, headers, text) = app
            .send_raw(Method::POST, "/api/v1/receivers", Some(ct), valid.clone())
            .await;
        assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{ct}: {text}");
        assert_envelope_error(&parse_body(&text));
        assert_json_content_type(&headers);
    }
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn a_missing_content_type_is_415() {
    let app = spawn_app().await;
    let valid = receiver_body("r", json!({})).to_string();
    let (status, _, text) = app
        .send_raw(Method::POST, "/api/v1/receivers", None, valid)
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{text}");
    assert_envelope_error(&parse_body(&text));
    assert_nothing_stored(&app).await;
}

#[tokio::test]
async fn json_content_type_with_parameters_is_accepted() {
    let app = spawn_app().await;
    let valid = receiver_body("r", json!({})).to_string();
    let (status, _, text) = app
        .send_raw(
            Method::POST,
            "/api/v1/receivers",
            Some("application/json; charset=utf-8"),
            valid,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

fn assert_json_content_type(headers: &reqwest::header::HeaderMap) {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        ct.starts_with("application/json"),
        "envelope is served as JSON, got content-type {ct:?}"
    );
}

#[tokio::test]
async fn unknown_route_is_a_404_envelope() {
    let app = spawn_app().await;
    for path in [
        "/api/v1/nope",
        "/api/v1/events/extra/segments",
        "/api/v1/receivers/01ARZ3NDEKTSV4RRFFQ69G5FAV/what",
        "/api/v2/events",
    ] {
        let (status, headers, text) = app.send_raw(Method::GET, path, None, "").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {text}");
        assert_envelope_error(&parse_body(&text));
        assert_json_content_type(&headers);
    }
    let (status, _, _) = app.send_raw(Method::GET, "/nope", None, "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wrong_method_is_a_405_envelope() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    let g = app.create_group(&[&r], false).await;
    let cases = [
        (Method::DELETE, "/api/v1/events".to_owned()),
        (Method::PUT, "/api/v1/receivers".to_owned()),
        (Method::PATCH, format!("/api/v1/receivers/{r}")),
        (Method::DELETE, format!("/api/v1/receivers/{r}")),
        (Method::DELETE, format!("/api/v1/groups/{g}")),
        (Method::GET, "/api/v1/batch/events".to_owned()),
        (Method::POST, format!("/api/v1/groups/{g}/status")),
        (Method::POST, format!("/api/v1/groups/{g}/completions")),
    ];
    for (method, path) in cases {
        let (status, headers, text) = app
            .send_raw(method.clone(), &path, Some("application/json"), "{}")
            .await;
        assert_eq!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {text}"
        );
        assert_envelope_error(&parse_body(&text));
        assert_json_content_type(&headers);
    }
    // Nothing was deleted.
    app.get_one("receivers", &r).await;
    app.get_one("groups", &g).await;
}

#[tokio::test]
async fn a_trailing_slash_is_ignored() {
    let app = spawn_app().await;
    let (status, text) = app
        .post_text(
            "/api/v1/receivers/",
            &receiver_body("r", json!({})).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let rid = parse_body(&text)["data"].as_str().unwrap().to_owned();
    let unit = Unit::new("u");
    let eid = id_of(
        &app.post("/api/v1/events/", &event_body(&rid, &unit, true))
            .await,
    );
    let gid = id_of(
        &app.post("/api/v1/groups/", &group_body(&[&rid], true))
            .await,
    );

    assert_eq!(
        app.get("/api/v1/events/").await,
        app.get("/api/v1/events").await
    );
    assert_eq!(
        app.get("/api/v1/events/?limit=1").await,
        app.get("/api/v1/events?limit=1").await
    );
    assert_eq!(
        app.get("/api/v1/receivers/").await,
        app.get("/api/v1/receivers").await
    );
    assert_eq!(
        app.get("/api/v1/groups/").await,
        app.get("/api/v1/groups").await
    );
    for (kind, id) in [("receivers", &rid), ("events", &eid), ("groups", &gid)] {
        assert_eq!(
            app.get(&format!("/api/v1/{kind}/{id}/")).await,
            app.get(&format!("/api/v1/{kind}/{id}")).await
        );
    }
    assert_eq!(
        app.get(&format!("/api/v1/groups/{gid}/status/?{}", unit.query()))
            .await,
        app.get(&format!("/api/v1/groups/{gid}/status?{}", unit.query()))
            .await
    );
    let res = app
        .patch(&format!("/api/v1/groups/{gid}/"), &json!({"name": "n2"}))
        .await;
    assert_eq!(data(&res), &json!(gid));
    assert_eq!(app.list_all("/api/v1/events").await.len(), 1);
}

#[tokio::test]
async fn a_chunked_body_over_the_limit_is_413() {
    let app = spawn_app_with(|s| s.max_body_bytes = 1024).await;
    let body = receiver_text_of_len(3000);
    let (first, second) = body.split_at(1500);
    let request = format!(
        "POST /api/v1/receivers HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
        first.len(),
        second.len()
    );
    let raw = raw_exchange(&app, &request).await;
    let (head, body) = split_response(&raw);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    let body = String::from_utf8_lossy(body);
    assert!(body.contains("\"data\":null"), "{body}");
    assert_nothing_stored(&app).await;

    // A chunked body within the limit is fine.
    let small = receiver_body("r", json!({})).to_string();
    let request = format!(
        "POST /api/v1/receivers HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{small}\r\n0\r\n\r\n",
        small.len()
    );
    let raw = raw_exchange(&app, &request).await;
    let (head, _) = split_response(&raw);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// Send one raw HTTP/1.1 request (with the app's admin key, if it has
/// one) and return the whole response.
async fn raw_exchange(app: &TestApp, request: &str) -> Vec<u8> {
    let request = match (&app.admin_key, request.split_once("\r\n")) {
        (Some(key), Some((line, rest))) => {
            format!("{line}\r\nAuthorization: Bearer {key}\r\n{rest}")
        }
        _ => request.to_owned(),
    };
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the server did not close the connection")
        .unwrap();
    out
}

fn split_response(raw: &[u8]) -> (String, &[u8]) {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete header block");
    (
        String::from_utf8_lossy(&raw[..end]).into_owned(),
        &raw[end + 4..],
    )
}

#[tokio::test]
async fn head_is_answered_like_get_without_a_body() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    app.create_event(&rid, &Unit::new("u"), true).await;
    for path in [
        "/api/v1/events".to_owned(),
        "/api/v1/receivers".to_owned(),
        format!("/api/v1/receivers/{rid}"),
    ] {
        let raw = raw_exchange(
            &app,
            &format!("HEAD {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"),
        )
        .await;
        let (head, body) = split_response(&raw);
        assert!(head.starts_with("HTTP/1.1 200"), "HEAD {path}: {head}");
        assert!(body.is_empty(), "HEAD {path} has no body: {body:?}");
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: application/json"),
            "HEAD {path} has GET's headers: {head}"
        );
    }
    let raw = raw_exchange(
        &app,
        &format!(
            "HEAD /api/v1/receivers/{UNKNOWN_ID} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    let (head, body) = split_response(&raw);
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    assert!(body.is_empty());

    let res = app
        .client
        .head(app.url("/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(res.bytes().await.unwrap().is_empty());
}

#[tokio::test]
async fn failed_requests_store_nothing() {
    let app = spawn_app_with(|s| s.max_body_bytes = 4096).await;
    // invalid receiver, event, group, batch; wrong media type; too large; malformed.
    errors(
        &app.post_receiver(&receiver_body(" ", json!({}))).await,
        StatusCode::BAD_REQUEST,
    );
    errors(
        &app.post_receiver(&receiver_body("r", json!({"type": 1})))
            .await,
        StatusCode::BAD_REQUEST,
    );
    errors(
        &app.post_event(&event_body(UNKNOWN_ID, &Unit::new("u"), true))
            .await,
        StatusCode::BAD_REQUEST,
    );
    errors(
        &app.post_group(&group_body(&[UNKNOWN_ID], true)).await,
        StatusCode::BAD_REQUEST,
    );
    errors(
        &app.post_batch(&json!([event_body(UNKNOWN_ID, &Unit::new("u"), true)]))
            .await,
        StatusCode::BAD_REQUEST,
    );
    let (status, _, _) = app
        .send_raw(
            Method::POST,
            "/api/v1/receivers",
            Some("text/plain"),
            receiver_body("r", json!({})).to_string(),
        )
        .await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let (status, _) = app
        .post_text("/api/v1/receivers", &receiver_text_of_len(5000))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let (status, _) = app.post_text("/api/v1/receivers", "{\"name\":").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_nothing_stored(&app).await;
    // The app still works.
    app.create_receiver().await;
}

#[tokio::test]
async fn success_and_failure_responses_are_json_envelopes() {
    let app = spawn_app().await;
    let r = app.create_receiver().await;
    for path in [
        "/api/v1/receivers".to_owned(),
        format!("/api/v1/receivers/{r}"),
        format!("/api/v1/receivers/{UNKNOWN_ID}"),
        "/api/v1/events?limit=0".to_owned(),
    ] {
        let (_, headers, text) = app.send_raw(Method::GET, &path, None, "").await;
        assert_json_content_type(&headers);
        let body = parse_body(&text);
        let obj = body.as_object().expect("an object");
        assert!(
            obj.contains_key("data") && obj.contains_key("errors"),
            "{path}: {body}"
        );
        assert!(obj["errors"].is_array());
    }
}

#[tokio::test]
async fn an_undecodable_path_id_is_a_404_envelope() {
    let app = crate::helpers::spawn_app().await;
    for path in [
        "/api/v1/events/%FF%FE",
        "/api/v1/receivers/%C3%28",
        "/api/v1/groups/%FF/status",
    ] {
        let res = app
            .client
            .get(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404, "{path}");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["data"], serde_json::Value::Null, "{path}");
        assert!(
            body["errors"][0].as_str().unwrap().contains("no resource"),
            "{path}: {body}"
        );
    }
}
