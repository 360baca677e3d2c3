use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn build_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "build_id": {"type": "string"},
            "duration_s": {"type": "number", "minimum": 0}
        },
        "required": ["build_id"]
    })
}

#[tokio::test]
async fn create_and_get_an_event_with_every_field() {
    let app = spawn_app().await;
    let rid = app.create_receiver_with_schema(build_schema()).await;
    let body = json!({
        "name": "cairn",
        "version": "1.2.3",
        "release": "2024.06",
        "platform_id": "aarch64-darwin",
        "package": "tarball",
        "description": "the build passed",
        "payload": {"build_id": "b-42", "duration_s": 12.5},
        "success": true,
        "event_receiver_id": rid,
    });
    let id = id_of(&app.post_event(&body).await);
    let res = app.get(&format!("/api/v1/events/{id}")).await;
    let arr = data(&res).as_array().expect("data is an array");
    assert_eq!(arr.len(), 1, "one-element array");
    let e = &arr[0];
    let mut keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "description",
            "event_receiver",
            "event_receiver_id",
            "id",
            "name",
            "package",
            "payload",
            "platform_id",
            "release",
            "success",
            "version"
        ]
    );
    assert_eq!(e["id"], json!(id));
    for field in [
        "name",
        "version",
        "release",
        "platform_id",
        "package",
        "description",
        "payload",
        "success",
        "event_receiver_id",
    ] {
        assert_eq!(e[field], body[field], "{field}");
    }
    assert_timestamp(&e["created_at"]);
    let receiver = app.get_one("receivers", &rid).await;
    assert_eq!(
        e["event_receiver"], receiver,
        "event_receiver is the receiver object"
    );
}

#[tokio::test]
async fn success_defaults_to_false() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let mut body = event_body(&rid, &Unit::new("u"), true);
    body.as_object_mut().unwrap().remove("success");
    let id = id_of(&app.post_event(&body).await);
    assert_eq!(app.get_one("events", &id).await["success"], json!(false));
    body["success"] = json!(true);
    let id = id_of(&app.post_event(&body).await);
    assert_eq!(app.get_one("events", &id).await["success"], json!(true));
}

#[tokio::test]
async fn success_must_be_a_boolean() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    for bad in [json!("yes"), json!("true"), json!(1), json!({})] {
        let mut body = event_body(&rid, &Unit::new("u"), true);
        body["success"] = bad.clone();
        let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
        assert_eq!(errs, ["success: must be a boolean"], "success = {bad}");
    }
    assert!(app.list_all("/api/v1/events").await.is_empty());
}

