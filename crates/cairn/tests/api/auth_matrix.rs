//! The permission matrix: every built-in role against every route (REST
//! and GraphQL, subscriptions included), with API keys and with the
//! access tokens of logged-in users; and what a caller without credentials
//! may reach. The tables below are the specification: route -> the roles
//! allowed. Allowed means any answer but 401/403 (a route may still say
//! 400/404 about its input); denied means 403 and nothing stored.

use crate::auth_support::*;
use crate::helpers::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::Duration;

const A: &str = "admin";
const M: &str = "maintainer";
const P: &str = "producer";
const R: &str = "reader";
const ALL: &[&str] = &[A, M, P, R];
const REGISTRY_WRITERS: &[&str] = &[A, M];
const ADMIN: &[&str] = &[A];

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Access {
    /// These roles; every other authenticated caller gets 403, an
    /// unauthenticated one 401.
    Roles(&'static [&'static str]),
    /// Under /api/v1 but needs no credentials (login, refresh, JWKS, the
    /// GraphQL IDE).
    Public,
    /// Outside /api/v1: health and metrics, open to everyone.
    Open,
}

struct Route {
    method: Method,
    path: String,
    body: Option<Value>,
    access: Access,
}

fn route(method: Method, path: impl Into<String>, body: Option<Value>, access: Access) -> Route {
    Route {
        method,
        path: path.into(),
        body,
        access,
    }
}

/// What the matrix acts on, made by the admin before it runs.
struct Fixtures {
    r0: String,
    r1: String,
    /// A receiver in no group.
    r2: String,
    g0: String,
    e0: String,
    unit: Unit,
    spare_key: String,
    spare_grant: String,
}

/// Users and keys of every built-in role; receivers, a group, an event,
/// and identities the identity routes may change.
async fn fixtures(app: &TestApp) -> Fixtures {
    let r0 = app.create_receiver().await;
    let r1 = app.create_receiver().await;
    let r2 = app.create_receiver().await;
    let g0 = app.create_group(&[&r0, &r1], true).await;
    let unit = Unit::new("matrix");
    let e0 = app.create_event(&r0, &unit, true).await;
    for role in ROLES {
        create_user(app, &format!("u-{role}"), &[role]).await;
    }
    create_user(app, "login-probe", &["reader"]).await;
    create_user(app, "victim", &["reader"]).await;
    create_user(app, "doomed", &["reader"]).await;
    let (spare_key, _) = create_key(app, &["reader"]).await;
    let res = app
        .post(
            "/api/v1/roles",
            &json!({"name": "spare-role", "permissions": ["events:read"]}),
        )
        .await;
    created(&res);
    let spare_grant =
        grant_receiver(app, &format!("key:{spare_key}"), &r0, &["events:create"]).await;
    Fixtures {
        r0,
        r1,
        r2,
        g0,
        e0,
        unit,
        spare_key,
        spare_grant,
    }
}

