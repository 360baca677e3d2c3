//! Credentials under attack: forged, stale and stolen access tokens and
//! API keys are refused with 401 and serve nothing; refresh-token rotation
//! with reuse detection; signing-key rotation; the first-start admin key.

use crate::auth_support::*;
use crate::helpers::*;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cairn_auth::jwt::{Algorithm, Claims, KeyRing};
use cairn_domain::Timestamp;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// Claims as the server issues them, for this user and session.
fn claims(sub: &str, sid: &str) -> Claims {
    let now = now_secs();
    Claims {
        sub: sub.to_owned(),
        iss: "cairn".to_owned(),
        aud: "cairn".to_owned(),
        exp: now + 600,
        nbf: now - 1,
        iat: now - 1,
        jti: ulid::Ulid::new().to_string(),
        sid: sid.to_owned(),
    }
}

/// A token whose header and payload are these, with this signature.
fn assemble(header: &Value, payload: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64_json(header),
        b64_json(payload),
        URL_SAFE_NO_PAD.encode(signature)
    )
}

/// An HS256 token signed with `secret`.
fn hs256(header: &Value, payload: &Value, secret: &[u8]) -> String {
    let signing_input = format!("{}.{}", b64_json(header), b64_json(payload));
    let mac = hmac_sha256(secret, signing_input.as_bytes());
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(mac))
}

/// The token reads nothing and is refused with 401.
async fn assert_refused(app: &TestApp, token: &str, what: &str) {
    let a = get_as(token, app, "/api/v1/receivers").await;
    assert_unauthorized(&a, what);
    // A token was sent and does not hold (RFC 6750 section 3.1).
    assert_eq!(
        a.headers["www-authenticate"], "Bearer realm=\"cairn\", error=\"invalid_token\"",
        "{what}"
    );
    let (status, body) = graphql_as(Some(token), app, "{ event_receivers { id } }").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what} (GraphQL): {body}");
}

