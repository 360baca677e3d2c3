use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn create_returns_200_with_a_ulid() {
    let app = spawn_app().await;
    let res = app.post_receiver(&receiver_body("r", json!({}))).await;
    let id = id_of(&res);
    assert_ulid(&id);
}

#[tokio::test]
async fn get_returns_a_one_element_array_with_every_field() {
    let app = spawn_app().await;
    let body = json!({
        "name": "build-finished",
        "type": "ci.build",
        "version": "2.1.0",
        "description": "a build finished",
        "schema": {"type": "object"},
    });
    let id = id_of(&app.post_receiver(&body).await);
    let res = app.get(&format!("/api/v1/receivers/{id}")).await;
    let arr = data(&res).as_array().expect("data is an array");
    assert_eq!(arr.len(), 1);
    let r = &arr[0];
    let mut keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "created_at",
            "description",
            "fingerprint",
            "id",
            "name",
            "schema",
            "type",
            "version"
        ]
    );
    assert_eq!(r["id"], json!(id));
    assert_eq!(r["name"], "build-finished");
    assert_eq!(r["type"], "ci.build");
    assert_eq!(r["version"], "2.1.0");
    assert_eq!(r["description"], "a build finished");
    assert_eq!(r["schema"], json!({"type": "object"}));
    assert_eq!(
        r["fingerprint"],
        json!(sha256_hex(
            "v1 ci.build a build finished build-finished 2.1.0"
        ))
    );
    assert_timestamp(&r["created_at"]);
}

#[tokio::test]
async fn fingerprint_is_sha256_of_type_description_name_version() {
    let app = spawn_app().await;
    let cases = [
        ("n", "t", "1", "d"),
        (
            "with space",
            "type two",
            "0.0.1-rc.1",
            "Ünïcödé description ✓",
        ),
        ("  padded  ", "t", "v", " d "),
    ];
    for (name, type_, version, description) in cases {
        let body = json!({
            "name": name, "type": type_, "version": version,
            "description": description, "schema": {}
        });
        let id = id_of(&app.post_receiver(&body).await);
        let r = app.get_one("receivers", &id).await;
        let expected = sha256_hex(&format!("v1 {type_} {description} {name} {version}"));
        assert_eq!(r["fingerprint"], json!(expected), "fingerprint of {body}");
        let fp = r["fingerprint"].as_str().unwrap();
        assert_eq!(fp.len(), 64);
        assert!(
            fp.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
            "lowercase hex: {fp}"
        );
    }
}

#[tokio::test]
async fn strings_are_stored_as_given_untrimmed() {
    let app = spawn_app().await;
    let body = json!({
        "name": "  spaced name ",
        "type": "\ttype",
        "version": "1.0 ",
        "description": " multi\nline ",
        "schema": {}
    });
    let id = id_of(&app.post_receiver(&body).await);
    let r = app.get_one("receivers", &id).await;
    for field in ["name", "type", "version", "description"] {
        assert_eq!(r[field], body[field], "{field} stored as given");
    }
}

#[tokio::test]
async fn every_missing_field_is_reported_at_once() {
    let app = spawn_app().await;
    let errs = errors(
        &app.post_receiver(&json!({})).await,
        StatusCode::BAD_REQUEST,
    );
    assert_field_errors(&errs);
    assert_eq!(errs.len(), 5, "one error per missing field: {errs:?}");
    for field in ["name", "type", "version", "description", "schema"] {
        assert!(
            errs.contains(&format!("{field}: is required")),
            "{field} reported: {errs:?}"
        );
    }
}