#[tokio::test]
async fn payload_is_returned_exactly_as_submitted() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let payload = r#"{ "zeta" : 1, "alpha" : { "b" : 1.10, "a" : [ 1 , 2.50, -0.0 ] },
                       "text" : "keep  these   spaces", "nested" : { "y" : null, "x" : true } }"#;
    let compact = r#"{"zeta":1,"alpha":{"b":1.10,"a":[1,2.50,-0.0]},"text":"keep  these   spaces","nested":{"y":null,"x":true}}"#;
    let body = format!(
        r#"{{"name":"n","version":"1","release":"r","platform_id":"p","package":"k",
            "description":"d","success":true,"event_receiver_id":"{rid}","payload":{payload}}}"#
    );
    let (status, text) = app.post_text("/api/v1/events", &body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let id = parse_body(&text)["data"].as_str().unwrap().to_owned();
    let (status, text) = app.get_text(&format!("/api/v1/events/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains(&format!(r#""payload":{compact}"#)),
        "payload keeps key order and number text; got {text}"
    );
    let (_, text) = app.get_text("/api/v1/events").await;
    assert!(
        text.contains(&format!(r#""payload":{compact}"#)),
        "list too: {text}"
    );
}

#[tokio::test]
async fn payload_numbers_keep_their_text_even_beyond_f64() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let compact = r#"{"huge":1e400,"long":123456789012345678901234567890,"precise":0.10000000000000000000001}"#;
    let body = format!(
        r#"{{"name":"n","version":"1","release":"r","platform_id":"p","package":"k",
            "description":"d","event_receiver_id":"{rid}","payload":{compact}}}"#
    );
    let (status, text) = app.post_text("/api/v1/events", &body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let id = parse_body(&text)["data"].as_str().unwrap().to_owned();
    let (_, text) = app.get_text(&format!("/api/v1/events/{id}")).await;
    assert!(text.contains(&format!(r#""payload":{compact}"#)), "{text}");
}

#[tokio::test]
async fn every_missing_field_is_reported_at_once() {
    let app = spawn_app().await;
    let errs = errors(&app.post_event(&json!({})).await, StatusCode::BAD_REQUEST);
    assert_field_errors(&errs);
    let required = [
        "name",
        "version",
        "release",
        "platform_id",
        "package",
        "description",
        "payload",
        "event_receiver_id",
    ];
    assert_eq!(errs.len(), required.len(), "{errs:?}");
    for field in required {
        assert!(
            errs.contains(&format!("{field}: is required")),
            "{field}: {errs:?}"
        );
    }
}

#[tokio::test]
async fn a_body_missing_three_fields_gives_three_errors() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let mut body = event_body(&rid, &Unit::new("u"), true);
    let obj = body.as_object_mut().unwrap();
    obj.remove("release");
    obj.remove("package");
    obj.remove("description");
    let mut errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
    errs.sort();
    assert_eq!(
        errs,
        [
            "description: is required",
            "package: is required",
            "release: is required"
        ]
    );
}

#[tokio::test]
async fn blank_and_non_string_fields_are_named() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let mut body = event_body(&rid, &Unit::new("u"), true);
    body["name"] = json!("   ");
    body["platform_id"] = json!("");
    body["version"] = json!(3);
    let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(
        errs.contains(&"name: must not be blank".to_owned()),
        "{errs:?}"
    );
    assert!(
        errs.contains(&"platform_id: must not be blank".to_owned()),
        "{errs:?}"
    );
    assert_has_error(&errs, "version: ");
}

#[tokio::test]
async fn strings_are_stored_as_given() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let unit = Unit {
        name: "  app ".into(),
        version: "1.0 ".into(),
        release: " r".into(),
        platform_id: "p\t".into(),
        package: "k k".into(),
    };
    let id = app.create_event(&rid, &unit, true).await;
    let e = app.get_one("events", &id).await;
    assert!(unit.matches(&e), "{e}");
}

#[tokio::test]
async fn null_payload_counts_as_missing() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let mut body = event_body(&rid, &Unit::new("u"), true);
    body["payload"] = Value::Null;
    let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
    assert_eq!(errs, ["payload: is required"]);
}

#[tokio::test]
async fn unknown_receiver_is_rejected() {
    let app = spawn_app().await;
    app.create_receiver().await;
    let body = event_body(UNKNOWN_ID, &Unit::new("u"), true);
    let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
    assert_eq!(
        errs,
        [format!(
            "event_receiver_id: no event receiver with id \"{UNKNOWN_ID}\""
        )]
    );
    assert!(app.list_all("/api/v1/events").await.is_empty());
}

#[tokio::test]
async fn malformed_receiver_id_is_rejected() {
    let app = spawn_app().await;
    let body = event_body("nope", &Unit::new("u"), true);
    let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
    assert_eq!(
        errs,
        ["event_receiver_id: no event receiver with id \"nope\""]
    );
}