/// Every route of `routes/mod.rs` with the roles allowed on it. Logout is
/// last: it ends the caller's session.
fn rest_table(f: &Fixtures) -> Vec<Route> {
    use Access::*;
    use Method as H;
    let event = event_body(&f.r0, &Unit::new("matrix-write"), true);
    let status = format!("/api/v1/groups/{}/status?{}", f.g0, f.unit.query());
    vec![
        // the registry
        route(
            H::POST,
            "/api/v1/receivers",
            Some(receiver_body("m", json!({}))),
            Roles(REGISTRY_WRITERS),
        ),
        route(H::GET, "/api/v1/receivers", None, Roles(ALL)),
        route(
            H::GET,
            format!("/api/v1/receivers/{}", f.r0),
            None,
            Roles(ALL),
        ),
        route(
            H::POST,
            "/api/v1/events",
            Some(event.clone()),
            Roles(REGISTRY_WRITERS),
        ),
        route(H::GET, "/api/v1/events", None, Roles(ALL)),
        route(H::GET, format!("/api/v1/events/{}", f.e0), None, Roles(ALL)),
        route(
            H::POST,
            "/api/v1/batch/events",
            Some(json!([event])),
            Roles(REGISTRY_WRITERS),
        ),
        route(
            H::POST,
            "/api/v1/groups",
            Some(group_body(&[&f.r0], true)),
            Roles(REGISTRY_WRITERS),
        ),
        route(H::GET, "/api/v1/groups", None, Roles(ALL)),
        route(H::GET, format!("/api/v1/groups/{}", f.g0), None, Roles(ALL)),
        route(
            H::PATCH,
            format!("/api/v1/groups/{}", f.g0),
            Some(json!({"enabled": true})),
            Roles(REGISTRY_WRITERS),
        ),
        route(
            H::POST,
            format!("/api/v1/groups/{}/receivers", f.g0),
            Some(json!({"event_receiver_ids": [f.r1]})),
            Roles(REGISTRY_WRITERS),
        ),
        route(
            H::DELETE,
            format!("/api/v1/groups/{}/receivers/{}", f.g0, f.r2),
            None,
            Roles(REGISTRY_WRITERS),
        ),
        route(H::GET, status, None, Roles(ALL)),
        route(
            H::GET,
            format!("/api/v1/groups/{}/completions", f.g0),
            None,
            Roles(ALL),
        ),
        // operators
        route(
            H::GET,
            "/api/v1/admin/dead-letters",
            None,
            Roles(REGISTRY_WRITERS),
        ),
        route(
            H::POST,
            "/api/v1/admin/dead-letters/nosink/1/replay",
            None,
            Roles(REGISTRY_WRITERS),
        ),
        // authentication
        route(
            H::POST,
            "/api/v1/auth/login",
            Some(json!({"username": "login-probe", "password": PASSWORD})),
            Public,
        ),
        // The body is replaced by a fresh refresh token when sent.
        route(H::POST, "/api/v1/auth/refresh", None, Public),
        route(H::GET, "/api/v1/auth/whoami", None, Roles(ALL)),
        route(H::GET, "/api/v1/auth/jwks", None, Public),
        route(
            H::POST,
            "/api/v1/auth/signing-keys/rotate",
            None,
            Roles(ADMIN),
        ),
        // identities
        route(
            H::POST,
            "/api/v1/users",
            Some(json!({"name": "made-by-matrix", "password": PASSWORD, "roles": ["reader"]})),
            Roles(ADMIN),
        ),
        route(H::GET, "/api/v1/users", None, Roles(ADMIN)),
        route(H::GET, "/api/v1/users/victim", None, Roles(ADMIN)),
        route(
            H::PATCH,
            "/api/v1/users/victim",
            Some(json!({"disabled": false})),
            Roles(ADMIN),
        ),
        route(H::DELETE, "/api/v1/users/doomed", None, Roles(ADMIN)),
        route(
            H::POST,
            "/api/v1/keys",
            Some(json!({"name": "m", "roles": ["reader"]})),
            Roles(ADMIN),
        ),
        route(H::GET, "/api/v1/keys", None, Roles(ADMIN)),
        route(
            H::GET,
            format!("/api/v1/keys/{}", f.spare_key),
            None,
            Roles(ADMIN),
        ),
        route(
            H::DELETE,
            format!("/api/v1/keys/{}", f.spare_key),
            None,
            Roles(ADMIN),
        ),
        route(
            H::POST,
            "/api/v1/roles",
            Some(json!({"name": "matrix-made", "permissions": ["events:read"]})),
            Roles(ADMIN),
        ),
        route(H::GET, "/api/v1/roles", None, Roles(ADMIN)),
        route(H::GET, "/api/v1/roles/spare-role", None, Roles(ADMIN)),
        route(H::DELETE, "/api/v1/roles/spare-role", None, Roles(ADMIN)),
        route(
            H::POST,
            "/api/v1/grants",
            Some(
                json!({"principal": "user:victim", "receiver_id": f.r0, "permissions": ["events:read"]}),
            ),
            Roles(ADMIN),
        ),
        route(H::GET, "/api/v1/grants", None, Roles(ADMIN)),
        route(
            H::DELETE,
            format!("/api/v1/grants/{}", f.spare_grant),
            None,
            Roles(ADMIN),
        ),
        route(H::GET, "/api/v1/audit", None, Roles(ADMIN)),
        // the GraphQL IDE and its assets
        route(H::GET, "/api/v1/graphql", None, Public),
        route(
            H::GET,
            "/api/v1/graphql/assets/graphiql.min.js",
            None,
            Public,
        ),
        // outside /api/v1
        route(H::GET, "/healthz/liveness", None, Open),
        route(H::GET, "/healthz/readiness", None, Open),
        route(H::GET, "/healthz/status", None, Open),
        route(H::GET, "/metrics", None, Open),
        // Any session holder may end its session (an API key has none: 400).
        route(H::POST, "/api/v1/auth/logout", None, Roles(ALL)),
    ]
}

