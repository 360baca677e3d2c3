//! Grants, ownership, login lockout and rate limits, the audit log.

use crate::auth_support::*;
use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// The GraphQL mutation posting one event to a receiver.
fn gql_create_event(receiver: &str) -> String {
    format!(
        r#"mutation {{ create_event(event: {{name: "gql", version: "1", release: "r", platform_id: "p", package: "k", description: "d", payload: {{}}, success: true, event_receiver_id: "{receiver}"}}) }}"#
    )
}

#[tokio::test]
async fn a_producer_posts_only_where_granted() {
    let app = spawn_app().await;
    let ra = app.create_receiver().await;
    let rb = app.create_receiver().await;
    let (pid, producer) = create_key(&app, &["producer"]).await;
    let principal = format!("key:{pid}");
    let unit = Unit::new("svc");
    let post = |r: &str| {
        let body = event_body(r, &unit, true);
        let (producer, app) = (&producer, &app);
        async move { post_as(producer, app, "/api/v1/events", &body).await }
    };

    // Without a grant: nowhere, and nothing is stored.
    let a = post(&ra).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(event_count(&app).await, 0);
    let denied = audit(&app, "action=permission.denied").await;
    assert!(
        denied.iter().any(|e| e["actor"] == json!(principal)
            && e["target"] == json!(format!("receiver:{ra}"))
            && e["detail"] == json!("needs events:create")),
        "{denied:?}"
    );
    // Nor may it make receivers or groups.
    let a = post_as(
        &producer,
        &app,
        "/api/v1/receivers",
        &receiver_body("p", json!({})),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    let a = post_as(&producer, &app, "/api/v1/groups", &group_body(&[&ra], true)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(receiver_count(&app).await, 2);
    assert!(app.list_all("/api/v1/groups").await.is_empty());

    // Granted on A: A yes, B still no.
    let grant = grant_receiver(&app, &principal, &ra, &["events:create"]).await;
    let a = post(&ra).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let posted = a.body["data"].as_str().unwrap().to_owned();
    let a = post(&rb).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(event_count(&app).await, 1);

    // A batch with one ungranted item is refused whole.
    let batch = json!([
        event_body(&ra, &unit, true),
        event_body(&rb, &unit, true),
        event_body(&ra, &unit, false)
    ]);
    let a = post_as(&producer, &app, "/api/v1/batch/events", &batch).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(
        event_count(&app).await,
        1,
        "nothing of the refused batch is stored"
    );
    let batch = json!([event_body(&ra, &unit, true), event_body(&ra, &unit, false)]);
    let a = post_as(&producer, &app, "/api/v1/batch/events", &batch).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(event_count(&app).await, 3);

    // GraphQL enforces the same.
    let (_, body) = graphql_as(Some(&producer), &app, &gql_create_event(&rb)).await;
    assert_eq!(graphql_codes(&body), ["FORBIDDEN"], "{body}");
    let (_, body) = graphql_as(Some(&producer), &app, &gql_create_event(&ra)).await;
    assert!(
        body["errors"].as_array().is_none_or(Vec::is_empty),
        "{body}"
    );
    assert!(body["data"]["create_event"].is_string(), "{body}");
    assert_eq!(event_count(&app).await, 4);

    // Deleting the grant takes it away at once.
    let res = app.delete(&format!("/api/v1/grants/{grant}")).await;
    assert_eq!(data(&res)["id"], json!(grant));
    let a = post(&ra).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    let (_, body) = graphql_as(Some(&producer), &app, &gql_create_event(&ra)).await;
    assert_eq!(graphql_codes(&body), ["FORBIDDEN"], "{body}");
    assert_eq!(event_count(&app).await, 4);
    // What was posted while granted stays.
    app.get_one("events", &posted).await;
}

#[tokio::test]
async fn a_custom_role_may_post_to_the_receivers_it_owns() {
    let app = spawn_app().await;
    let foreign = app.create_receiver().await;
    let res = app
        .post(
            "/api/v1/roles",
            &json!({"name": "publisher", "permissions": ["receivers:create"], "on_grant": ["events:create"]}),
        )
        .await;
    assert_eq!(created(&res)["on_grant"], json!(["events:create"]));
    let (_, key) = create_key(&app, &["publisher"]).await;
    let a = post_as(
        &key,
        &app,
        "/api/v1/receivers",
        &receiver_body("own", json!({})),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let own = a.body["data"].as_str().unwrap().to_owned();
    let unit = Unit::new("svc");
    let a = post_as(&key, &app, "/api/v1/events", &event_body(&own, &unit, true)).await;
    assert_eq!(a.status, StatusCode::OK, "owner posts: {}", a.body);
    let a = post_as(
        &key,
        &app,
        "/api/v1/events",
        &event_body(&foreign, &unit, true),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "not the owner: {}", a.body);
    // It holds no read permission: listing is refused.
    let a = get_as(&key, &app, "/api/v1/receivers").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(event_count(&app).await, 1);
}

#[tokio::test]
async fn repeated_wrong_passwords_lock_the_account_until_unlocked() {
    let app = spawn_app_with(|s| s.auth_login_max_failures = 3).await;
    create_user(&app, "frank", &["reader"]).await;
    for i in 0..3 {
        let a = login_raw(&app, "frank", "wrong password!").await;
        assert_unauthorized(&a, &format!("wrong password {i}"));
    }
    let a = login_raw(&app, "frank", PASSWORD).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    let wait: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(wait >= 1, "Retry-After {wait}");
    assert!(a.body["data"].is_null());
    assert!(audited(&app, "auth.lockout", "user:frank").await);
    let res = app.get("/api/v1/users/frank").await;
    assert!(data(&res)["locked_until"].is_string());

    let res = app
        .patch("/api/v1/users/frank", &json!({"unlock": true}))
        .await;
    assert!(data(&res)["locked_until"].is_null(), "{}", res.1);
    let a = login_raw(&app, "frank", PASSWORD).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn login_attempts_per_address_are_rate_limited() {
    let app = spawn_app_with(|s| s.auth_login_attempts_per_minute = 3).await;
    create_user(&app, "gina", &["reader"]).await;
    for _ in 0..3 {
        let a = login_raw(&app, "gina", "not her password").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    }
    // Over budget: refused even with the right password.
    let a = login_raw(&app, "gina", PASSWORD).await;
    assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
    let wait: u64 = a.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    // The account itself is not locked (3 failures < 5).
    let res = app.get("/api/v1/users/gina").await;
    assert!(data(&res)["locked_until"].is_null());
}

#[tokio::test]
async fn the_audit_log_records_who_did_what_from_where() {
    let app = spawn_app().await;
    let admin_id = cairn_auth::apikey::parse(app.admin_key.as_deref().unwrap())
        .unwrap()
        .0
        .to_owned();
    let admin = format!("key:{admin_id}");
    let r = app.create_receiver().await;
    let admin_client = client_with(app.admin_key.as_deref());
    let anon = new_client();
    let as_admin = |m: Method, path: &'static str, body: Option<Value>, rid: &'static str| {
        let c = admin_client.clone();
        let app = &app;
        async move { send_with(&c, app, m, path, body.as_ref(), &[("x-request-id", rid)]).await }
    };

    let a = as_admin(
        Method::POST,
        "/api/v1/users",
        Some(json!({"name": "hank", "password": PASSWORD, "roles": ["reader"]})),
        "rid-user-create",
    )
    .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let a = as_admin(
        Method::PATCH,
        "/api/v1/users/hank",
        Some(json!({"roles": ["producer"]})),
        "rid-user-update",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let login_body = |p: &str| json!({"username": "hank", "password": p});
    let a = send_with(
        &anon,
        &app,
        Method::POST,
        "/api/v1/auth/login",
        Some(&login_body(PASSWORD)),
        &[("x-request-id", "rid-login-ok")],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = send_with(
        &anon,
        &app,
        Method::POST,
        "/api/v1/auth/login",
        Some(&login_body("wrong wrong")),
        &[("x-request-id", "rid-login-bad")],
    )
    .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let a = as_admin(
        Method::POST,
        "/api/v1/keys",
        Some(json!({"name": "k", "roles": ["reader"]})),
        "rid-key-create",
    )
    .await;
    let reader_id = a.body["data"]["id"].as_str().unwrap().to_owned();
    let reader_key = a.body["data"]["key"].as_str().unwrap().to_owned();
    let a = send_with(
        &client_with(Some(&reader_key)),
        &app,
        Method::GET,
        "/api/v1/users",
        None,
        &[("x-request-id", "rid-denied")],
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    let a = send_with(
        &admin_client,
        &app,
        Method::POST,
        "/api/v1/grants",
        Some(
            &json!({"principal": "user:hank", "receiver_id": r, "permissions": ["events:create"]}),
        ),
        &[("x-request-id", "rid-grant-create")],
    )
    .await;
    let grant = a.body["data"]["id"].as_str().unwrap().to_owned();
    let a = send_with(
        &admin_client,
        &app,
        Method::DELETE,
        &format!("/api/v1/grants/{grant}"),
        None,
        &[("x-request-id", "rid-grant-delete")],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let a = send_with(
        &admin_client,
        &app,
        Method::DELETE,
        &format!("/api/v1/keys/{reader_id}"),
        None,
        &[("x-request-id", "rid-key-revoke")],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);

    let reader = format!("key:{reader_id}");
    let hank = "user:hank".to_owned();
    let receiver = format!("receiver:{r}");
    let reader_key_target = format!("key:{reader_id}");
    // request id -> (actor, action, target, outcome)
    let expected = [
        (
            "rid-user-create",
            admin.as_str(),
            "user.create",
            hank.as_str(),
            "success",
        ),
        (
            "rid-user-update",
            admin.as_str(),
            "user.update",
            hank.as_str(),
            "success",
        ),
        (
            "rid-login-ok",
            // A successful login names the user as the actor.
            hank.as_str(),
            "auth.login",
            hank.as_str(),
            "success",
        ),
        (
            "rid-login-bad",
            "unauthenticated",
            "auth.login",
            hank.as_str(),
            "failure",
        ),
        (
            "rid-key-create",
            admin.as_str(),
            "key.create",
            reader_key_target.as_str(),
            "success",
        ),
        (
            "rid-denied",
            reader.as_str(),
            "permission.denied",
            "",
            "denied",
        ),
        (
            "rid-grant-create",
            admin.as_str(),
            "grant.create",
            receiver.as_str(),
            "success",
        ),
        (
            "rid-grant-delete",
            admin.as_str(),
            "grant.delete",
            receiver.as_str(),
            "success",
        ),
        (
            "rid-key-revoke",
            admin.as_str(),
            "key.revoke",
            reader_key_target.as_str(),
            "success",
        ),
    ];
    let all = audit(&app, "").await;
    for (rid, actor, action, target, outcome) in expected {
        let e = all
            .iter()
            .find(|e| e["request_id"] == json!(rid))
            .unwrap_or_else(|| panic!("no audit entry with request id {rid}: {all:?}"));
        assert_eq!(e["actor"], json!(actor), "{rid}: {e}");
        assert_eq!(e["action"], json!(action), "{rid}: {e}");
        assert_eq!(e["target"], json!(target), "{rid}: {e}");
        assert_eq!(e["outcome"], json!(outcome), "{rid}: {e}");
        assert_eq!(e["client_addr"], json!("127.0.0.1"), "{rid}: {e}");
        assert_timestamp(&e["at"]);
    }
    // Newest first.
    let seqs: Vec<u64> = all.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "{seqs:?}");

    // Filters.
    let keys = audit(&app, "action=key.create").await;
    assert!(
        keys.len() >= 2,
        "the bootstrap key and the reader key: {keys:?}"
    );
    assert!(keys.iter().all(|e| e["action"] == json!("key.create")));
    let by_reader = audit(&app, &format!("actor={}", enc(&reader))).await;
    assert!(!by_reader.is_empty());
    assert!(
        by_reader.iter().all(|e| e["actor"] == json!(reader)),
        "{by_reader:?}"
    );
    let failures = audit(&app, "outcome=failure").await;
    assert!(
        failures
            .iter()
            .any(|e| e["request_id"] == json!("rid-login-bad"))
    );
    assert!(failures.iter().all(|e| e["outcome"] == json!("failure")));

    // A reader may not read it.
    let (_, reader2) = create_key(&app, &["reader"]).await;
    let a = get_as(&reader2, &app, "/api/v1/audit").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
}
