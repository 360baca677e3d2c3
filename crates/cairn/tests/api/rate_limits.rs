//! Rate limits (docs/rate-limits.md), seen from outside: the `RateLimit-*`
//! headers count down exactly, the request after the last one is a 429
//! with `Retry-After` and the error envelope, and the budget comes back
//! with time. Budgets per client address hold before authentication, per
//! principal after it, per role where configured; health routes and
//! `/metrics` are never limited. With `rate_limit_redis_url`, two
//! applications spend one budget; an unreachable Redis fails open or
//! closed as configured, never with a 500.

use crate::auth_support::{Answer, create_key, graphql_codes, send_as, send_with};
use crate::helpers::{TestApp, assert_envelope_error, client_with, new_client, spawn_app_with};
use cairn::settings::{RateLimit, RateLimitFailure, RateLimitRole, Settings};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::time::{Duration, Instant};

/// `rate` requests per `period_secs`, `burst` at once.
fn limit(rate: u64, burst: u64, period_secs: u64) -> RateLimit {
    RateLimit {
        rate,
        burst,
        period_secs,
    }
}

/// A budget that does not refill during a test.
fn fixed(burst: u64) -> RateLimit {
    limit(1, burst, 3600)
}

fn header(a: &Answer, name: &str) -> Option<String> {
    a.headers
        .get(name)
        .map(|v| v.to_str().expect("header is text").to_owned())
}

fn number(a: &Answer, name: &str) -> u64 {
    header(a, name)
        .unwrap_or_else(|| panic!("{name} missing; status {}, body {}", a.status, a.body))
        .parse()
        .unwrap_or_else(|e| panic!("{name} is not a whole number: {e}"))
}

/// A 429 with `Retry-After` (whole seconds, at least 1), `RateLimit-Remaining: 0`
/// and the error envelope naming the scope; the `Retry-After` seconds.
#[track_caller]
fn assert_refused(a: &Answer, scope: &str) -> u64 {
    assert_eq!(
        a.status,
        StatusCode::TOO_MANY_REQUESTS,
        "expected 429: {}",
        a.body
    );
    let wait = number(a, "retry-after");
    assert!(wait >= 1, "Retry-After {wait}");
    assert_eq!(number(a, "ratelimit-remaining"), 0);
    let errs = assert_envelope_error(&a.body);
    assert!(
        errs[0].starts_with("rate limit exceeded") && errs[0].contains(&format!("per {scope}")),
        "{errs:?}"
    );
    wait
}

async fn get(client: &reqwest::Client, app: &TestApp, path: &str) -> Answer {
    send_as(client, app, Method::GET, path, None).await
}

/// Unique Redis key prefix for one test.
fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("cairn-test:{test}:{}:{nanos}:", std::process::id())
}

fn redis_url(test: &str) -> Option<String> {
    match std::env::var("CAIRN_TEST_REDIS_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipping {test}: CAIRN_TEST_REDIS_URL is unset (e.g. redis://127.0.0.1:6379)"
            );
            None
        }
    }
}

#[tokio::test]
async fn a_small_budget_counts_down_then_refuses_then_comes_back() {
    // One read per 2 s, three at once, for each principal.
    let app = spawn_app_with(|s| s.rate_limit_principal_read = limit(1, 3, 2)).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let a = get(&app.client, &app, "/api/v1/receivers").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(number(&a, "ratelimit-limit"), 3);
        let reset = number(&a, "ratelimit-reset");
        assert!((1..=6).contains(&reset), "RateLimit-Reset {reset}");
        let policy = header(&a, "ratelimit-policy").expect("RateLimit-Policy");
        assert!(
            policy.starts_with("1;w=2;burst=3;comment=\"principal read\""),
            "{policy}"
        );
        remaining.push(number(&a, "ratelimit-remaining"));
    }
    assert_eq!(remaining, [2, 1, 0], "exact countdown");
    let refused = get(&app.client, &app, "/api/v1/receivers").await;
    let wait = assert_refused(&refused, "principal");
    assert!(wait <= 2, "one request's credit takes at most 2 s: {wait}");
    assert_eq!(number(&refused, "ratelimit-limit"), 3);
    // Refused again at once: a refusal spends nothing, but brings nothing.
    assert_refused(
        &get(&app.client, &app, "/api/v1/receivers").await,
        "principal",
    );
    // Other classes have their own budgets.
    let a = get(&app.client, &app, "/api/v1/auth/whoami").await;
    assert_eq!(
        a.status,
        StatusCode::TOO_MANY_REQUESTS,
        "whoami is a read too"
    );
    let a = send_as(
        &app.client,
        &app,
        Method::POST,
        "/api/v1/receivers",
        Some(&crate::helpers::receiver_body("r", json!({}))),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "writes are not reads: {}", a.body);
    // After Retry-After, one request's credit is back.
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(50)).await;
    let a = get(&app.client, &app, "/api/v1/receivers").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(number(&a, "ratelimit-remaining"), 0);
    assert_refused(
        &get(&app.client, &app, "/api/v1/receivers").await,
        "principal",
    );
    // The refusals are counted.
    let (_, metrics) = app.get_text("/metrics").await;
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("cairn_rate_limit_rejections_total{")
                && l.contains("class=\"read\"")
                && l.contains("scope=\"principal\"")
        })
        .unwrap_or_else(|| panic!("no rejection metric in:\n{metrics}"));
    let count: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a value");
    assert!(count >= 4.0, "{line}");
}