#[tokio::test]
async fn payload_must_satisfy_the_receiver_schema() {
    let app = spawn_app().await;
    let rid = app.create_receiver_with_schema(build_schema()).await;
    let mut body = event_body(&rid, &Unit::new("u"), true);

    body["payload"] = json!({"build_id": 5});
    let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("payload/build_id: "), "{errs:?}");

    body["payload"] = json!({"duration_s": 3});
    let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
    assert!(errs.iter().all(|e| e.starts_with("payload")), "{errs:?}");
    assert!(
        errs.iter().any(|e| e.contains("build_id")),
        "names the missing property: {errs:?}"
    );

    body["payload"] = json!("not an object");
    let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
    assert!(errs.iter().all(|e| e.starts_with("payload")), "{errs:?}");

    assert!(
        app.list_all("/api/v1/events").await.is_empty(),
        "nothing stored"
    );
    body["payload"] = json!({"build_id": "b"});
    id_of(&app.post_event(&body).await);
}

#[tokio::test]
async fn every_schema_violation_is_reported() {
    let app = spawn_app().await;
    let rid = app.create_receiver_with_schema(build_schema()).await;
    let mut body = event_body(&rid, &Unit::new("u"), true);
    body["payload"] = json!({"build_id": 5, "duration_s": -1});
    let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_has_error(&errs, "payload/build_id: ");
    assert_has_error(&errs, "payload/duration_s: ");
}

#[tokio::test]
async fn field_and_payload_problems_are_reported_together() {
    let app = spawn_app().await;
    let rid = app.create_receiver_with_schema(build_schema()).await;
    let mut body = event_body(&rid, &Unit::new("u"), true);
    body["name"] = json!(" ");
    body["payload"] = json!({"build_id": 5});
    let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
    assert!(
        errs.contains(&"name: must not be blank".to_owned()),
        "{errs:?}"
    );
    assert_has_error(&errs, "payload/build_id: ");
}

#[tokio::test]
async fn event_receiver_is_the_full_receiver_object() {
    let app = spawn_app().await;
    let schema = json!({"type": "object", "required": ["z", "a"]});
    let rid = app.create_receiver_with_schema(schema).await;
    let mut body = event_body(&rid, &Unit::new("u"), false);
    body["payload"] = json!({"z": 1, "a": 2});
    let id = id_of(&app.post_event(&body).await);
    let e = app.get_one("events", &id).await;
    assert_eq!(e["event_receiver_id"], json!(rid));
    assert_eq!(e["event_receiver"], app.get_one("receivers", &rid).await);
    assert_eq!(e["event_receiver"]["id"], json!(rid));
    assert!(e["event_receiver"]["fingerprint"].is_string());
}

#[tokio::test]
async fn ids_increase_and_timestamps_do_not_go_back() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(
            app.create_event(&rid, &Unit::new(&format!("u{i}")), i % 2 == 0)
                .await,
        );
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "ids are unique and increasing");
    let events = app.list_all("/api/v1/events").await;
    let times: Vec<&str> = events
        .iter()
        .map(|e| e["created_at"].as_str().unwrap())
        .collect();
    let mut sorted_times = times.clone();
    sorted_times.sort_unstable();
    assert_eq!(times, sorted_times);
    assert!(
        ids[0] > rid,
        "ids are increasing across resources in one process"
    );
}

#[tokio::test]
async fn unknown_or_malformed_id_is_404() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    app.create_event(&rid, &Unit::new("u"), true).await;
    for id in [UNKNOWN_ID, "nope", rid.as_str()] {
        errors(
            &app.get(&format!("/api/v1/events/{id}")).await,
            StatusCode::NOT_FOUND,
        );
    }
}

#[tokio::test]
async fn events_are_immutable() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let id = app.create_event(&rid, &Unit::new("u"), true).await;
    let before = app.get_one("events", &id).await;
    let path = format!("/api/v1/events/{id}");
    for method in [
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        let res = app
            .send(method.clone(), &path, Some(&json!({"success": false})))
            .await;
        errors(&res, StatusCode::METHOD_NOT_ALLOWED);
    }
    assert_eq!(app.get_one("events", &id).await, before);
}
