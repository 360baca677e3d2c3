use crate::helpers::*;
use reqwest::StatusCode;
use serde_json::{Value, json};

async fn add(app: &TestApp, group: &str, receivers: Value) -> Response {
    app.post(
        &format!("/api/v1/groups/{group}/receivers"),
        &json!({ "event_receiver_ids": receivers }),
    )
    .await
}

async fn remove(app: &TestApp, group: &str, receiver: &str) -> Response {
    app.delete(&format!("/api/v1/groups/{group}/receivers/{receiver}"))
        .await
}

#[tokio::test]
async fn adding_returns_the_group_with_the_new_receivers_appended() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let c = app.create_receiver().await;
    let g = app.create_group(&[&a], true).await;
    let before = app.get_one("groups", &g).await;
    tick().await;
    let res = add(&app, &g, json!([c, b])).await;
    let group = data(&res);
    assert!(group.is_object(), "data is the group object: {group}");
    assert_eq!(group["id"], json!(g));
    assert_eq!(group["event_receiver_ids"], json!([a, c, b]));
    assert_eq!(group["enabled"], json!(true));
    assert_eq!(group["created_at"], before["created_at"]);
    assert!(
        group["updated_at"].as_str() > before["updated_at"].as_str(),
        "a receiver change bumps updated_at"
    );
    assert_eq!(&app.get_one("groups", &g).await, group);
}

#[tokio::test]
async fn adding_existing_members_is_ignored() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let c = app.create_receiver().await;
    let g = app.create_group(&[&a, &b], false).await;
    let res = add(&app, &g, json!([b, c, a, c])).await;
    assert_eq!(data(&res)["event_receiver_ids"], json!([a, b, c]));
    let res = add(&app, &g, json!([a])).await;
    assert_eq!(data(&res)["event_receiver_ids"], json!([a, b, c]));
}

#[tokio::test]
async fn adding_only_existing_members_is_not_a_change() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let g = app.create_group(&[&a, &b], true).await;
    let before = app.get_one("groups", &g).await;
    tick().await;
    let res = add(&app, &g, json!([b, a])).await;
    assert_eq!(data(&res), &before, "the group is returned unchanged");
    let after = app.get_one("groups", &g).await;
    assert_eq!(
        after["updated_at"], after["created_at"],
        "ignored duplicates are not a change: {after}"
    );
}

#[tokio::test]
async fn adding_an_unknown_receiver_is_rejected_and_changes_nothing() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let g = app.create_group(&[&a], true).await;
    let before = app.get_one("groups", &g).await;
    let errs = errors(
        &add(&app, &g, json!([b, UNKNOWN_ID])).await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(
        errs,
        [format!(
            "event_receiver_ids[1]: no event receiver with id \"{UNKNOWN_ID}\""
        )]
    );
    assert_eq!(app.get_one("groups", &g).await, before);
}

#[tokio::test]
async fn adding_requires_a_non_empty_list() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let g = app.create_group(&[&a], true).await;
    let errs = errors(&add(&app, &g, json!([])).await, StatusCode::BAD_REQUEST);
    assert!(errs[0].starts_with("event_receiver_ids: "), "{errs:?}");
    let errs = errors(
        &app.post(&format!("/api/v1/groups/{g}/receivers"), &json!({}))
            .await,
        StatusCode::BAD_REQUEST,
    );
    assert_eq!(errs, ["event_receiver_ids: is required"]);
}

#[tokio::test]
async fn adding_to_an_unknown_group_is_404() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    errors(
        &add(&app, UNKNOWN_ID, json!([a])).await,
        StatusCode::NOT_FOUND,
    );
    errors(&add(&app, "bogus", json!([a])).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn removing_returns_the_group_after_removal() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let c = app.create_receiver().await;
    let g = app.create_group(&[&a, &b, &c], true).await;
    let before = app.get_one("groups", &g).await;
    tick().await;
    let res = remove(&app, &g, &b).await;
    let group = data(&res);
    assert_eq!(group["id"], json!(g));
    assert_eq!(group["event_receiver_ids"], json!([a, c]));
    assert!(group["updated_at"].as_str() > before["updated_at"].as_str());
    assert_eq!(&app.get_one("groups", &g).await, group);
    // The receiver itself still exists.
    app.get_one("receivers", &b).await;
}

#[tokio::test]
async fn removing_the_last_receiver_is_rejected() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let g = app.create_group(&[&a, &b], true).await;
    data(&remove(&app, &g, &a).await);
    let before = app.get_one("groups", &g).await;
    let errs = errors(&remove(&app, &g, &b).await, StatusCode::BAD_REQUEST);
    assert_field_errors(&errs);
    assert_eq!(app.get_one("groups", &g).await, before);
    assert_eq!(before["event_receiver_ids"], json!([b]));
}

#[tokio::test]
async fn removing_a_receiver_not_in_the_group_is_404() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let g = app.create_group(&[&a], true).await;
    errors(&remove(&app, &g, &b).await, StatusCode::NOT_FOUND);
    errors(&remove(&app, &g, UNKNOWN_ID).await, StatusCode::NOT_FOUND);
    errors(&remove(&app, &g, "bogus").await, StatusCode::NOT_FOUND);
    assert_eq!(
        app.get_one("groups", &g).await["event_receiver_ids"],
        json!([a])
    );
}

#[tokio::test]
async fn removing_from_an_unknown_group_is_404() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    errors(&remove(&app, UNKNOWN_ID, &a).await, StatusCode::NOT_FOUND);
    errors(&remove(&app, "bogus", &a).await, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_removed_receiver_can_be_added_back_at_the_end() {
    let app = spawn_app().await;
    let a = app.create_receiver().await;
    let b = app.create_receiver().await;
    let g = app.create_group(&[&a, &b], false).await;
    data(&remove(&app, &g, &a).await);
    let res = add(&app, &g, json!([a])).await;
    assert_eq!(data(&res)["event_receiver_ids"], json!([b, a]));
}
