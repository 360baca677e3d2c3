//! Bearer JWTs from an external OpenID Connect issuer, verified against the
//! issuer's JWKS: fetched on first use, cached, fetched again when a token
//! names an unknown `kid` (at most once per `min_refetch_secs`).
//!
//! The JWKS is fetched with `cairn-http`: an `https://` URL's certificate is
//! verified against the system's CA roots, or against `ca_file` when set.

use crate::jwt::{TokenError, check_signature, check_times, decode_object, header_kid, split};
use cairn_http::{HttpClient, Trust};
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::{RwLock, RwLockReadGuard};

/// A JWKS larger than this is refused.
const MAX_JWKS_BYTES: usize = 1 << 20;
/// How long one JWKS request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// Tokens must carry exactly this `iss`.
    pub issuer: String,
    /// Where the issuer's JWKS is served (`http://` or `https://`).
    pub jwks_url: String,
    /// Tokens must carry this `aud` (string or array containing it).
    pub audience: String,
    /// The claim holding the caller's roles or groups: a string or an array
    /// of strings; dotted paths reach into objects (`realm_access.roles`).
    #[serde(default = "default_roles_claim")]
    pub roles_claim: String,
    /// Claim values mapped to Cairn role names; values not listed are
    /// dropped. Empty: values are taken as role names as they are.
    #[serde(default)]
    pub role_map: BTreeMap<String, String>,
    /// Fetch the JWKS again at most this often for unknown kids.
    #[serde(default = "default_min_refetch_secs")]
    pub min_refetch_secs: u64,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway_secs")]
    pub leeway_secs: u64,
    /// PEM file of the CAs an `https://` JWKS URL's certificate must chain
    /// to, instead of the system's roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_roles_claim() -> String {
    "roles".to_owned()
}

fn default_min_refetch_secs() -> u64 {
    30
}

fn default_leeway_secs() -> u64 {
    30
}

/// Who an OIDC token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcIdentity {
    /// The `sub` claim.
    pub subject: String,
    /// Cairn role names after `role_map`.
    pub roles: Vec<String>,
}

/// A verification key from the issuer's JWKS, with the one algorithm it
/// may be used with.
struct JwkKey {
    algorithm: jsonwebtoken::Algorithm,
    name: &'static str,
    key: DecodingKey,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, JwkKey>,
    /// When the JWKS was last requested (successfully or not).
    last_fetch: Option<Instant>,
    /// Whether any fetch has succeeded yet.
    loaded: bool,
    /// Why the last fetch failed, while it is the latest word.
    last_error: Option<String>,
}

/// The JWKS URL, parsed, and the client that fetches it: what settings
/// validation checks at start-up (errors name the field).
pub fn http_client(config: &OidcConfig) -> Result<(http::Uri, HttpClient), String> {
    let uri = cairn_http::parse_url(&config.jwks_url)
        .map_err(|why| format!("oidc.jwks_url {:?}: {why}", config.jwks_url))?;
    let client =
        HttpClient::new(Trust::for_url(&uri, config.ca_file.as_deref())).map_err(
            |e| match config.ca_file {
                Some(_) => format!("oidc.{e}"),
                None => format!("oidc.jwks_url {:?}: {e}", config.jwks_url),
            },
        )?;
    Ok((uri, client))
}

