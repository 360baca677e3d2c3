//! JWT access tokens signed with stored keys (`cairn_store::access::SigningKeyRecord`).
//! The header carries `kid`; a token verifies only with the key its `kid`
//! names and only with that key's own algorithm (never `none`, never an
//! algorithm chosen by the token).

use crate::CryptoError;
use crate::apikey::random_token;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use cairn_domain::Timestamp;
use cairn_store::access::SigningKeyRecord;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{DecodingKey, EncodingKey};
use rand_core::{OsRng, RngCore};
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;

const RSA_BITS: usize = 2048;
const HMAC_SECRET_BYTES: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    EdDSA,
    RS256,
    HS256,
}

impl Algorithm {
    /// `EdDSA`, `RS256` or `HS256` (exact).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "EdDSA" => Some(Self::EdDSA),
            "RS256" => Some(Self::RS256),
            "HS256" => Some(Self::HS256),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::EdDSA => "EdDSA",
            Self::RS256 => "RS256",
            Self::HS256 => "HS256",
        }
    }

    fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            Self::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Self::RS256 => jsonwebtoken::Algorithm::RS256,
            Self::HS256 => jsonwebtoken::Algorithm::HS256,
        }
    }
}

/// A new signing key with a random `kid`, created at `now`.
pub fn generate_key(algorithm: Algorithm, now: Timestamp) -> Result<SigningKeyRecord, CryptoError> {
    let (private_der, public_der) = match algorithm {
        Algorithm::EdDSA => {
            let mut seed = [0u8; 32];
            OsRng.fill_bytes(&mut seed);
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            let private = key
                .to_pkcs8_der()
                .map_err(|e| CryptoError(format!("encoding an Ed25519 key as PKCS#8: {e}")))?;
            let public = key.verifying_key().to_public_key_der().map_err(|e| {
                CryptoError(format!("encoding an Ed25519 public key as SPKI: {e}"))
            })?;
            (private.as_bytes().to_vec(), public.as_bytes().to_vec())
        }
        Algorithm::RS256 => {
            let key = rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS)
                .map_err(|e| CryptoError(format!("generating an RSA-{RSA_BITS} key: {e}")))?;
            let private = rsa::pkcs8::EncodePrivateKey::to_pkcs8_der(&key)
                .map_err(|e| CryptoError(format!("encoding an RSA key as PKCS#8: {e}")))?;
            let public = rsa::pkcs8::EncodePublicKey::to_public_key_der(&key.to_public_key())
                .map_err(|e| CryptoError(format!("encoding an RSA public key as SPKI: {e}")))?;
            (private.as_bytes().to_vec(), public.as_bytes().to_vec())
        }
        Algorithm::HS256 => {
            let mut secret = vec![0u8; HMAC_SECRET_BYTES];
            OsRng.fill_bytes(&mut secret);
            (secret, Vec::new())
        }
    };
    Ok(SigningKeyRecord {
        kid: random_token(16),
        algorithm: algorithm.as_str().to_owned(),
        private_key: STANDARD.encode(private_der),
        public_key: if public_der.is_empty() {
            String::new()
        } else {
            STANDARD.encode(public_der)
        },
        created_at: now,
        retired_at: None,
    })
}

/// What an access token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The principal: `user:<name>`.
    pub sub: String,
    pub iss: String,
    pub aud: String,
    /// Seconds since the epoch.
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    /// Unique per token.
    pub jti: String,
    /// The login session (refresh-token family) the token belongs to.
    pub sid: String,
}

/// Why a token was refused. The message is safe to send to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token names no key (kid) this server knows")]
    UnknownKey,
    #[error("the token's algorithm is not its key's algorithm")]
    WrongAlgorithm,
    #[error("the token's signature is invalid")]
    BadSignature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token's issuer is not accepted")]
    WrongIssuer,
    #[error("the token's audience is not accepted")]
    WrongAudience,
    #[error("the token lacks claim {0}")]
    MissingClaim(String),
    #[error("the token's issuer could not be reached to check it: {0}")]
    IssuerUnavailable(String),
}