/// Everything a write could have changed, read by the admin.
async fn snapshot(app: &TestApp, f: &Fixtures) -> Value {
    // The fields of each item that a write could change (not the ones
    // reads change, like last_used_at), sorted.
    async fn items(app: &TestApp, path: &str, keys: &[&str]) -> Vec<Value> {
        let mut v: Vec<Value> = app
            .list_all(&format!("{path}?limit=1000"))
            .await
            .iter()
            .map(|i| Value::Array(keys.iter().map(|k| i[*k].clone()).collect()))
            .collect();
        v.sort_by_key(|x| x.to_string());
        v
    }
    json!({
        "receivers": items(app, "/api/v1/receivers", &["id"]).await,
        "events": items(app, "/api/v1/events", &["id"]).await,
        "groups": items(app, "/api/v1/groups", &["id", "enabled", "event_receiver_ids"]).await,
        "g0": app.get_one("groups", &f.g0).await,
        "users": items(app, "/api/v1/users", &["name", "roles", "disabled"]).await,
        "keys": items(app, "/api/v1/keys", &["id", "roles", "revoked_at"]).await,
        "roles": items(app, "/api/v1/roles", &["name"]).await,
        "grants": items(app, "/api/v1/grants", &["id"]).await,
        "jwks": app.get("/api/v1/auth/jwks").await.1["data"].clone(),
    })
}

/// Send one route as `client`; a fresh refresh token goes to /refresh.
async fn call(app: &TestApp, client: &reqwest::Client, r: &Route) -> Answer {
    let body = if r.path == "/api/v1/auth/refresh" {
        let pair = login(app, "login-probe").await;
        Some(json!({"refresh_token": pair["refresh_token"]}))
    } else {
        r.body.clone()
    };
    send_as(client, app, r.method.clone(), &r.path, body.as_ref()).await
}