pub struct OidcVerifier {
    config: OidcConfig,
    http: Result<(http::Uri, HttpClient), String>,
    cache: RwLock<Cache>,
}

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> Self {
        let http = http_client(&config);
        Self {
            config,
            http,
            cache: RwLock::new(Cache::default()),
        }
    }

    /// The `iss` claim of a token, unverified: to tell issuers apart.
    pub fn peek_issuer(token: &str) -> Option<String> {
        let parts = split(token).ok()?;
        match decode_object(parts.payload).ok()?.remove("iss") {
            Some(Value::String(iss)) => Some(iss),
            _ => None,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.config.issuer
    }

    /// Verify signature (RS256, ES256 or EdDSA keys from the JWKS, the
    /// algorithm fixed by the key, never `none` or HMAC), `iss`, `aud`,
    /// `exp`, `nbf`, and map the roles claim.
    pub async fn verify(&self, token: &str) -> Result<OidcIdentity, TokenError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        self.verify_at(token, now).await
    }

    /// [`OidcVerifier::verify`] at `now_secs` (seconds since the epoch).
    pub async fn verify_at(&self, token: &str, now_secs: i64) -> Result<OidcIdentity, TokenError> {
        let parts = split(token)?;
        let kid = header_kid(&parts.header)?;
        {
            let cache = self.key_for(kid).await?;
            let key = cache.keys.get(kid).ok_or(TokenError::UnknownKey)?;
            check_signature(&parts, key.algorithm, key.name, &key.key)?;
        }
        let claims = decode_object(parts.payload)?;
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            None | Some(Value::Null) => return Err(TokenError::MissingClaim("sub".into())),
            Some(_) => return Err(TokenError::Malformed),
        };
        for name in ["iss", "aud"] {
            if claims.get(name).is_none_or(Value::is_null) {
                return Err(TokenError::MissingClaim(name.into()));
            }
        }
        let leeway = i64::try_from(self.config.leeway_secs).unwrap_or(i64::MAX);
        check_times(&claims, now_secs, leeway)?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.config.issuer.as_str()) {
            return Err(TokenError::WrongIssuer);
        }
        let audience_ok = match claims.get("aud") {
            Some(Value::String(aud)) => *aud == self.config.audience,
            Some(Value::Array(auds)) => auds
                .iter()
                .any(|a| a.as_str() == Some(self.config.audience.as_str())),
            _ => false,
        };
        if !audience_ok {
            return Err(TokenError::WrongAudience);
        }
        Ok(OidcIdentity {
            subject,
            roles: self.roles(&claims),
        })
    }

    /// The cache, holding `kid` if the issuer publishes it: fetched on first
    /// use, and again for an unknown kid unless fetched within
    /// `min_refetch_secs`.
    /// Known kids only take the read lock; one writer fetches at a time
    /// and the others then find its result.
    async fn key_for(&self, kid: &str) -> Result<RwLockReadGuard<'_, Cache>, TokenError> {
        let cache = self.cache.read().await;
        if cache.keys.contains_key(kid) {
            return Ok(cache);
        }
        drop(cache);
        let mut cache = self.cache.write().await;
        if cache.keys.contains_key(kid) {
            return Ok(cache.downgrade());
        }
        let min_gap = Duration::from_secs(self.config.min_refetch_secs);
        let may_fetch = cache.last_fetch.is_none_or(|at| at.elapsed() >= min_gap);
        if may_fetch {
            cache.last_fetch = Some(Instant::now());
            match self.fetch().await {
                Ok(keys) => {
                    tracing::debug!(issuer = %self.config.issuer, keys = keys.len(), "fetched JWKS");
                    cache.keys = keys;
                    cache.loaded = true;
                    cache.last_error = None;
                }
                Err(e) => {
                    tracing::warn!(issuer = %self.config.issuer, error = %e, "JWKS fetch failed");
                    cache.last_error = Some(e.clone());
                    if !cache.keys.contains_key(kid) {
                        return Err(TokenError::IssuerUnavailable(e));
                    }
                }
            }
        } else if !cache.loaded
            && let Some(e) = &cache.last_error
        {
            return Err(TokenError::IssuerUnavailable(e.clone()));
        }
        Ok(cache.downgrade())
    }

    async fn fetch(&self) -> Result<HashMap<String, JwkKey>, String> {
        let url = &self.config.jwks_url;
        let (uri, http) = self.http.as_ref().map_err(Clone::clone)?;
        let req = http::Request::get(uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .body(Default::default())
            .map_err(|e| format!("fetching the JWKS at {url}: {e}"))?;
        let (status, body) = tokio::time::timeout(FETCH_TIMEOUT, http.send(req, MAX_JWKS_BYTES))
            .await
            .map_err(|_| {
                format!(
                    "fetching the JWKS at {url}: no answer within {} s",
                    FETCH_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("fetching the JWKS at {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("fetching the JWKS at {url}: HTTP status {status}"));
        }
        let body = body.map_err(|e| format!("the JWKS at {url}: {e}"))?;
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("the JWKS at {url} is not JSON: {e}"))?;
        let Some(Value::Array(jwks)) = doc.get("keys") else {
            return Err(format!("the JWKS at {url} has no \"keys\" array"));
        };
        let mut keys = HashMap::new();
        for jwk in jwks {
            match parse_jwk(jwk) {
                Ok((kid, key)) => {
                    keys.insert(kid, key);
                }
                Err(why) => {
                    tracing::debug!(jwks_url = %url, %why, "JWK skipped");
                }
            }
        }
        Ok(keys)
    }

    fn roles(&self, claims: &Map<String, Value>) -> Vec<String> {
        let mut path = self.config.roles_claim.split('.');
        let mut value = path.next().and_then(|first| claims.get(first));
        for step in path {
            value = value.and_then(|v| v.get(step));
        }
        let raw: Vec<&str> = match value {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        let mut roles: Vec<String> = Vec::new();
        for r in raw {
            let mapped = if self.config.role_map.is_empty() {
                Some(r)
            } else {
                self.config.role_map.get(r).map(String::as_str)
            };
            if let Some(m) = mapped
                && !roles.iter().any(|have| have == m)
            {
                roles.push(m.to_owned());
            }
        }
        roles
    }
}

/// One JWK as `(kid, key)`: RSA (RS256), EC P-256 (ES256) or OKP Ed25519
/// (EdDSA); the algorithm is the key's, never the token's. Symmetric (`oct`)
/// keys, encryption keys and keys without a `kid` are refused.
fn parse_jwk(jwk: &Value) -> Result<(String, JwkKey), String> {
    let field = |name: &str| jwk.get(name).and_then(Value::as_str);
    let kid = field("kid").ok_or("no kid")?.to_owned();
    if let Some(usage) = field("use")
        && usage != "sig"
    {
        return Err(format!("{kid}: use {usage}"));
    }
    let alg = field("alg");
    let need = |name: &str| field(name).ok_or_else(|| format!("{kid}: no {name}"));
    let bad = |e: jsonwebtoken::errors::Error| format!("{kid}: {e}");
    let (algorithm, name, key) = match field("kty") {
        Some("RSA") if alg.is_none_or(|a| a == "RS256") => (
            jsonwebtoken::Algorithm::RS256,
            "RS256",
            DecodingKey::from_rsa_components(need("n")?, need("e")?).map_err(bad)?,
        ),
        Some("EC") if field("crv") == Some("P-256") && alg.is_none_or(|a| a == "ES256") => (
            jsonwebtoken::Algorithm::ES256,
            "ES256",
            DecodingKey::from_ec_components(need("x")?, need("y")?).map_err(bad)?,
        ),
        Some("OKP")
            if field("crv") == Some("Ed25519")
                && alg.is_none_or(|a| a == "EdDSA" || a == "Ed25519") =>
        {
            let key = DecodingKey::from_ed_components(need("x")?).map_err(bad)?;
            if key.try_get_as_bytes().map(<[u8]>::len).ok() != Some(32) {
                return Err(format!("{kid}: an Ed25519 key is 32 bytes"));
            }
            (jsonwebtoken::Algorithm::EdDSA, "EdDSA", key)
        }
        other => {
            return Err(format!(
                "{kid}: unsupported key type {other:?} with alg {alg:?}"
            ));
        }
    };
    Ok((
        kid,
        JwkKey {
            algorithm,
            name,
            key,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jwt::tests::rsa_record;
    use crate::jwt::{Algorithm, LoadedKey, generate_key};
    use axum::http::StatusCode;
    use axum::routing::get;
    use base64::Engine as _;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use jsonwebtoken::EncodingKey;
    use serde_json::json;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const ISS: &str = "http://issuer.test";
    const AUD: &str = "cairn";

    /// A JWKS served over real HTTP on the loopback, counting requests.
    struct Issuer {
        jwks: Arc<std::sync::Mutex<Value>>,
        hits: Arc<AtomicUsize>,
        base: String,
    }

    impl Issuer {
        async fn start(keys: Vec<Value>) -> Self {
            Self::start_on(keys, false).await
        }

        /// The same issuer over HTTPS, with the test certificate.
        async fn start_tls(keys: Vec<Value>) -> Self {
            Self::start_on(keys, true).await
        }

        async fn start_on(keys: Vec<Value>, tls: bool) -> Self {
            let jwks = Arc::new(std::sync::Mutex::new(json!({ "keys": keys })));
            let hits = Arc::new(AtomicUsize::new(0));
            let (j, h, h2) = (jwks.clone(), hits.clone(), hits.clone());
            let app = axum::Router::new()
                .route(
                    "/jwks",
                    get(move || {
                        let (j, h) = (j.clone(), h.clone());
                        async move {
                            h.fetch_add(1, Ordering::SeqCst);
                            let doc = j.lock().unwrap().clone();
                            axum::Json(doc)
                        }
                    }),
                )
                .route(
                    "/broken",
                    get(move || {
                        let h = h2.clone();
                        async move {
                            h.fetch_add(1, Ordering::SeqCst);
                            (StatusCode::INTERNAL_SERVER_ERROR, "down")
                        }
                    }),
                );
            let base = if tls {
                let port = cairn_testkit::tls::serve(app).await;
                format!("https://localhost:{port}")
            } else {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let base = format!("http://{}", listener.local_addr().unwrap());
                tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
                base
            };
            Self { jwks, hits, base }
        }

        fn set_keys(&self, keys: Vec<Value>) {
            *self.jwks.lock().unwrap() = json!({ "keys": keys });
        }

        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }

        fn config(&self, min_refetch_secs: u64) -> OidcConfig {
            OidcConfig {
                issuer: ISS.into(),
                jwks_url: format!("{}/jwks", self.base),
                audience: AUD.into(),
                roles_claim: default_roles_claim(),
                role_map: BTreeMap::new(),
                min_refetch_secs,
                leeway_secs: 30,
                ca_file: None,
            }
        }
    }

    /// A signing key of the issuer's and its public JWK.
    struct IssuerKey {
        kid: String,
        alg: &'static str,
        encoding: EncodingKey,
        jwk: Value,
        public_der: Vec<u8>,
    }

    impl IssuerKey {
        fn from_record(record: &cairn_store::access::SigningKeyRecord) -> Self {
            let loaded = LoadedKey::load(record).unwrap();
            Self {
                kid: record.kid.clone(),
                alg: loaded.algorithm.as_str(),
                jwk: loaded.jwk.clone().unwrap(),
                encoding: loaded.encoding,
                public_der: STANDARD.decode(&record.public_key).unwrap(),
            }
        }

        fn rsa() -> Self {
            Self::from_record(&rsa_record())
        }

        fn ed25519() -> Self {
            Self::from_record(&generate_key(Algorithm::EdDSA, crate::jwt::tests::ts(0)).unwrap())
        }

        fn p256() -> Self {
            use p256::pkcs8::{EncodePrivateKey, EncodePublicKey};
            let sk = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
            let der = sk.to_pkcs8_der().unwrap();
            let point = sk.verifying_key().to_encoded_point(false);
            let kid = crate::apikey::random_token(8);
            Self {
                jwk: json!({
                    "kty": "EC", "crv": "P-256", "kid": kid,
                    "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
                    "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
                }),
                kid,
                alg: "ES256",
                encoding: EncodingKey::from_ec_der(der.as_bytes()),
                public_der: sk
                    .verifying_key()
                    .to_public_key_der()
                    .unwrap()
                    .as_bytes()
                    .to_vec(),
            }
        }

        fn token(&self, claims: &Value) -> String {
            let header = json!({"alg": self.alg, "kid": self.kid, "typ": "JWT"});
            sign_raw(&header, claims, &self.encoding, self.alg)
        }
    }

    fn jwt_alg(name: &str) -> jsonwebtoken::Algorithm {
        name.parse().unwrap()
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// Sign `header.payload` with `key` as `alg`, whatever the header says.
    fn sign_raw(header: &Value, payload: &Value, key: &EncodingKey, alg: &str) -> String {
        let signed = format!("{}.{}", b64(header), b64(payload));
        let sig = jsonwebtoken::crypto::sign(signed.as_bytes(), key, jwt_alg(alg)).unwrap();
        format!("{signed}.{sig}")
    }

    fn now() -> i64 {
        i64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        )
        .unwrap()
    }

    fn claims() -> Value {
        let now = now();
        json!({
            "sub": "alice@example.test", "iss": ISS, "aud": AUD,
            "exp": now + 300, "nbf": now - 5, "iat": now - 5,
            "roles": ["reader"],
        })
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value;
        }
        claims
    }

    #[tokio::test]
    async fn verifies_rs256_es256_and_eddsa_keys() {
        let keys = [IssuerKey::rsa(), IssuerKey::p256(), IssuerKey::ed25519()];
        let issuer = Issuer::start(keys.iter().map(|k| k.jwk.clone()).collect()).await;
        let verifier = OidcVerifier::new(issuer.config(30));
        assert_eq!(verifier.issuer(), ISS);
        for key in &keys {
            let token = key.token(&claims());
            assert_eq!(OidcVerifier::peek_issuer(&token).as_deref(), Some(ISS));
            let id = verifier.verify(&token).await;
            assert_eq!(
                id,
                Ok(OidcIdentity {
                    subject: "alice@example.test".into(),
                    roles: vec!["reader".into()],
                }),
                "{}",
                key.alg
            );
        }
        // One fetch served all three keys.
        assert_eq!(issuer.hits(), 1);
    }

    #[tokio::test]
    async fn an_https_jwks_is_verified_against_the_ca_file_or_the_systems_roots() {
        let key = IssuerKey::ed25519();
        let issuer = Issuer::start_tls(vec![key.jwk.clone()]).await;
        let mut config = issuer.config(0);
        config.ca_file = Some(cairn_testkit::tls::ca_file());
        let trusting = OidcVerifier::new(config.clone());
        assert_eq!(
            trusting.verify(&key.token(&claims())).await,
            Ok(OidcIdentity {
                subject: "alice@example.test".into(),
                roles: vec!["reader".into()],
            })
        );
        assert_eq!(issuer.hits(), 1);

        // The system's roots do not hold the test CA: the handshake fails
        // before any request, and the reason is the token's refusal.
        config.ca_file = None;
        let system = OidcVerifier::new(config);
        match system.verify(&key.token(&claims())).await {
            Err(TokenError::IssuerUnavailable(why)) if why.contains("no CA certificates found") => {
                eprintln!("skipping the system-roots half: {why}");
            }
            Err(TokenError::IssuerUnavailable(why)) => {
                assert!(why.contains("invalid peer certificate"), "{why}");
                assert_eq!(issuer.hits(), 1, "no request was sent");
            }
            other => panic!("an unverifiable issuer must refuse the token: {other:?}"),
        }
    }

    #[tokio::test]
    async fn unknown_kid_refetches_at_most_once_per_interval() {
        let a = IssuerKey::ed25519();
        let b = IssuerKey::ed25519();
        let issuer = Issuer::start(vec![a.jwk.clone()]).await;
        let verifier = OidcVerifier::new(issuer.config(1));
        assert!(verifier.verify(&a.token(&claims())).await.is_ok());
        assert_eq!(issuer.hits(), 1);
        // Within the interval: unknown kid, no request.
        let unknown = b.token(&claims());
        assert_eq!(verifier.verify(&unknown).await, Err(TokenError::UnknownKey));
        assert_eq!(issuer.hits(), 1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        // After it: one refetch, still unknown.
        assert_eq!(verifier.verify(&unknown).await, Err(TokenError::UnknownKey));
        assert_eq!(issuer.hits(), 2);
        for _ in 0..5 {
            assert_eq!(verifier.verify(&unknown).await, Err(TokenError::UnknownKey));
        }
        assert_eq!(issuer.hits(), 2);
        // Known kids never cause a request.
        assert!(verifier.verify(&a.token(&claims())).await.is_ok());
        assert_eq!(issuer.hits(), 2);
    }

    #[tokio::test]
    async fn a_rotated_issuer_key_is_picked_up() {
        let old = IssuerKey::ed25519();
        let new = IssuerKey::rsa();
        let issuer = Issuer::start(vec![old.jwk.clone()]).await;
        let verifier = OidcVerifier::new(issuer.config(0));
        assert!(verifier.verify(&old.token(&claims())).await.is_ok());
        issuer.set_keys(vec![new.jwk.clone()]);
        let id = verifier.verify(&new.token(&claims())).await.unwrap();
        assert_eq!(id.subject, "alice@example.test");
        assert_eq!(issuer.hits(), 2);
        // The old key is gone from the issuer, so from the cache too.
        assert_eq!(
            verifier.verify(&old.token(&claims())).await,
            Err(TokenError::UnknownKey)
        );
        assert_eq!(issuer.hits(), 3);
    }

    #[tokio::test]
    async fn claims_are_checked() {
        let key = IssuerKey::rsa();
        let issuer = Issuer::start(vec![key.jwk.clone()]).await;
        let verifier = OidcVerifier::new(issuer.config(30));
        let now = now();
        let cases = [
            (
                with(claims(), "iss", json!("http://evil.test")),
                Err(TokenError::WrongIssuer),
            ),
            (
                with(claims(), "iss", json!(7)),
                Err(TokenError::WrongIssuer),
            ),
            (
                with(claims(), "aud", json!("other")),
                Err(TokenError::WrongAudience),
            ),
            (
                with(claims(), "aud", json!(["a", "b"])),
                Err(TokenError::WrongAudience),
            ),
            (
                with(claims(), "exp", json!(now - 100)),
                Err(TokenError::Expired),
            ),
            (
                with(claims(), "nbf", json!(now + 100)),
                Err(TokenError::NotYetValid),
            ),
            (
                with(claims(), "sub", Value::Null),
                Err(TokenError::MissingClaim("sub".into())),
            ),
            (
                with(claims(), "exp", Value::Null),
                Err(TokenError::MissingClaim("exp".into())),
            ),
            (
                with(claims(), "iss", Value::Null),
                Err(TokenError::MissingClaim("iss".into())),
            ),
            (
                with(claims(), "aud", Value::Null),
                Err(TokenError::MissingClaim("aud".into())),
            ),
            (
                with(claims(), "exp", json!("soon")),
                Err(TokenError::Malformed),
            ),
        ];
        for (c, expected) in cases {
            let got = verifier.verify(&key.token(&c)).await.map(|_| ());
            assert_eq!(got, expected, "{c}");
        }
        // Accepted: audience in an array, expiry and nbf within the leeway,
        // no nbf at all.
        let ok = [
            with(claims(), "aud", json!(["x", AUD])),
            with(claims(), "exp", json!(now - 10)),
            with(claims(), "nbf", json!(now + 10)),
            with(claims(), "nbf", Value::Null),
        ];
        for c in ok {
            assert!(verifier.verify(&key.token(&c)).await.is_ok(), "{c}");
        }
    }

    #[tokio::test]
    async fn forged_algorithms_are_refused() {
        let rsa = IssuerKey::rsa();
        let ec = IssuerKey::p256();
        let issuer = Issuer::start(vec![rsa.jwk.clone(), ec.jwk.clone()]).await;
        let verifier = OidcVerifier::new(issuer.config(30));

        // alg none, with the kid of a real key and no signature.
        for none in ["none", "NONE"] {
            let t = format!(
                "{}.{}.",
                b64(&json!({"alg": none, "kid": rsa.kid})),
                b64(&claims())
            );
            assert_eq!(verifier.verify(&t).await, Err(TokenError::WrongAlgorithm));
        }
        // HS256 with the RSA public key (DER, n, the JWK text) as the secret.
        let n = URL_SAFE_NO_PAD
            .decode(rsa.jwk["n"].as_str().unwrap())
            .unwrap();
        let jwk_text = rsa.jwk.to_string();
        for secret in [rsa.public_der.as_slice(), n.as_slice(), jwk_text.as_bytes()] {
            let t = sign_raw(
                &json!({"alg": "HS256", "kid": rsa.kid}),
                &claims(),
                &EncodingKey::from_secret(secret),
                "HS256",
            );
            assert_eq!(verifier.verify(&t).await, Err(TokenError::WrongAlgorithm));
        }
        // HS256 with the EC public key.
        let t = sign_raw(
            &json!({"alg": "HS256", "kid": ec.kid}),
            &claims(),
            &EncodingKey::from_secret(&ec.public_der),
            "HS256",
        );
        assert_eq!(verifier.verify(&t).await, Err(TokenError::WrongAlgorithm));
        // A real RS256 signature, announced under another RSA algorithm.
        let t = sign_raw(
            &json!({"alg": "RS512", "kid": rsa.kid}),
            &claims(),
            &rsa.encoding,
            "RS256",
        );
        assert_eq!(verifier.verify(&t).await, Err(TokenError::WrongAlgorithm));
        // RSA-signed but naming the EC key with its algorithm.
        let t = sign_raw(
            &json!({"alg": "ES256", "kid": ec.kid}),
            &claims(),
            &rsa.encoding,
            "RS256",
        );
        assert_eq!(verifier.verify(&t).await, Err(TokenError::BadSignature));
        // Tampered payload.
        let good = rsa.token(&claims());
        let p: Vec<&str> = good.split('.').collect();
        let evil = format!(
            "{}.{}.{}",
            p[0],
            b64(&with(claims(), "sub", json!("root"))),
            p[2]
        );
        assert_eq!(verifier.verify(&evil).await, Err(TokenError::BadSignature));
        assert_eq!(issuer.hits(), 1);
    }

    #[tokio::test]
    async fn hmac_and_unsupported_jwks_are_refused() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let ed = IssuerKey::ed25519();
        let mut rs384 = IssuerKey::rsa().jwk;
        rs384["alg"] = json!("RS384");
        rs384["kid"] = json!("rs384");
        let mut enc = IssuerKey::rsa().jwk;
        enc["use"] = json!("enc");
        enc["kid"] = json!("enc");
        let issuer = Issuer::start(vec![
            json!({"kty": "oct", "kid": "hmac", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(secret)}),
            json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"}),
            rs384,
            enc,
            json!({"kty": "OKP", "crv": "Ed25519", "x": ed.jwk["x"]}),
            ed.jwk.clone(),
        ])
        .await;
        let verifier = OidcVerifier::new(issuer.config(3600));
        let t = sign_raw(
            &json!({"alg": "HS256", "kid": "hmac"}),
            &claims(),
            &EncodingKey::from_secret(secret),
            "HS256",
        );
        assert_eq!(verifier.verify(&t).await, Err(TokenError::UnknownKey));
        let rsa = IssuerKey::rsa();
        for kid in ["rs384", "enc"] {
            let t = sign_raw(
                &json!({"alg": "RS256", "kid": kid}),
                &claims(),
                &rsa.encoding,
                "RS256",
            );
            assert_eq!(verifier.verify(&t).await, Err(TokenError::UnknownKey));
        }
        // The well-formed key in the same set still works.
        assert!(verifier.verify(&ed.token(&claims())).await.is_ok());
        assert_eq!(issuer.hits(), 1);
    }

    #[tokio::test]
    async fn roles_are_read_from_a_dotted_path_and_mapped() {
        let key = IssuerKey::ed25519();
        let issuer = Issuer::start(vec![key.jwk.clone()]).await;
        let mut config = issuer.config(30);
        config.roles_claim = "realm_access.roles".into();
        config.role_map = [("cairn-admin", "admin"), ("cairn-dev", "writer")]
            .into_iter()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect();
        let verifier = OidcVerifier::new(config);
        let c = with(
            claims(),
            "realm_access",
            json!({"roles": ["cairn-admin", "offline_access", 3, "cairn-dev", "cairn-admin"]}),
        );
        let id = verifier.verify(&key.token(&c)).await.unwrap();
        assert_eq!(id.roles, ["admin", "writer"]);
        let c = with(claims(), "realm_access", json!({"roles": "cairn-dev"}));
        assert_eq!(
            verifier.verify(&key.token(&c)).await.unwrap().roles,
            ["writer"]
        );
        for absent in [json!({}), json!({"roles": {"x": 1}}), json!("cairn-admin")] {
            let c = with(claims(), "realm_access", absent);
            assert!(
                verifier
                    .verify(&key.token(&c))
                    .await
                    .unwrap()
                    .roles
                    .is_empty()
            );
        }

        // Default claim `roles`, no map: values kept as they are.
        let verifier = OidcVerifier::new(issuer.config(30));
        let c = with(claims(), "roles", json!(["reader", "writer"]));
        assert_eq!(
            verifier.verify(&key.token(&c)).await.unwrap().roles,
            ["reader", "writer"]
        );
        let c = with(claims(), "roles", json!("admin"));
        assert_eq!(
            verifier.verify(&key.token(&c)).await.unwrap().roles,
            ["admin"]
        );
        let c = with(claims(), "roles", Value::Null);
        assert!(
            verifier
                .verify(&key.token(&c))
                .await
                .unwrap()
                .roles
                .is_empty()
        );
    }

    #[tokio::test]
    async fn an_unreachable_issuer_is_reported() {
        let key = IssuerKey::ed25519();
        let issuer = Issuer::start(vec![key.jwk.clone()]).await;
        let mut config = issuer.config(3600);
        config.jwks_url = format!("{}/broken", issuer.base);
        let verifier = OidcVerifier::new(config);
        let token = key.token(&claims());
        let first = verifier.verify(&token).await;
        assert!(
            matches!(&first, Err(TokenError::IssuerUnavailable(m)) if m.contains("500")),
            "{first:?}"
        );
        // Rate-limited: reported again without another request.
        assert!(matches!(
            verifier.verify(&token).await,
            Err(TokenError::IssuerUnavailable(_))
        ));
        assert_eq!(issuer.hits(), 1);

        // Nothing listening at all.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let mut config = issuer.config(0);
        config.jwks_url = format!("http://{addr}/jwks");
        let verifier = OidcVerifier::new(config);
        assert!(matches!(
            verifier.verify(&token).await,
            Err(TokenError::IssuerUnavailable(_))
        ));
    }

    #[test]
    fn malformed_tokens_and_peeking() {
        assert_eq!(OidcVerifier::peek_issuer(""), None);
        assert_eq!(OidcVerifier::peek_issuer("a.b.c"), None);
        let t = format!(
            "{}.{}.",
            b64(&json!({"alg": "none"})),
            b64(&json!({"iss": 5}))
        );
        assert_eq!(OidcVerifier::peek_issuer(&t), None);
        let t = format!(
            "{}.{}.",
            b64(&json!({"alg": "none"})),
            b64(&json!({"iss": ISS}))
        );
        assert_eq!(OidcVerifier::peek_issuer(&t).as_deref(), Some(ISS));
    }

    #[test]
    fn config_defaults_and_unknown_fields() {
        let c: OidcConfig = serde_json::from_value(json!({
            "issuer": ISS, "jwks_url": "http://x/jwks", "audience": AUD,
        }))
        .unwrap();
        assert_eq!(c.roles_claim, "roles");
        assert_eq!(c.min_refetch_secs, 30);
        assert_eq!(c.leeway_secs, 30);
        assert!(c.role_map.is_empty());
        let bad = serde_json::from_value::<OidcConfig>(json!({
            "issuer": ISS, "jwks_url": "http://x/jwks", "audience": AUD, "algorithms": ["HS256"],
        }));
        assert!(bad.is_err());
    }
}