#[tokio::test]
async fn forged_stale_and_foreign_access_tokens_are_refused() {
    let app = spawn_app().await;
    app.create_receiver().await;
    create_user(&app, "alice", &["reader"]).await;
    create_user(&app, "bob", &["admin"]).await;
    create_user(&app, "carol", &["reader"]).await;
    let good = access_token(&app, "alice").await;
    let (header, payload) = jwt_parts(&good);
    let sid = payload["sid"].as_str().unwrap().to_owned();
    assert_eq!(payload["sub"], json!("user:alice"));
    // The genuine token works: what follows fails for its flaw alone.
    assert_eq!(
        get_as(&good, &app, "/api/v1/receivers").await.status,
        StatusCode::OK
    );
    let ring = app.auth.ring();
    let signed = |c: &Claims| ring.sign(c).unwrap();
    assert_eq!(
        get_as(
            &signed(&claims("user:alice", &sid)),
            &app,
            "/api/v1/receivers"
        )
        .await
        .status,
        StatusCode::OK,
        "a token signed in the test with the server's key is accepted"
    );

    // alg none, with and without the kid.
    let none = json!({"alg": "none", "typ": "JWT", "kid": header["kid"]});
    assert_refused(&app, &assemble(&none, &payload, b""), "alg none").await;
    let none_no_kid = json!({"alg": "none", "typ": "JWT"});
    assert_refused(
        &app,
        &assemble(&none_no_kid, &payload, b""),
        "alg none, no kid",
    )
    .await;

    // HS256 keyed with the server's public key, as served by the JWKS.
    let jwks = new_client()
        .get(app.url("/api/v1/auth/jwks"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let jwk = jwks["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("the JWKS lists the token's key")
        .clone();
    let x = jwk["x"].as_str().unwrap();
    let hs = json!({"alg": "HS256", "typ": "JWT", "kid": header["kid"]});
    let raw_public = URL_SAFE_NO_PAD.decode(x).unwrap();
    assert_refused(
        &app,
        &hs256(&hs, &payload, &raw_public),
        "HS256 with the public key bytes",
    )
    .await;
    assert_refused(
        &app,
        &hs256(&hs, &payload, x.as_bytes()),
        "HS256 with the public key text",
    )
    .await;
    assert_refused(
        &app,
        &hs256(&hs, &payload, jwk.to_string().as_bytes()),
        "HS256 with the JWK",
    )
    .await;

    // Times, issuer and audience, each signed with the real key.
    let now = now_secs();
    let mut c = claims("user:alice", &sid);
    c.exp = now - 600;
    c.nbf = now - 1200;
    c.iat = now - 1200;
    assert_refused(&app, &signed(&c), "expired").await;
    let mut c = claims("user:alice", &sid);
    c.nbf = now + 600;
    c.exp = now + 1200;
    assert_refused(&app, &signed(&c), "not yet valid").await;
    let mut c = claims("user:alice", &sid);
    c.iss = "https://evil.example".to_owned();
    assert_refused(&app, &signed(&c), "wrong issuer").await;
    let mut c = claims("user:alice", &sid);
    c.aud = "someone-else".to_owned();
    assert_refused(&app, &signed(&c), "wrong audience").await;

    // Tampering.
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut sig = URL_SAFE_NO_PAD.decode(&parts[2]).unwrap();
    sig[0] ^= 0x01;
    parts[2] = URL_SAFE_NO_PAD.encode(&sig);
    assert_refused(&app, &parts.join("."), "tampered signature").await;
    let mut promoted = payload.clone();
    promoted["sub"] = json!("user:bob");
    let forged = format!(
        "{}.{}.{}",
        good.split('.').next().unwrap(),
        b64_json(&promoted),
        good.split('.').nth(2).unwrap()
    );
    assert_refused(&app, &forged, "tampered payload (sub)").await;
    let mut widened = payload.clone();
    widened["roles"] = json!(["admin"]);
    let forged = format!(
        "{}.{}.{}",
        good.split('.').next().unwrap(),
        b64_json(&widened),
        good.split('.').nth(2).unwrap()
    );
    assert_refused(&app, &forged, "tampered payload (roles)").await;

    // A key the server never had.
    let now_ts = Timestamp::from_micros(now * 1_000_000);
    let stranger = cairn_auth::jwt::generate_key(Algorithm::EdDSA, now_ts).unwrap();
    let stranger_ring = KeyRing::new(&[stranger], now_ts, 0).unwrap();
    assert_refused(
        &app,
        &stranger_ring.sign(&claims("user:alice", &sid)).unwrap(),
        "unknown kid",
    )
    .await;

    // Alice's session claimed for bob (an admin), signed with the real key.
    assert_refused(
        &app,
        &signed(&claims("user:bob", &sid)),
        "someone else's session",
    )
    .await;
    // A session that does not exist.
    assert_refused(
        &app,
        &signed(&claims("user:alice", "01ARZ3NDEKTSV4RRFFQ69G5FAV")),
        "no such session",
    )
    .await;

    // A disabled user's token.
    let carols = access_token(&app, "carol").await;
    assert_eq!(
        get_as(&carols, &app, "/api/v1/receivers").await.status,
        StatusCode::OK
    );
    let res = app
        .patch("/api/v1/users/carol", &json!({"disabled": true}))
        .await;
    data(&res);
    assert_refused(&app, &carols, "disabled user").await;

    // Logged out: the same token is refused from then on.
    let a = post_as(&good, &app, "/api/v1/auth/logout", &json!({})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_refused(&app, &good, "after logout").await;

    // The refusals are audited.
    let rejected = audit(&app, "action=auth.rejected").await;
    assert!(rejected.len() >= 10, "{rejected:?}");
    assert!(rejected.iter().all(|e| e["outcome"] == json!("failure")));
}

#[tokio::test]
async fn bad_revoked_and_expired_api_keys_are_refused() {
    let app = spawn_app().await;
    app.create_receiver().await;
    let (id, key) = create_key(&app, &["reader"]).await;
    assert_eq!(
        get_as(&key, &app, "/api/v1/receivers").await.status,
        StatusCode::OK
    );

    assert_refused(&app, "cairn_notakey", "malformed").await;
    assert_refused(&app, &format!("{key}x"), "malformed (too long)").await;
    let unknown = cairn_auth::apikey::generate().token;
    assert_refused(&app, &unknown, "unknown id").await;
    let other_secret = &unknown[cairn_auth::apikey::PREFIX.len() + id.len() + 1..];
    let wrong_secret = format!("{}{id}_{other_secret}", cairn_auth::apikey::PREFIX);
    assert_ne!(wrong_secret, key);
    assert_refused(&app, &wrong_secret, "right id, wrong secret").await;

    // Revoked: refused at the very next request.
    let res = app.delete(&format!("/api/v1/keys/{id}")).await;
    assert!(data(&res)["revoked_at"].is_string());
    assert_refused(&app, &key, "revoked").await;

    // Expired.
    let (_, short) = create_key_with(
        &app,
        json!({"name": "short-lived", "roles": ["reader"], "expires_in": 1}),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_refused(&app, &short, "expired").await;

    let details: Vec<Value> = audit(&app, "action=auth.rejected")
        .await
        .into_iter()
        .map(|e| e["detail"].clone())
        .collect();
    for d in [
        "the API key is malformed",
        "unknown API key",
        "the API key's secret does not match",
        "the API key has been revoked",
        "the API key has expired",
    ] {
        assert!(details.contains(&json!(d)), "audited: {d:?} in {details:?}");
    }
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_the_whole_session() {
    let app = spawn_app().await;
    create_user(&app, "dora", &["reader"]).await;
    let first = login(&app, "dora").await;
    let (a1, r1) = (
        first["access_token"].as_str().unwrap().to_owned(),
        first["refresh_token"].as_str().unwrap().to_owned(),
    );
    let b = refresh_raw(&app, &r1).await;
    assert_eq!(b.status, StatusCode::OK, "{}", b.body);
    let second = &b.body["data"];
    let (a2, r2) = (
        second["access_token"].as_str().unwrap().to_owned(),
        second["refresh_token"].as_str().unwrap().to_owned(),
    );
    assert_ne!(a1, a2);
    assert_ne!(r1, r2);
    assert_eq!(
        jwt_parts(&a1).1["sid"],
        jwt_parts(&a2).1["sid"],
        "one session"
    );
    // The old access token still works until it expires; so does the new one.
    for t in [&a1, &a2] {
        let w = get_as(t, &app, "/api/v1/auth/whoami").await;
        assert_eq!(w.status, StatusCode::OK);
        assert_eq!(w.body["data"]["principal"], json!("user:dora"));
    }

    // The spent refresh token again: refused, and the family is revoked.
    let again = refresh_raw(&app, &r1).await;
    assert_unauthorized(&again, "reused refresh token");
    assert_unauthorized(&refresh_raw(&app, &r2).await, "the newer refresh token");
    assert_refused(&app, &a2, "the newer access token").await;
    assert_refused(&app, &a1, "the older access token").await;
    let sid = jwt_parts(&a1).1["sid"].as_str().unwrap().to_owned();
    assert!(audited(&app, "auth.refresh_reuse", &format!("session:{sid}")).await);

    // A new login starts a new session.
    let fresh = access_token(&app, "dora").await;
    assert_eq!(
        get_as(&fresh, &app, "/api/v1/auth/whoami").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn rotated_signing_keys_keep_old_tokens_valid_and_sign_new_ones() {
    let app = spawn_app().await;
    create_user(&app, "erin", &["reader"]).await;
    let old = access_token(&app, "erin").await;
    let old_kid = jwt_parts(&old).0["kid"].as_str().unwrap().to_owned();

    let res = app
        .post("/api/v1/auth/signing-keys/rotate", &json!({}))
        .await;
    let new_kid = created(&res)["kid"].as_str().unwrap().to_owned();
    assert_ne!(new_kid, old_kid);

    // Within the grace period the old token still verifies.
    assert_eq!(
        get_as(&old, &app, "/api/v1/auth/whoami").await.status,
        StatusCode::OK
    );
    // New logins are signed with the new key.
    let new = access_token(&app, "erin").await;
    assert_eq!(jwt_parts(&new).0["kid"], json!(new_kid));
    assert_eq!(
        get_as(&new, &app, "/api/v1/auth/whoami").await.status,
        StatusCode::OK
    );
    // The JWKS lists both.
    let jwks = new_client()
        .get(app.url("/api/v1/auth/jwks"))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["data"]["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{kids:?}"
    );
    assert!(audited(&app, "signing_key.rotate", &format!("kid:{new_kid}")).await);
}

#[tokio::test]
async fn the_first_start_admin_key_is_private_and_authenticates_as_admin() {
    let app = spawn_app().await;
    let path = app.data_dir.path().join("admin.key");
    let text = std::fs::read_to_string(&path).expect("admin.key is written");
    assert_eq!(Some(text.trim()), app.admin_key.as_deref());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "admin.key mode is {mode:o}");
    }
    let w = get_as(text.trim(), &app, "/api/v1/auth/whoami").await;
    assert_eq!(w.status, StatusCode::OK, "{}", w.body);
    assert_eq!(w.body["data"]["roles"], json!(["admin"]));
    assert_eq!(w.body["data"]["kind"], json!("api_key"));
    // The key in the file is stored only as a hash: the API never shows it.
    let keys = app.list_all("/api/v1/keys?limit=1000").await;
    assert_eq!(keys.len(), 1);
    assert!(keys[0].get("key").is_none(), "{:?}", keys[0]);
    assert!(!keys[0].to_string().contains(text.trim()));
}