#[tokio::test]
async fn some_missing_fields_are_reported_and_only_those() {
    let app = spawn_app().await;
    let errs = errors(
        &app.post_receiver(&json!({"name": "n", "type": "t"})).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert_has_error(&errs, "version: ");
    assert_has_error(&errs, "description: ");
    assert_has_error(&errs, "schema: ");
}

#[tokio::test]
async fn blank_strings_are_rejected() {
    let app = spawn_app().await;
    let body = json!({
        "name": "   ", "type": "", "version": "\t\n", "description": "ok", "schema": {}
    });
    let errs = errors(&app.post_receiver(&body).await, StatusCode::BAD_REQUEST);
    assert_eq!(
        errs.len(),
        3,
        "one error per blank field, none for valid ones: {errs:?}"
    );
    for field in ["name", "type", "version"] {
        assert!(
            errs.contains(&format!("{field}: must not be blank")),
            "{errs:?}"
        );
    }
    assert!(app.list_all("/api/v1/receivers").await.is_empty());
}

#[tokio::test]
async fn non_string_fields_are_rejected() {
    let app = spawn_app().await;
    let body = json!({
        "name": 5, "type": true, "version": ["1"], "description": {"d": 1}, "schema": {}
    });
    let errs = errors(&app.post_receiver(&body).await, StatusCode::BAD_REQUEST);
    assert_eq!(errs.len(), 4, "{errs:?}");
    for field in ["name", "type", "version", "description"] {
        assert_has_error(&errs, &format!("{field}: "));
    }
}

#[tokio::test]
async fn null_schema_counts_as_missing() {
    let app = spawn_app().await;
    let errs = errors(
        &app.post_receiver(&receiver_body("r", Value::Null)).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(errs, ["schema: is required"]);
}

#[tokio::test]
async fn invalid_schemas_are_rejected() {
    let app = spawn_app().await;
    let bad = [
        json!({"type": "no-such-type"}),
        json!({"properties": 5}),
        json!({"required": "name"}),
        json!({"minLength": -1}),
        json!(5),
        json!("a string"),
        json!([{"type": "object"}]),
    ];
    for schema in bad {
        let errs = errors(
            &app.post_receiver(&receiver_body("r", schema.clone())).await,
            StatusCode::BAD_REQUEST,
        );
        assert_eq!(errs.len(), 1, "{schema}: {errs:?}");
        assert!(errs[0].starts_with("schema: "), "{schema}: {errs:?}");
    }
    assert!(
        app.list_all("/api/v1/receivers").await.is_empty(),
        "nothing stored"
    );
}

#[tokio::test]
async fn unsupported_schema_uri_is_rejected() {
    let app = spawn_app().await;
    for uri in [
        "https://example.com/my-schema",
        "http://json-schema.org/draft-03/schema#",
        "not a uri",
    ] {
        let schema = json!({"$schema": uri, "type": "object"});
        let errs = errors(
            &app.post_receiver(&receiver_body("r", schema)).await,
            StatusCode::BAD_REQUEST,
        );
        assert_eq!(errs.len(), 1, "{uri}: {errs:?}");
        assert!(errs[0].starts_with("schema: "), "{uri}: {errs:?}");
    }
}

#[tokio::test]
async fn remote_ref_is_rejected() {
    let app = spawn_app().await;
    let schema = json!({"$ref": "https://example.com/x.json"});
    let errs = errors(
        &app.post_receiver(&receiver_body("r", schema)).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("schema: "), "{errs:?}");

    let nested = json!({
        "type": "object",
        "properties": {"a": {"$ref": "https://example.com/defs.json#/a"}}
    });
    let errs = errors(
        &app.post_receiver(&receiver_body("r", nested)).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(errs[0].starts_with("schema: "), "{errs:?}");
}

#[tokio::test]
async fn remote_ref_is_never_fetched() {
    let app = spawn_app().await;
    // A loopback "schema server" that records any connection attempt.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let schema = json!({"$ref": format!("http://127.0.0.1:{port}/schema.json")});
    let res = tokio::time::timeout(
        Duration::from_secs(15),
        app.post_receiver(&receiver_body("r", schema)),
    )
    .await
    .expect("the create hung: the server appears to fetch the remote $ref");
    let errs = errors(&res, StatusCode::BAD_REQUEST);
    assert!(errs[0].starts_with("schema: "), "{errs:?}");
    let accepted = tokio::time::timeout(Duration::from_millis(300), listener.accept()).await;
    assert!(
        accepted.is_err(),
        "the server connected to the remote $ref location"
    );
}

#[tokio::test]
async fn local_ref_is_accepted_and_applied() {
    let app = spawn_app().await;
    let schema = json!({
        "$defs": {"id": {"type": "string"}},
        "type": "object",
        "properties": {"build_id": {"$ref": "#/$defs/id"}},
        "required": ["build_id"]
    });
    let rid = id_of(&app.post_receiver(&receiver_body("r", schema)).await);
    let mut body = event_body(&rid, &Unit::new("u"), true);
    body["payload"] = json!({"build_id": "b-1"});
    id_of(&app.post_event(&body).await);
    body["payload"] = json!({"build_id": 7});
    let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
    assert_has_error(&errs, "payload/build_id");
}

#[tokio::test]
async fn every_supported_draft_is_accepted() {
    let app = spawn_app().await;
    let uris = [
        "http://json-schema.org/draft-04/schema#",
        "http://json-schema.org/draft-04/schema",
        "http://json-schema.org/draft-06/schema#",
        "http://json-schema.org/draft-06/schema",
        "http://json-schema.org/draft-07/schema#",
        "http://json-schema.org/draft-07/schema",
        "https://json-schema.org/draft/2019-09/schema",
        "https://json-schema.org/draft/2020-12/schema",
    ];
    for uri in uris {
        let schema = json!({
            "$schema": uri,
            "type": "object",
            "properties": {"n": {"type": "integer"}},
            "required": ["n"]
        });
        let rid = id_of(&app.post_receiver(&receiver_body("r", schema)).await);
        // The schema is enforced, whatever the draft.
        let mut body = event_body(&rid, &Unit::new("u"), true);
        body["payload"] = json!({"n": 3});
        id_of(&app.post_event(&body).await);
        body["payload"] = json!({"n": "three"});
        let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
        assert_has_error(&errs, "payload/n");
    }
}

#[tokio::test]
async fn the_draft_is_chosen_by_dollar_schema() {
    let app = spawn_app().await;
    // Boolean exclusiveMaximum is draft 4 only.
    let draft4 = json!({
        "$schema": "http://json-schema.org/draft-04/schema#",
        "type": "number",
        "maximum": 10,
        "exclusiveMaximum": true
    });
    let rid = id_of(&app.post_receiver(&receiver_body("d4", draft4)).await);
    let mut body = event_body(&rid, &Unit::new("u"), true);
    body["payload"] = json!(9);
    id_of(&app.post_event(&body).await);
    body["payload"] = json!(10);
    let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
    assert_has_error(&errs, "payload");

    // Without $schema the default is 2020-12, where exclusiveMaximum must be a number.
    let default = json!({"type": "number", "maximum": 10, "exclusiveMaximum": true});
    let errs = errors(
        &app.post_receiver(&receiver_body("d2020", default)).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(errs[0].starts_with("schema: "), "{errs:?}");

    // prefixItems is a 2020-12 keyword and is enforced by default.
    let tuple = json!({"type": "array", "prefixItems": [{"type": "string"}]});
    let rid = id_of(&app.post_receiver(&receiver_body("tuple", tuple)).await);
    let mut body = event_body(&rid, &Unit::new("u"), true);
    body["payload"] = json!(["a", 1]);
    id_of(&app.post_event(&body).await);
    body["payload"] = json!([1]);
    let errs = errors(&app.post_event(&body).await, StatusCode::BAD_REQUEST);
    assert_has_error(&errs, "payload/0");
}

#[tokio::test]
async fn boolean_schemas_are_accepted() {
    let app = spawn_app().await;
    let accept_all = id_of(&app.post_receiver(&receiver_body("t", json!(true))).await);
    let reject_all = id_of(&app.post_receiver(&receiver_body("f", json!(false))).await);
    assert_eq!(
        app.get_one("receivers", &accept_all).await["schema"],
        json!(true)
    );
    assert_eq!(
        app.get_one("receivers", &reject_all).await["schema"],
        json!(false)
    );
    id_of(
        &app.post_event(&event_body(&accept_all, &Unit::new("u"), true))
            .await,
    );
    let errs = errors(
        &app.post_event(&event_body(&reject_all, &Unit::new("u"), true))
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert_has_error(&errs, "payload");
}

#[tokio::test]
async fn empty_schema_accepts_any_payload() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    for payload in [
        json!({}),
        json!({"a": [1, {"b": null}]}),
        json!("text"),
        json!(42),
        json!(false),
        json!([1, "two"]),
    ] {
        let mut body = event_body(&rid, &Unit::new("u"), true);
        body["payload"] = payload.clone();
        let id = id_of(&app.post_event(&body).await);
        assert_eq!(app.get_one("events", &id).await["payload"], payload);
    }
}

#[tokio::test]
async fn duplicates_are_allowed() {
    let app = spawn_app().await;
    let body = receiver_body("same", json!({}));
    let a = id_of(&app.post_receiver(&body).await);
    let b = id_of(&app.post_receiver(&body).await);
    assert_ne!(a, b);
    let ra = app.get_one("receivers", &a).await;
    let rb = app.get_one("receivers", &b).await;
    assert_eq!(ra["fingerprint"], rb["fingerprint"]);
    let listed = app.list_all("/api/v1/receivers?name=same").await;
    assert_eq!(ids(&listed), [a, b]);
}

#[tokio::test]
async fn schema_is_returned_exactly_as_submitted() {
    let app = spawn_app().await;
    let schema_text = r#"{ "type" : "object",
        "properties" : { "zeta" : { "type" : "number", "maximum" : 1.10 },
                         "alpha" : { "type" : "string", "description" : "two  spaces" } },
        "required" : [ "zeta" ] }"#;
    let compact = r#"{"type":"object","properties":{"zeta":{"type":"number","maximum":1.10},"alpha":{"type":"string","description":"two  spaces"}},"required":["zeta"]}"#;
    let body = format!(
        r#"{{"name":"r","type":"t","version":"1","description":"d","schema":{schema_text}}}"#
    );
    let (status, text) = app.post_text("/api/v1/receivers", &body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let id = parse_body(&text)["data"].as_str().unwrap().to_owned();

    let (status, text) = app.get_text(&format!("/api/v1/receivers/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains(&format!(r#""schema":{compact}"#)),
        "schema keeps key order and number text; got {text}"
    );
    // The same text appears in lists and inside events.
    let (_, text) = app.get_text("/api/v1/receivers").await;
    assert!(text.contains(&format!(r#""schema":{compact}"#)), "{text}");
    let mut ev = event_body(&id, &Unit::new("u"), true);
    ev["payload"] = json!({"zeta": 1});
    let eid = id_of(&app.post_event(&ev).await);
    let (_, text) = app.get_text(&format!("/api/v1/events/{eid}")).await;
    assert!(text.contains(&format!(r#""schema":{compact}"#)), "{text}");
}

#[tokio::test]
async fn schema_numbers_keep_their_text_even_beyond_f64() {
    let app = spawn_app().await;
    let compact = r#"{"type":"object","x-big":1e400,"x-precise":0.10000000000000000000001,"x-int":123456789012345678901234567890}"#;
    let body =
        format!(r#"{{"name":"r","type":"t","version":"1","description":"d","schema":{compact}}}"#);
    let (status, text) = app.post_text("/api/v1/receivers", &body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let id = parse_body(&text)["data"].as_str().unwrap().to_owned();
    let (_, text) = app.get_text(&format!("/api/v1/receivers/{id}")).await;
    assert!(text.contains(&format!(r#""schema":{compact}"#)), "{text}");
}

#[tokio::test]
async fn unknown_request_fields_are_ignored() {
    let app = spawn_app().await;
    let mut body = receiver_body("r", json!({}));
    body["colour"] = json!("blue");
    body["id"] = json!(UNKNOWN_ID);
    let id = id_of(&app.post_receiver(&body).await);
    assert_ne!(id, UNKNOWN_ID, "a client cannot choose the id");
    let r = app.get_one("receivers", &id).await;
    assert!(r.get("colour").is_none());
}

#[tokio::test]
async fn unknown_or_malformed_id_is_404() {
    let app = spawn_app().await;
    app.create_receiver().await;
    for id in [UNKNOWN_ID, "not-a-ulid", "8ZZZZZZZZZZZZZZZZZZZZZZZZZ", "0"] {
        let res = app.get(&format!("/api/v1/receivers/{id}")).await;
        errors(&res, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn ids_increase_in_creation_order() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(app.create_receiver().await);
    }
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ids, sorted, "ids are unique and increasing");
}