#[tokio::test]
async fn unauthenticated_floods_spend_the_address_budget() {
    let app = spawn_app_with(|s| {
        s.rate_limit_address_write = fixed(2);
        s.rate_limit_address_auth = fixed(3);
    })
    .await;
    let anonymous = new_client();
    // No credentials: 401s, yet each one spends the address's budget.
    for left in [1, 0] {
        let a = send_as(
            &anonymous,
            &app,
            Method::POST,
            "/api/v1/events",
            Some(&json!({})),
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
        assert_eq!(number(&a, "ratelimit-remaining"), left);
        assert_eq!(number(&a, "ratelimit-limit"), 2);
    }
    let a = send_as(
        &anonymous,
        &app,
        Method::POST,
        "/api/v1/events",
        Some(&json!({})),
    )
    .await;
    assert_refused(&a, "address");
    // The admin's key comes from the same address: refused before its
    // credentials are even read.
    let a = send_as(
        &app.client,
        &app,
        Method::POST,
        "/api/v1/events",
        Some(&json!({})),
    )
    .await;
    assert_refused(&a, "address");
    // Credential stuffing: logins spend the auth class's budget.
    for _ in 0..3 {
        let a = send_with(
            &anonymous,
            &app,
            Method::POST,
            "/api/v1/auth/login",
            Some(&json!({"username": "nobody", "password": "guess guess guess"})),
            &[],
        )
        .await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    }
    let a = send_with(
        &anonymous,
        &app,
        Method::POST,
        "/api/v1/auth/login",
        Some(&json!({"username": "nobody", "password": "guess guess guess"})),
        &[],
    )
    .await;
    assert_refused(&a, "address");
    // Reads from the address are another budget.
    let a = get(&app.client, &app, "/api/v1/receivers").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

/// One failed login sent with these `X-Forwarded-For` values.
async fn login_via(app: &TestApp, forwarded: &[&str]) -> Answer {
    let headers: Vec<(&str, &str)> = forwarded.iter().map(|v| ("x-forwarded-for", *v)).collect();
    login_with(app, &headers).await
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_budget() {
    // The test client connects from 127.0.0.1, here the trusted proxy.
    let app = spawn_app_with(|s| {
        s.rate_limit_address_auth = fixed(2);
        s.trusted_proxies = vec!["127.0.0.1".into(), "10.0.0.0/8".into()];
    })
    .await;
    // One client, through a second proxy: its budget is spent...
    for left in [1, 0] {
        let a = login_via(&app, &["198.51.100.7, 10.1.1.1"]).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
        assert_eq!(number(&a, "ratelimit-remaining"), left);
    }
    assert_refused(&login_via(&app, &["198.51.100.7"]).await, "address");
    // ...and forging an address to the left of the real one does not
    // refill it: the proxy appended what it saw.
    assert_refused(
        &login_via(&app, &["203.0.113.99, 198.51.100.7"]).await,
        "address",
    );
    // Another client behind the same proxy has a budget of its own.
    let a = login_via(&app, &["198.51.100.8"]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    assert_eq!(number(&a, "ratelimit-remaining"), 1);
    // The audit log names the forwarded client, not the proxy.
    let from = login_addresses(&app).await;
    assert!(from.contains(&"198.51.100.8".to_owned()), "{from:?}");
    assert!(!from.contains(&"127.0.0.1".to_owned()), "{from:?}");
}

/// The `client_addr` of every audited login.
async fn login_addresses(app: &TestApp) -> Vec<String> {
    let logins = crate::auth_support::audit(app, "action=auth.login").await;
    logins
        .iter()
        .filter_map(|e| e["client_addr"].as_str().map(str::to_owned))
        .collect()
}

/// One failed login sent with these request headers.
async fn login_with(app: &TestApp, headers: &[(&str, &str)]) -> Answer {
    send_with(
        &new_client(),
        app,
        Method::POST,
        "/api/v1/auth/login",
        Some(&json!({"username": "nobody", "password": "guess guess guess"})),
        headers,
    )
    .await
}

#[tokio::test]
async fn behind_proxies_that_write_forwarded_its_for_names_the_client() {
    let app = spawn_app_with(|s| {
        s.rate_limit_address_auth = fixed(2);
        s.trusted_proxies = vec!["127.0.0.1".into(), "10.0.0.0/8".into()];
        s.forwarded_header = cairn_api::edge::client::ForwardedHeader::Forwarded;
    })
    .await;
    let via = "for=\"[2001:db8::7]:4711\";proto=https, for=10.1.1.1";
    for left in [1, 0] {
        let a = login_with(&app, &[("forwarded", via)]).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
        assert_eq!(number(&a, "ratelimit-remaining"), left);
    }
    // X-Forwarded-For is not what these proxies write: a client's own
    // claim in it changes nothing.
    assert_refused(
        &login_with(
            &app,
            &[("forwarded", via), ("x-forwarded-for", "203.0.113.99")],
        )
        .await,
        "address",
    );
    let a = login_with(&app, &[("forwarded", "for=198.51.100.8")]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    assert_eq!(number(&a, "ratelimit-remaining"), 1);
    let from = login_addresses(&app).await;
    for expected in ["2001:db8::7", "198.51.100.8"] {
        assert!(from.contains(&expected.to_owned()), "{from:?}");
    }
    assert!(!from.contains(&"127.0.0.1".to_owned()), "{from:?}");
}

#[tokio::test]
async fn without_trusted_proxies_forwarded_addresses_are_ignored() {
    let app = spawn_app_with(|s| s.rate_limit_address_auth = fixed(2)).await;
    // Each request claims another client; all are the peer's budget.
    for (left, claimed) in [(1, "198.51.100.1"), (0, "198.51.100.2")] {
        let a = login_via(&app, &[claimed]).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
        assert_eq!(number(&a, "ratelimit-remaining"), left);
    }
    assert_refused(&login_via(&app, &["198.51.100.3"]).await, "address");
    let logins = crate::auth_support::audit(&app, "action=auth.login").await;
    assert!(!logins.is_empty(), "no login audited");
    for e in &logins {
        assert_eq!(e["client_addr"], json!("127.0.0.1"), "{e}");
    }
}

#[tokio::test]
async fn principals_have_separate_budgets_and_roles_their_own() {
    let app = spawn_app_with(|s| {
        s.rate_limit_principal_read = fixed(2);
        s.rate_limit_roles.insert(
            "producer".into(),
            RateLimitRole {
                read: Some(fixed(5)),
                ..RateLimitRole::default()
            },
        );
    })
    .await;
    let (_, reader_a) = create_key(&app, &["reader"]).await;
    let (_, reader_b) = create_key(&app, &["reader"]).await;
    let (_, producer) = create_key(&app, &["producer"]).await;
    let (_, both) = create_key(&app, &["reader", "producer"]).await;
    let whoami = "/api/v1/auth/whoami";
    let a_client = client_with(Some(&reader_a));
    for left in [1, 0] {
        let a = get(&a_client, &app, whoami).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(number(&a, "ratelimit-remaining"), left);
    }
    assert_refused(&get(&a_client, &app, whoami).await, "principal");
    // Another key of the same role: a budget of its own.
    let b = get(&client_with(Some(&reader_b)), &app, whoami).await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.body);
    assert_eq!(number(&b, "ratelimit-remaining"), 1);
    assert_eq!(number(&b, "ratelimit-limit"), 2);
    // The producer role's own budget; with both roles, the larger one.
    for key in [&producer, &both] {
        let client = client_with(Some(key));
        let mut remaining = Vec::new();
        for _ in 0..5 {
            let a = get(&client, &app, whoami).await;
            assert_eq!(a.status, StatusCode::OK, "{}", a.body);
            assert_eq!(number(&a, "ratelimit-limit"), 5);
            remaining.push(number(&a, "ratelimit-remaining"));
        }
        assert_eq!(remaining, [4, 3, 2, 1, 0]);
        assert_refused(&get(&client, &app, whoami).await, "principal");
    }
    // The admin key, which none of this touched, is still served.
    let a = get(&app.client, &app, whoami).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
}

#[tokio::test]
async fn health_routes_and_metrics_are_never_limited() {
    let app = spawn_app_with(|s| {
        s.rate_limit_address_read = fixed(1);
        s.rate_limit_principal_read = fixed(1);
    })
    .await;
    for path in [
        "/healthz/liveness",
        "/healthz/readiness",
        "/healthz/status",
        "/metrics",
    ] {
        for _ in 0..5 {
            for client in [&app.client, &new_client()] {
                let a = get(client, &app, path).await;
                assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
                assert!(
                    !a.headers.contains_key("ratelimit-limit"),
                    "{path} carries no rate-limit headers"
                );
            }
        }
    }
    // While /api/v1 is limited.
    assert_eq!(
        get(&app.client, &app, "/api/v1/receivers").await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&app.client, &app, "/api/v1/receivers").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn switched_off_nothing_is_limited_or_announced() {
    let app = spawn_app_with(|s| {
        s.rate_limit_enabled = false;
        s.rate_limit_address_read = fixed(1);
        s.rate_limit_principal_read = fixed(1);
    })
    .await;
    for _ in 0..5 {
        let a = get(&app.client, &app, "/api/v1/receivers").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(!a.headers.contains_key("ratelimit-remaining"));
    }
}

#[tokio::test]
async fn graphql_refusals_are_graphql_errors() {
    let app = spawn_app_with(|s| s.rate_limit_principal_graphql = fixed(2)).await;
    let query = json!({"query": "{ event_receivers(limit: 1) { id } }"});
    for left in [1, 0] {
        let a = send_as(
            &app.client,
            &app,
            Method::POST,
            "/api/v1/graphql/query",
            Some(&query),
        )
        .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(
            a.body["errors"].is_null() || a.body["errors"] == json!([]),
            "{}",
            a.body
        );
        assert_eq!(number(&a, "ratelimit-remaining"), left);
    }
    // A mutation is a POST to the same endpoint: the same budget.
    let mutation = json!({"query": "mutation { createReceiver(input: {name: \"r\", type: \"t\", version: \"1\", description: \"d\", schema: \"{}\"}) { id } }"});
    for body in [&query, &mutation] {
        let a = send_as(
            &app.client,
            &app,
            Method::POST,
            "/api/v1/graphql/query",
            Some(body),
        )
        .await;
        assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
        assert!(number(&a, "retry-after") >= 1);
        assert_eq!(number(&a, "ratelimit-remaining"), 0);
        assert_eq!(graphql_codes(&a.body), ["RATE_LIMITED"], "{}", a.body);
        assert_eq!(a.body["errors"][0]["extensions"]["status"], json!(429));
        let message = a.body["errors"][0]["message"].as_str().expect("a message");
        assert!(message.starts_with("rate limit exceeded"), "{message}");
        assert!(a.body["data"].is_null(), "{}", a.body);
    }
    // REST reads are another class.
    assert_eq!(
        get(&app.client, &app, "/api/v1/receivers").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn through_redis_two_nodes_spend_one_budget() {
    let Some(url) = redis_url("through_redis_two_nodes_spend_one_budget") else {
        return;
    };
    let prefix = prefix("two-nodes");
    let configure = |s: &mut Settings| {
        s.rate_limit_redis_url = Some(url.clone());
        s.rate_limit_redis_prefix = prefix.clone();
        // Slow refills, but short key lifetimes in the shared Redis.
        s.rate_limit_address_read = limit(1, 4, 60);
        s.rate_limit_principal_read = limit(1, 2, 60);
    };
    let one = spawn_app_with(configure).await;
    let two = spawn_app_with(configure).await;
    let anonymous = new_client();
    // Requests alternate between the nodes; the address (127.0.0.1) is the
    // same, so exactly the burst succeeds across both.
    let mut served = Vec::new();
    for i in 0..8 {
        let app = if i % 2 == 0 { &one } else { &two };
        let a = get(&anonymous, app, "/api/v1/auth/jwks").await;
        assert_ne!(a.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", a.body);
        if a.status == StatusCode::OK {
            served.push(number(&a, "ratelimit-remaining"));
        } else {
            assert_refused(&a, "address");
        }
    }
    assert_eq!(served, [3, 2, 1, 0], "one budget of 4 across two nodes");
    // Principals through Redis too (a fresh address budget: another prefix).
    let prefix = self::prefix("principal");
    let app = spawn_app_with(|s| {
        s.rate_limit_redis_url = Some(url.clone());
        s.rate_limit_redis_prefix = prefix.clone();
        s.rate_limit_principal_read = limit(1, 2, 60);
    })
    .await;
    for left in [1, 0] {
        let a = get(&app.client, &app, "/api/v1/receivers").await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(number(&a, "ratelimit-remaining"), left);
    }
    assert_refused(
        &get(&app.client, &app, "/api/v1/receivers").await,
        "principal",
    );
}

#[tokio::test]
async fn through_redis_over_tls_nodes_share_a_budget_on_a_trusted_certificate() {
    let port = cairn_testkit::free_port();
    let _redis = cairn_testkit::start_redis_tls(port).await;
    let url = format!("rediss://localhost:{port}");
    let ca = cairn_testkit::tls::ca_file();
    let prefix = prefix("tls");
    let configure = |s: &mut Settings| {
        s.rate_limit_redis_url = Some(url.clone());
        s.rate_limit_redis_ca_file = Some(ca.clone());
        s.rate_limit_redis_prefix = prefix.clone();
        s.rate_limit_address_read = limit(1, 4, 60);
    };
    let one = spawn_app_with(configure).await;
    let two = spawn_app_with(configure).await;
    let anonymous = new_client();
    let mut served = Vec::new();
    for i in 0..6 {
        let app = if i % 2 == 0 { &one } else { &two };
        let a = get(&anonymous, app, "/api/v1/auth/jwks").await;
        if a.status == StatusCode::OK {
            served.push(number(&a, "ratelimit-remaining"));
        } else {
            assert_refused(&a, "address");
        }
    }
    assert_eq!(served, [3, 2, 1, 0], "one budget of 4 across two nodes");
    // Without the CA file the certificate is not trusted, so Redis cannot
    // be asked: failing closed, every limited request is refused.
    let untrusting = spawn_app_with(|s| {
        s.rate_limit_redis_url = Some(url.clone());
        s.rate_limit_redis_prefix = self::prefix("untrusted");
        s.rate_limit_redis_failure = RateLimitFailure::Closed;
        s.rate_limit_redis_timeout_ms = 5_000;
    })
    .await;
    let a = get(&anonymous, &untrusting, "/api/v1/auth/jwks").await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    let errs = assert_envelope_error(&a.body);
    assert!(errs[0].contains("rate limiter"), "{errs:?}");
}

#[tokio::test]
async fn an_unreachable_redis_fails_open_or_closed_as_configured() {
    let closed_port = cairn_testkit::free_port();
    let url = format!("redis://127.0.0.1:{closed_port}");
    let open = spawn_app_with(|s| {
        s.rate_limit_redis_url = Some(url.clone());
        s.rate_limit_address_read = fixed(1);
    })
    .await;
    for _ in 0..3 {
        let started = Instant::now();
        let a = get(&open.client, &open, "/api/v1/receivers").await;
        assert_eq!(a.status, StatusCode::OK, "fails open: {}", a.body);
        assert!(
            !a.headers.contains_key("ratelimit-remaining"),
            "no budget was read"
        );
        assert!(started.elapsed() < Duration::from_secs(2), "bounded wait");
    }
    let closed = spawn_app_with(|s| {
        s.rate_limit_redis_url = Some(url.clone());
        s.rate_limit_redis_failure = RateLimitFailure::Closed;
    })
    .await;
    for _ in 0..3 {
        let a = get(&closed.client, &closed, "/api/v1/receivers").await;
        assert_eq!(
            a.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "fails closed: {}",
            a.body
        );
        assert!(number(&a, "retry-after") >= 1);
        let errs = assert_envelope_error(&a.body);
        assert!(errs[0].contains("rate limiter"), "{errs:?}");
    }
    let a = send_as(
        &closed.client,
        &closed,
        Method::POST,
        "/api/v1/graphql/query",
        Some(&json!({"query": "{ event_receivers { id } }"})),
    )
    .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(graphql_codes(&a.body), ["UNAVAILABLE"], "{}", a.body);
    // Health is not limited, so not refused either.
    assert_eq!(
        get(&closed.client, &closed, "/healthz/liveness")
            .await
            .status,
        StatusCode::OK
    );
    let (_, metrics) = closed.get_text("/metrics").await;
    for mode in ["open", "closed"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("cairn_rate_limit_backend_errors_total{")
                    && l.contains(&format!("mode=\"{mode}\""))),
            "no backend error metric for {mode}:\n{metrics}"
        );
    }
}
