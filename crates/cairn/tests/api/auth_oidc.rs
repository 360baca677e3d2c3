//! Bearer tokens of an OIDC issuer: the test plays the issuer, with its own
//! Ed25519 key and a JWKS endpoint on loopback, and signs tokens with
//! `jsonwebtoken`.

use crate::auth_support::*;
use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use cairn_auth::jwt::{Algorithm, KeyRing};
use cairn_auth::oidc::OidcConfig;
use cairn_domain::Timestamp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

const ISSUER: &str = "https://idp.test";
const AUDIENCE: &str = "cairn-api";

/// The identity provider: a signing key and the JWKS it publishes.
struct Issuer {
    kid: String,
    key: jsonwebtoken::EncodingKey,
    jwks: Arc<Mutex<Value>>,
    url: String,
}

/// A fresh Ed25519 key: its kid, its signing key and its JWKS.
fn issuer_key() -> (String, jsonwebtoken::EncodingKey, Value) {
    let now = Timestamp::from_micros(now_secs() * 1_000_000);
    let record = cairn_auth::jwt::generate_key(Algorithm::EdDSA, now).unwrap();
    let der = STANDARD.decode(&record.private_key).unwrap();
    let ring = KeyRing::new(std::slice::from_ref(&record), now, 0).unwrap();
    (
        record.kid.clone(),
        jsonwebtoken::EncodingKey::from_ed_der(&der),
        ring.jwks(),
    )
}

impl Issuer {
    /// Serve the JWKS on 127.0.0.1:0.
    async fn start() -> Self {
        let (kid, key, jwks) = issuer_key();
        let jwks = Arc::new(Mutex::new(jwks));
        let served = jwks.clone();
        let app = axum::Router::new().route(
            "/jwks",
            axum::routing::get(move || {
                let doc = served.lock().unwrap().clone();
                async move { axum::Json(doc) }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            kid,
            key,
            jwks,
            url,
        }
    }

    /// Replace the key (the JWKS now publishes only the new one).
    fn rotate(&mut self) {
        let (kid, key, jwks) = issuer_key();
        *self.jwks.lock().unwrap() = jwks;
        self.kid = kid;
        self.key = key;
    }

    fn sign(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.key).unwrap()
    }

    fn config(&self) -> OidcConfig {
        OidcConfig {
            issuer: ISSUER.to_owned(),
            jwks_url: self.url.clone(),
            audience: AUDIENCE.to_owned(),
            roles_claim: "groups".to_owned(),
            role_map: [
                ("release-bots".to_owned(), "producer".to_owned()),
                ("auditors".to_owned(), "reader".to_owned()),
            ]
            .into_iter()
            .collect(),
            // Refetch at once for an unknown kid.
            min_refetch_secs: 0,
            leeway_secs: 5,
            ca_file: None,
        }
    }
}

/// Claims of a valid token for `sub` in these groups.
fn claims(sub: &str, groups: &[&str]) -> Value {
    let now = now_secs();
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": sub, "groups": groups,
        "iat": now, "nbf": now - 1, "exp": now + 600,
    })
}

#[tokio::test]
async fn oidc_groups_map_to_roles_and_grants_apply_to_the_subject() {
    let issuer = Issuer::start().await;
    let config = issuer.config();
    let app = spawn_app_with(|s| s.oidc = Some(config)).await;
    let r = app.create_receiver().await;

    // auditors -> reader: reads, may not create.
    let auditor = issuer.sign(&claims("ann", &["auditors", "unmapped"]));
    let w = get_as(&auditor, &app, "/api/v1/auth/whoami").await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    assert_eq!(w.body["data"]["principal"], json!("oidc:ann"));
    assert_eq!(w.body["data"]["kind"], json!("oidc"));
    assert_eq!(w.body["data"]["roles"], json!(["reader"]));
    let a = get_as(&auditor, &app, "/api/v1/receivers").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["data"].as_array().unwrap().len(), 1);
    let a = post_as(
        &auditor,
        &app,
        "/api/v1/receivers",
        &receiver_body("x", json!({})),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);

    // release-bots -> producer: posts once granted on the receiver.
    let bot = issuer.sign(&claims("ci-bot", &["release-bots"]));
    let event = event_body(&r, &Unit::new("svc"), true);
    let a = post_as(&bot, &app, "/api/v1/events", &event).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    grant_receiver(&app, "oidc:ci-bot", &r, &["events:create"]).await;
    let a = post_as(&bot, &app, "/api/v1/events", &event).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    // The grant is the subject's: another bot of the same group has none.
    let other = issuer.sign(&claims("other-bot", &["release-bots"]));
    let a = post_as(&other, &app, "/api/v1/events", &event).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(event_count(&app).await, 1);
    // No mapped group: no role, nothing allowed.
    let nobody = issuer.sign(&claims("nobody", &["unmapped"]));
    let a = get_as(&nobody, &app, "/api/v1/receivers").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
}

#[tokio::test]
async fn oidc_keys_are_refetched_and_bad_tokens_refused() {
    let mut issuer = Issuer::start().await;
    let config = issuer.config();
    let app = spawn_app_with(|s| s.oidc = Some(config)).await;
    app.create_receiver().await;
    let before = issuer.sign(&claims("ann", &["auditors"]));
    assert_eq!(
        get_as(&before, &app, "/api/v1/receivers").await.status,
        StatusCode::OK
    );

    // The issuer rotates: a token naming the new kid makes Cairn fetch the
    // JWKS again, and is accepted.
    let old_kid = issuer.kid.clone();
    issuer.rotate();
    assert_ne!(issuer.kid, old_kid);
    let after = issuer.sign(&claims("ann", &["auditors"]));
    let a = get_as(&after, &app, "/api/v1/receivers").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    // Wrong audience, expired, alg none: 401.
    let mut c = claims("ann", &["auditors"]);
    c["aud"] = json!("someone-else");
    assert_unauthorized(
        &get_as(&issuer.sign(&c), &app, "/api/v1/receivers").await,
        "wrong aud",
    );
    let mut c = claims("ann", &["auditors"]);
    c["exp"] = json!(now_secs() - 3600);
    c["iat"] = json!(now_secs() - 7200);
    c["nbf"] = json!(now_secs() - 7200);
    assert_unauthorized(
        &get_as(&issuer.sign(&c), &app, "/api/v1/receivers").await,
        "expired",
    );
    let none = format!(
        "{}.{}.",
        b64_json(&json!({"alg": "none", "typ": "JWT", "kid": issuer.kid})),
        b64_json(&claims("ann", &["auditors"]))
    );
    assert_unauthorized(&get_as(&none, &app, "/api/v1/receivers").await, "alg none");
    // Signed by a key the issuer never published.
    let (kid, key, _) = issuer_key();
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    header.kid = Some(kid);
    let rogue = jsonwebtoken::encode(&header, &claims("ann", &["auditors"]), &key).unwrap();
    assert_unauthorized(
        &get_as(&rogue, &app, "/api/v1/receivers").await,
        "unpublished key",
    );
}