/// The signing keys in force: the newest unretired one signs; retired ones
/// verify until `grace` after their retirement.
pub struct KeyRing {
    keys: BTreeMap<String, LoadedKey>,
    /// `kid` of the signing key, if any key is unretired.
    current: Option<String>,
}

/// A stored key made ready to sign and verify.
pub(crate) struct LoadedKey {
    pub(crate) kid: String,
    pub(crate) algorithm: Algorithm,
    pub(crate) encoding: EncodingKey,
    pub(crate) decoding: DecodingKey,
    /// The public JWK; `None` for HS256.
    pub(crate) jwk: Option<Value>,
}

impl LoadedKey {
    pub(crate) fn load(record: &SigningKeyRecord) -> Result<Self, CryptoError> {
        let kid = &record.kid;
        if kid.is_empty() {
            return Err(CryptoError("a signing key has an empty kid".to_owned()));
        }
        let algorithm = Algorithm::parse(&record.algorithm).ok_or_else(|| {
            CryptoError(format!(
                "signing key {kid}: unknown algorithm {:?}",
                record.algorithm
            ))
        })?;
        let private = STANDARD.decode(&record.private_key).map_err(|e| {
            CryptoError(format!("signing key {kid}: private_key is not base64: {e}"))
        })?;
        let public = || {
            STANDARD.decode(&record.public_key).map_err(|e| {
                CryptoError(format!("signing key {kid}: public_key is not base64: {e}"))
            })
        };
        let (encoding, decoding, jwk) = match algorithm {
            Algorithm::EdDSA => {
                let signing = ed25519_dalek::SigningKey::from_pkcs8_der(&private).map_err(|e| {
                    CryptoError(format!(
                        "signing key {kid}: private_key is not a PKCS#8 Ed25519 key: {e}"
                    ))
                })?;
                let verifying =
                    ed25519_dalek::VerifyingKey::from_public_key_der(&public()?).map_err(|e| {
                        CryptoError(format!(
                            "signing key {kid}: public_key is not an Ed25519 SPKI key: {e}"
                        ))
                    })?;
                if verifying != signing.verifying_key() {
                    return Err(CryptoError(format!(
                        "signing key {kid}: public_key does not match private_key"
                    )));
                }
                let x = URL_SAFE_NO_PAD.encode(verifying.as_bytes());
                (
                    EncodingKey::from_ed_der(&private),
                    DecodingKey::from_ed_der(verifying.as_bytes()),
                    Some(json!({
                        "kty": "OKP", "crv": "Ed25519", "x": x,
                        "kid": kid, "alg": "EdDSA", "use": "sig",
                    })),
                )
            }
            Algorithm::RS256 => {
                let signing = rsa::RsaPrivateKey::from_pkcs8_der(&private).map_err(|e| {
                    CryptoError(format!(
                        "signing key {kid}: private_key is not a PKCS#8 RSA key: {e}"
                    ))
                })?;
                let verifying = rsa::RsaPublicKey::from_public_key_der(&public()?).map_err(|e| {
                    CryptoError(format!(
                        "signing key {kid}: public_key is not an RSA SPKI key: {e}"
                    ))
                })?;
                if verifying != signing.to_public_key() {
                    return Err(CryptoError(format!(
                        "signing key {kid}: public_key does not match private_key"
                    )));
                }
                // jsonwebtoken's RustCrypto backend signs with PKCS#1 DER.
                let pkcs1 = rsa::pkcs1::EncodeRsaPrivateKey::to_pkcs1_der(&signing)
                    .map_err(|e| CryptoError(format!("signing key {kid}: {e}")))?;
                let n = verifying.n().to_bytes_be();
                let e = verifying.e().to_bytes_be();
                let jwk = json!({
                    "kty": "RSA", "n": URL_SAFE_NO_PAD.encode(&n), "e": URL_SAFE_NO_PAD.encode(&e),
                    "kid": kid, "alg": "RS256", "use": "sig",
                });
                (
                    EncodingKey::from_rsa_der(pkcs1.as_bytes()),
                    DecodingKey::from_rsa_raw_components(&n, &e),
                    Some(jwk),
                )
            }
            Algorithm::HS256 => {
                if private.len() < HMAC_SECRET_BYTES {
                    return Err(CryptoError(format!(
                        "signing key {kid}: an HS256 secret needs at least {HMAC_SECRET_BYTES} bytes, it has {}",
                        private.len()
                    )));
                }
                (
                    EncodingKey::from_secret(&private),
                    DecodingKey::from_secret(&private),
                    None,
                )
            }
        };
        Ok(Self {
            kid: kid.clone(),
            algorithm,
            encoding,
            decoding,
            jwk,
        })
    }
}

