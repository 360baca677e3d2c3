use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn items(rid: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| event_body(rid, &Unit::new(&format!("unit-{i}")), i % 2 == 0))
        .collect()
}

#[tokio::test]
async fn returns_ids_in_input_order() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let batch = items(&rid, 5);
    let res = app.post_batch(&json!(batch)).await;
    let got: Vec<String> = data(&res)
        .as_array()
        .expect("data is an array of ids")
        .iter()
        .map(|v| v.as_str().expect("id string").to_owned())
        .collect();
    assert_eq!(got.len(), 5);
    for (i, id) in got.iter().enumerate() {
        assert_ulid(id);
        let e = app.get_one("events", id).await;
        assert_eq!(e["name"], json!(format!("unit-{i}")), "id {i} is item {i}");
        assert_eq!(e["success"], json!(i % 2 == 0));
        assert_eq!(e["event_receiver"], app.get_one("receivers", &rid).await);
    }
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted, "ids increase in input order");
    assert_eq!(ids(&app.list_all("/api/v1/events").await), got);
}

#[tokio::test]
async fn payloads_are_kept_exactly() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let body = format!(
        r#"[{{"name":"n","version":"1","release":"r","platform_id":"p","package":"k",
             "description":"d","event_receiver_id":"{rid}","payload":{{ "b" : 1.10, "a" : 2 }}}}]"#
    );
    let (status, text) = app.post_text("/api/v1/batch/events", &body).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let id = parse_body(&text)["data"][0].as_str().unwrap().to_owned();
    let (_, text) = app.get_text(&format!("/api/v1/events/{id}")).await;
    assert!(text.contains(r#""payload":{"b":1.10,"a":2}"#), "{text}");
}

#[tokio::test]
async fn body_must_be_an_array() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    for body in [
        event_body(&rid, &Unit::new("u"), true),
        json!("events"),
        json!(5),
    ] {
        let errs = errors(&app.post_batch(&body).await, StatusCode::BAD_REQUEST);
        assert!(errs[0].starts_with("body: "), "{body}: {errs:?}");
    }
    assert!(app.list_all("/api/v1/events").await.is_empty());
}

#[tokio::test]
async fn empty_batch_is_rejected() {
    let app = spawn_app().await;
    let errs = errors(&app.post_batch(&json!([])).await, StatusCode::BAD_REQUEST);
    assert_field_errors(&errs);
}

#[tokio::test]
async fn a_thousand_items_are_accepted_and_1001_are_not() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;

    let res = app.post_batch(&json!(items(&rid, 1001))).await;
    let errs = errors(&res, StatusCode::BAD_REQUEST);
    assert_field_errors(&errs);
    assert!(
        app.list_all("/api/v1/events?limit=1000").await.is_empty(),
        "nothing stored"
    );

    let res = app.post_batch(&json!(items(&rid, 1000))).await;
    assert_eq!(data(&res).as_array().unwrap().len(), 1000);
    assert_eq!(app.list_all("/api/v1/events?limit=1000").await.len(), 1000);
}

#[tokio::test]
async fn an_invalid_item_is_named_by_index_and_nothing_is_stored() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let mut batch = items(&rid, 4);
    batch[2]["name"] = json!("  ");
    let errs = errors(
        &app.post_batch(&json!(batch)).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(errs, ["[2].name: must not be blank"]);
    assert!(app.list_all("/api/v1/events").await.is_empty());
}

#[tokio::test]
async fn every_invalid_item_is_reported() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let mut batch = items(&rid, 5);
    batch[0].as_object_mut().unwrap().remove("payload");
    batch[3]["event_receiver_id"] = json!(UNKNOWN_ID);
    batch[4]["success"] = json!("no");
    let errs = errors(
        &app.post_batch(&json!(batch)).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(
        errs.contains(&"[0].payload: is required".to_owned()),
        "{errs:?}"
    );
    assert!(
        errs.contains(&format!(
            "[3].event_receiver_id: no event receiver with id \"{UNKNOWN_ID}\""
        )),
        "{errs:?}"
    );
    assert!(
        errs.contains(&"[4].success: must be a boolean".to_owned()),
        "{errs:?}"
    );
    assert_eq!(errs.len(), 3, "{errs:?}");
    assert!(app.list_all("/api/v1/events").await.is_empty());
}

#[tokio::test]
async fn schema_violations_are_prefixed_by_index() {
    let app = spawn_app().await;
    let rid = app
        .create_receiver_with_schema(json!({
            "type": "object",
            "properties": {"build_id": {"type": "string"}}
        }))
        .await;
    let mut batch = items(&rid, 3);
    batch[1]["payload"] = json!({"build_id": 1});
    let errs = errors(
        &app.post_batch(&json!(batch)).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].starts_with("[1].payload/build_id: "), "{errs:?}");
    assert!(app.list_all("/api/v1/events").await.is_empty());
}

#[tokio::test]
async fn a_non_object_item_is_named_by_index() {
    let app = spawn_app().await;
    let rid = app.create_receiver().await;
    let mut batch = items(&rid, 3);
    batch[1] = json!(42);
    let errs = errors(
        &app.post_batch(&json!(batch)).await,
        StatusCode::BAD_REQUEST,
    );
    assert!(errs.iter().all(|e| e.starts_with("[1]")), "{errs:?}");
    assert!(app.list_all("/api/v1/events").await.is_empty());
}
