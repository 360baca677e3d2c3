//! The JWT signing key's algorithm follows `auth_jwt_algorithm`: a change
//! rotates the key at the next start, and tokens of the old key keep
//! working through the grace period.

use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use reqwest::StatusCode;
use serde_json::{Value, json};

fn header_of(token: &str) -> Value {
    let head = token.split('.').next().expect("a JWT has a header");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(head).expect("base64url")).expect("JSON")
}

async fn login(app: &TestApp, name: &str, password: &str) -> String {
    let res = app
        .post(
            "/api/v1/auth/login",
            &json!({"username": name, "password": password}),
        )
        .await;
    assert_eq!(res.0, StatusCode::OK, "{}", res.1);
    data(&res)["access_token"]
        .as_str()
        .expect("an access token")
        .to_owned()
}

#[tokio::test]
async fn changing_the_algorithm_rotates_the_key_and_old_tokens_still_verify() {
    let mut app = spawn_app().await;
    let res = app
        .post(
            "/api/v1/users",
            &json!({"name": "rel", "password": "a long password", "roles": ["reader"]}),
        )
        .await;
    assert_eq!(res.0, StatusCode::CREATED, "{}", res.1);
    let old = login(&app, "rel", "a long password").await;
    assert_eq!(header_of(&old)["alg"], "EdDSA", "EdDSA by default");

    app.settings.auth_jwt_algorithm = "HS256".to_owned();
    app.restart().await;
    let new = login(&app, "rel", "a long password").await;
    assert_eq!(header_of(&new)["alg"], "HS256");
    assert_ne!(header_of(&new)["kid"], header_of(&old)["kid"]);

    for token in [&old, &new] {
        let res = client_with(Some(token))
            .get(app.url("/api/v1/auth/whoami"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK, "{}", header_of(token));
    }
    // The JWKS publishes the retired EdDSA key (still verifying) and never
    // the HS256 secret.
    let (_, jwks) = app.get("/api/v1/auth/jwks").await;
    let keys = jwks["data"]["keys"].as_array().expect("keys");
    assert!(
        keys.iter().any(|k| k["kid"] == header_of(&old)["kid"]),
        "{jwks}"
    );
    assert!(
        keys.iter().all(|k| k["kid"] != header_of(&new)["kid"]),
        "{jwks}"
    );
}