/// Run the whole REST table for each caller `(label, role, token)`.
async fn run_rest_matrix(app: &TestApp, f: &Fixtures, callers: &[(String, &'static str, String)]) {
    let table = rest_table(f);
    let mut cells = 0;
    for (label, role, token) in callers {
        let client = client_with(Some(token));
        let allowed_for = |r: &Route| match r.access {
            Access::Roles(roles) => roles.contains(role),
            Access::Public | Access::Open => true,
        };
        // Roles allowed no write (logout and the public routes aside) must
        // leave everything as it was.
        let writes_allowed = table.iter().any(|r| {
            allowed_for(r)
                && r.method != Method::GET
                && r.access != Access::Public
                && r.path != "/api/v1/auth/logout"
        });
        let before = if writes_allowed {
            None
        } else {
            Some(snapshot(app, f).await)
        };
        for r in &table {
            let allowed = allowed_for(r);
            let a = call(app, &client, r).await;
            let cell = format!("{label} {} {}", r.method, r.path);
            if allowed {
                assert!(
                    !matches!(a.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                    "{cell}: allowed, got {} {}",
                    a.status,
                    a.body
                );
                assert!(a.status.as_u16() < 500, "{cell}: {} {}", a.status, a.body);
            } else {
                assert_eq!(
                    a.status,
                    StatusCode::FORBIDDEN,
                    "{cell}: denied, body {}",
                    a.body
                );
                assert!(
                    a.body["data"].is_null(),
                    "{cell}: nothing served: {}",
                    a.body
                );
                let errs = assert_envelope_error(&a.body);
                assert!(errs[0].starts_with("forbidden"), "{cell}: {errs:?}");
            }
            cells += 1;
        }
        if let Some(before) = before {
            // Every write was refused: nothing changed.
            assert_eq!(
                snapshot(app, f).await,
                before,
                "{label}: a refused write changed something"
            );
        }
    }
    assert_eq!(cells, table.len() * callers.len());
}

#[tokio::test]
async fn rest_matrix_for_api_keys_of_every_role() {
    let app = spawn_app_with(|s| s.auth_login_attempts_per_minute = 10_000).await;
    let f = fixtures(&app).await;
    let mut callers = Vec::new();
    for role in ROLES {
        let (_, key) = create_key(&app, &[role]).await;
        callers.push((format!("key({role})"), role, key));
    }
    run_rest_matrix(&app, &f, &callers).await;
    // The refusals are in the audit log.
    let denied = audit(&app, "action=permission.denied").await;
    assert!(
        denied
            .iter()
            .any(|e| e["detail"] == json!("needs users:read"))
    );
    assert!(denied.iter().all(|e| e["outcome"] == json!("denied")));
}

#[tokio::test]
async fn rest_matrix_for_access_tokens_of_users_of_every_role() {
    let app = spawn_app_with(|s| s.auth_login_attempts_per_minute = 10_000).await;
    let f = fixtures(&app).await;
    let mut callers = Vec::new();
    for role in ROLES {
        let token = access_token(&app, &format!("u-{role}")).await;
        callers.push((format!("user({role})"), role, token));
    }
    run_rest_matrix(&app, &f, &callers).await;
    // The last route, logout, ended each session: the tokens are refused now.
    for (label, _, token) in &callers {
        let a = get_as(token, &app, "/api/v1/auth/whoami").await;
        assert_unauthorized(&a, label);
    }
}

#[tokio::test]
async fn without_credentials_every_api_route_is_401_but_the_public_ones() {
    let app = spawn_app().await;
    let f = fixtures(&app).await;
    let anonymous = new_client();
    for r in rest_table(&f) {
        let a = call(&app, &anonymous, &r).await;
        let cell = format!("anonymous {} {}", r.method, r.path);
        match r.access {
            Access::Roles(_) => assert_unauthorized(&a, &cell),
            Access::Public | Access::Open => {
                assert_eq!(a.status, StatusCode::OK, "{cell}: {}", a.body)
            }
        }
    }
    // GraphQL queries, mutations and subscriptions too.
    let a = send_as(
        &anonymous,
        &app,
        Method::POST,
        "/api/v1/graphql/query",
        Some(&json!({"query": "{ event_receivers { id } }"})),
    )
    .await;
    assert_unauthorized(&a, "anonymous GraphQL query");
    let body = a.body;
    assert!(
        graphql_codes(&body).contains(&"UNAUTHENTICATED".to_owned()),
        "{body}"
    );
    let (status, body) = graphql_as(
        None,
        &app,
        r#"mutation { create_event_receiver(event_receiver: {name: "x", type: "t", version: "1", description: "d", schema: {}}) }"#,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (_ws, first) = ws_open(&app, None).await;
    assert!(
        first.is_none_or(|m| m["type"] != json!("connection_ack")),
        "a subscription socket without credentials is not acknowledged"
    );
    let (_ws, first) = ws_open(&app, Some(json!({"Authorization": "Bearer cairn_nope"}))).await;
    assert!(
        first.is_none_or(|m| m["type"] != json!("connection_ack")),
        "a subscription socket with bad credentials is not acknowledged"
    );
    assert_eq!(receiver_count(&app).await, 3, "nothing was created");
}

#[tokio::test]
async fn with_auth_off_every_route_is_open_and_no_admin_key_is_written() {
    let app = spawn_app_with(|s| s.auth = cairn::settings::AuthMode::Off).await;
    assert!(app.admin_key.is_none());
    assert!(!app.data_dir.path().join("admin.key").exists());
    // The fixtures are made without credentials too: app.client sends none.
    let f = fixtures(&app).await;
    let anonymous = new_client();
    // Routes whose input the table leaves for the route to refuse.
    let refused_by_the_route = [
        "/api/v1/auth/logout".to_owned(), // no session to end: 400
        "/api/v1/admin/dead-letters/nosink/1/replay".to_owned(), // 404
        format!("/api/v1/groups/{}/receivers/{}", f.g0, f.r2), // not a member
    ];
    for r in rest_table(&f) {
        let a = call(&app, &anonymous, &r).await;
        let cell = format!("anonymous {} {}", r.method, r.path);
        if refused_by_the_route.contains(&r.path) {
            assert!(
                a.status.is_client_error(),
                "{cell}: {} {}",
                a.status,
                a.body
            );
            assert!(
                !matches!(a.status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                "{cell}: {}",
                a.body
            );
        } else {
            assert!(a.status.is_success(), "{cell}: {} {}", a.status, a.body);
        }
    }
    let w = send_as(&anonymous, &app, Method::GET, "/api/v1/auth/whoami", None).await;
    assert_eq!(w.body["data"]["kind"], json!("anonymous"));
    for (field, query, _) in graphql_table(&f) {
        let (status, body) = graphql_as(None, &app, &query).await;
        assert_eq!(status, StatusCode::OK, "{field}: {body}");
        let codes = graphql_codes(&body);
        assert!(
            !codes
                .iter()
                .any(|c| c == "FORBIDDEN" || c == "UNAUTHENTICATED"),
            "{field}: {body}"
        );
    }
    // Subscriptions need no connection_init credentials either.
    let (_ws, first) = ws_open(&app, None).await;
    assert_eq!(first.unwrap()["type"], json!("connection_ack"));
}

// ---- GraphQL -----------------------------------------------------------------------

/// Every query and mutation with the roles allowed on it.
fn graphql_table(f: &Fixtures) -> Vec<(&'static str, String, &'static [&'static str])> {
    let u = &f.unit;
    vec![
        ("events_by_id", format!(r#"{{ events_by_id(id: "{}") {{ id }} }}"#, f.e0), ALL),
        ("event_receivers_by_id", format!(r#"{{ event_receivers_by_id(id: "{}") {{ id }} }}"#, f.r0), ALL),
        ("event_receiver_groups_by_id", format!(r#"{{ event_receiver_groups_by_id(id: "{}") {{ id }} }}"#, f.g0), ALL),
        ("events", "{ events { id } }".to_owned(), ALL),
        ("event_receivers", "{ event_receivers { id } }".to_owned(), ALL),
        ("event_receiver_groups", "{ event_receiver_groups { id } }".to_owned(), ALL),
        (
            "group_status",
            format!(
                r#"{{ group_status(id: "{}", name: "{}", version: "{}", release: "{}", platform_id: "{}", package: "{}") {{ complete }} }}"#,
                f.g0, u.name, u.version, u.release, u.platform_id, u.package
            ),
            ALL,
        ),
        ("group_completions", format!(r#"{{ group_completions(id: "{}") {{ event_id }} }}"#, f.g0), ALL),
        (
            "create_event",
            format!(
                r#"mutation {{ create_event(event: {{name: "gql", version: "1", release: "r", platform_id: "p", package: "k", description: "d", payload: {{}}, success: true, event_receiver_id: "{}"}}) }}"#,
                f.r0
            ),
            REGISTRY_WRITERS,
        ),
        (
            "create_event_receiver",
            r#"mutation { create_event_receiver(event_receiver: {name: "g", type: "t", version: "1", description: "d", schema: {}}) }"#.to_owned(),
            REGISTRY_WRITERS,
        ),
        (
            "create_event_receiver_group",
            format!(
                r#"mutation {{ create_event_receiver_group(event_receiver_group: {{name: "g", type: "t", version: "1", description: "d", enabled: true, event_receiver_ids: ["{}"]}}) }}"#,
                f.r0
            ),
            REGISTRY_WRITERS,
        ),
        ("set_event_receiver_group_enabled", format!(r#"mutation {{ set_event_receiver_group_enabled(id: "{}") }}"#, f.g0), REGISTRY_WRITERS),
        ("set_event_receiver_group_disabled", format!(r#"mutation {{ set_event_receiver_group_disabled(id: "{}") }}"#, f.g0), REGISTRY_WRITERS),
        (
            "add_event_receiver_group_receivers",
            format!(r#"mutation {{ add_event_receiver_group_receivers(id: "{}", event_receiver_ids: ["{}"]) {{ id }} }}"#, f.g0, f.r1),
            REGISTRY_WRITERS,
        ),
        (
            "remove_event_receiver_group_receiver",
            format!(r#"mutation {{ remove_event_receiver_group_receiver(id: "{}", event_receiver_id: "{}") {{ id }} }}"#, f.g0, f.r2),
            REGISTRY_WRITERS,
        ),
    ]
}

#[tokio::test]
async fn graphql_matrix_for_keys_and_user_tokens_of_every_role() {
    let app = spawn_app().await;
    let f = fixtures(&app).await;
    let mut callers = Vec::new();
    for role in ROLES {
        let (_, key) = create_key(&app, &[role]).await;
        callers.push((format!("key({role})"), role, key));
        let token = access_token(&app, &format!("u-{role}")).await;
        callers.push((format!("user({role})"), role, token));
    }
    let table = graphql_table(&f);
    for (label, role, token) in &callers {
        let may_mutate = table
            .iter()
            .any(|(_, q, allowed)| q.starts_with("mutation") && allowed.contains(role));
        let before = if may_mutate {
            None
        } else {
            Some(snapshot(&app, &f).await)
        };
        for (field, query, allowed) in &table {
            let (status, body) = graphql_as(Some(token), &app, query).await;
            let codes = graphql_codes(&body);
            let cell = format!("{label} {field}");
            if allowed.contains(role) {
                assert_eq!(status, StatusCode::OK, "{cell}: {body}");
                assert!(
                    !codes
                        .iter()
                        .any(|c| c == "FORBIDDEN" || c == "UNAUTHENTICATED"),
                    "{cell}: allowed, got {body}"
                );
            } else {
                assert_eq!(codes, ["FORBIDDEN"], "{cell}: denied, got {body}");
                assert!(
                    body["data"].is_null() || body["data"][*field].is_null(),
                    "{cell}: nothing served: {body}"
                );
            }
        }
        if let Some(before) = before {
            assert_eq!(
                snapshot(&app, &f).await,
                before,
                "{label}: a refused mutation stored something"
            );
        }
    }
}

#[tokio::test]
async fn subscriptions_are_authorised_by_role_over_graphql_transport_ws() {
    let app = spawn_app().await;
    // The users u-<role>.
    let _fixtures = fixtures(&app).await;
    // Subscriptions need events:read / groups:read: every built-in role
    // has them; a custom role reading only the audit log does not.
    let res = app
        .post(
            "/api/v1/roles",
            &json!({"name": "auditor", "permissions": ["audit:read"]}),
        )
        .await;
    created(&res);
    let mut callers = Vec::new();
    for role in ROLES {
        let (_, key) = create_key(&app, &[role]).await;
        callers.push((format!("key({role})"), role, key));
        let token = access_token(&app, &format!("u-{role}")).await;
        callers.push((format!("user({role})"), role, token));
    }
    let (_, auditor) = create_key(&app, &["auditor"]).await;
    callers.push(("key(auditor)".to_owned(), "auditor", auditor));

    let rs = app.create_receiver().await;
    let gs = app.create_group(&[&rs], true).await;
    let events = format!(
        r#"subscription {{ events_created(filter: {{event_receiver_id: "{rs}"}}) {{ id }} }}"#
    );
    let completions = format!(
        r#"subscription {{ group_completions(filter: {{event_receiver_group_id: "{gs}"}}) {{ event_id }} }}"#
    );
    let mut sockets = Vec::new();
    for (label, role, token) in &callers {
        let mut ws = ws_connect_as(&app, token).await;
        ws_subscribe(&mut ws, "ev", &events).await;
        ws_subscribe(&mut ws, "gc", &completions).await;
        sockets.push((label.clone(), *role, ws));
    }
    // The denied subscriptions are refused at once, with FORBIDDEN.
    for (label, role, ws) in sockets.iter_mut() {
        if ROLES.contains(role) {
            continue;
        }
        let mut refused = std::collections::BTreeSet::new();
        while refused.len() < 2 {
            let m = ws_next(ws, Duration::from_secs(10))
                .await
                .expect("an answer");
            if m["type"] == json!("complete") {
                continue;
            }
            assert_eq!(ws_error_codes(&m), ["FORBIDDEN"], "{label}: {m}");
            refused.insert(m["id"].as_str().unwrap().to_owned());
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = app.create_event(&rs, &Unit::new("live"), true).await;
    // Every allowed subscription streams the event and the completion.
    for (label, role, ws) in sockets.iter_mut() {
        if !ROLES.contains(role) {
            continue;
        }
        let mut got = std::collections::BTreeMap::new();
        while got.len() < 2 {
            let m = ws_next(ws, Duration::from_secs(15))
                .await
                .expect("an answer");
            assert_eq!(m["type"], json!("next"), "{label}: {m}");
            assert!(ws_error_codes(&m).is_empty(), "{label}: {m}");
            got.insert(
                m["id"].as_str().unwrap().to_owned(),
                m["payload"]["data"].clone(),
            );
        }
        assert_eq!(got["ev"]["events_created"]["id"], json!(e), "{label}");
        assert_eq!(
            got["gc"]["group_completions"]["event_id"],
            json!(e),
            "{label}"
        );
    }
}