/// A compact JWS split into its parts, the header decoded.
pub(crate) struct Parts<'a> {
    pub(crate) header: Map<String, Value>,
    /// `header.payload` as sent: what the signature covers.
    pub(crate) signed: &'a str,
    pub(crate) payload: &'a str,
    pub(crate) signature: &'a str,
}

pub(crate) fn split(token: &str) -> Result<Parts<'_>, TokenError> {
    let mut it = token.split('.');
    let (Some(h), Some(p), Some(sig), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(TokenError::Malformed);
    };
    let header = decode_object(h)?;
    // No header extension is understood here, so none may be critical.
    if header.contains_key("crit") {
        return Err(TokenError::Malformed);
    }
    Ok(Parts {
        header,
        signed: &token[..h.len() + 1 + p.len()],
        payload: p,
        signature: sig,
    })
}

/// A base64url (no padding) JSON object.
pub(crate) fn decode_object(part: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed)?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(TokenError::Malformed),
    }
}

/// The header's `kid`: missing names no key; present but not a string is malformed.
pub(crate) fn header_kid(header: &Map<String, Value>) -> Result<&str, TokenError> {
    match header.get("kid") {
        Some(Value::String(kid)) => Ok(kid),
        None | Some(Value::Null) => Err(TokenError::UnknownKey),
        Some(_) => Err(TokenError::Malformed),
    }
}

/// Check the signature with `key` and `algorithm`, both chosen by the
/// verifier; the header's `alg` must name that same algorithm exactly.
pub(crate) fn check_signature(
    parts: &Parts<'_>,
    algorithm: jsonwebtoken::Algorithm,
    algorithm_name: &str,
    key: &DecodingKey,
) -> Result<(), TokenError> {
    match parts.header.get("alg") {
        Some(Value::String(alg)) if alg == algorithm_name => {}
        _ => return Err(TokenError::WrongAlgorithm),
    }
    match jsonwebtoken::crypto::verify(parts.signature, parts.signed.as_bytes(), key, algorithm) {
        Ok(true) => Ok(()),
        Ok(false) => Err(TokenError::BadSignature),
        Err(e) => match e.kind() {
            jsonwebtoken::errors::ErrorKind::Base64(_) => Err(TokenError::Malformed),
            _ => Err(TokenError::BadSignature),
        },
    }
}

/// An integer claim (seconds since the epoch).
pub(crate) fn int_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, TokenError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_i64().map(Some).ok_or(TokenError::Malformed),
    }
}

/// `exp` (required) and `nbf` (when present) at `now`, with `leeway`.
pub(crate) fn check_times(
    claims: &Map<String, Value>,
    now: i64,
    leeway: i64,
) -> Result<(), TokenError> {
    let leeway = leeway.max(0);
    let exp = int_claim(claims, "exp")?.ok_or_else(|| TokenError::MissingClaim("exp".into()))?;
    if now >= exp.saturating_add(leeway) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = int_claim(claims, "nbf")?
        && now.saturating_add(leeway) < nbf
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

const REQUIRED_CLAIMS: [&str; 8] = ["sub", "iss", "aud", "exp", "nbf", "iat", "jti", "sid"];

impl KeyRing {
    /// Keys from the store (any order). Fails if a stored key does not load.
    /// Keys retired more than `grace_secs` before `now` are left out.
    pub fn new(
        records: &[SigningKeyRecord],
        now: Timestamp,
        grace_secs: i64,
    ) -> Result<Self, CryptoError> {
        let grace_micros = grace_secs.max(0).saturating_mul(1_000_000);
        let mut keys = BTreeMap::new();
        // (created_at, kid) of the newest unretired key.
        let mut current: Option<(Timestamp, String)> = None;
        for record in records {
            if let Some(retired) = record.retired_at {
                if now.micros().saturating_sub(retired.micros()) > grace_micros {
                    continue;
                }
            }
            let key = LoadedKey::load(record)?;
            let unretired = record.retired_at.is_none_or(|r| r > now);
            if unretired
                && current
                    .as_ref()
                    .is_none_or(|(at, kid)| (record.created_at, &record.kid) > (*at, kid))
            {
                current = Some((record.created_at, record.kid.clone()));
            }
            if keys.insert(record.kid.clone(), key).is_some() {
                return Err(CryptoError(format!(
                    "two signing keys share the kid {}",
                    record.kid
                )));
            }
        }
        Ok(Self {
            keys,
            current: current.map(|(_, kid)| kid),
        })
    }

    /// The `kid` of the key [`KeyRing::sign`] uses, if any.
    pub fn current_kid(&self) -> Option<&str> {
        self.current.as_deref()
    }

    /// Sign with the current key (header `alg` and `kid` set). Fails when
    /// there is no unretired key.
    pub fn sign(&self, claims: &Claims) -> Result<String, CryptoError> {
        let key = self
            .current
            .as_ref()
            .and_then(|kid| self.keys.get(kid))
            .ok_or_else(|| CryptoError("no unretired signing key".to_owned()))?;
        let mut header = jsonwebtoken::Header::new(key.algorithm.jwt());
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding)
            .map_err(|e| CryptoError(format!("signing a token with key {}: {e}", key.kid)))
    }

    /// The `kid` in a token's header, without checking anything else.
    pub fn peek_kid(token: &str) -> Option<String> {
        let parts = split(token).ok()?;
        header_kid(&parts.header).ok().map(str::to_owned)
    }

    /// Whether a key with this `kid` is in the ring.
    pub fn knows(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }

    /// Verify signature (with the `kid`'s key and algorithm only), `exp`,
    /// `nbf` (no leeway beyond `leeway_secs`), `iss` and `aud`, at `now_secs`.
    pub fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &str,
        now_secs: i64,
        leeway_secs: i64,
    ) -> Result<Claims, TokenError> {
        let parts = split(token)?;
        let kid = header_kid(&parts.header)?;
        let key = self.keys.get(kid).ok_or(TokenError::UnknownKey)?;
        check_signature(
            &parts,
            key.algorithm.jwt(),
            key.algorithm.as_str(),
            &key.decoding,
        )?;
        let map = decode_object(parts.payload)?;
        for name in REQUIRED_CLAIMS {
            if map.get(name).is_none_or(Value::is_null) {
                return Err(TokenError::MissingClaim(name.to_owned()));
            }
        }
        check_times(&map, now_secs, leeway_secs)?;
        let claims: Claims =
            serde_json::from_value(Value::Object(map)).map_err(|_| TokenError::Malformed)?;
        if claims.iss != issuer {
            return Err(TokenError::WrongIssuer);
        }
        if claims.aud != audience {
            return Err(TokenError::WrongAudience);
        }
        Ok(claims)
    }

    /// The public keys as a JWKS document (`{"keys": [...]}`), HS256 keys
    /// left out.
    pub fn jwks(&self) -> serde_json::Value {
        let keys: Vec<Value> = self.keys.values().filter_map(|k| k.jwk.clone()).collect();
        json!({ "keys": keys })
    }
}
