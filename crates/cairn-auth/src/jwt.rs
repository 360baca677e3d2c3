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
            let public = key
                .verifying_key()
                .to_public_key_der()
                .map_err(|e| CryptoError(format!("encoding an Ed25519 public key as SPKI: {e}")))?;
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
                let verifying = ed25519_dalek::VerifyingKey::from_public_key_der(&public()?)
                    .map_err(|e| {
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
                let verifying =
                    rsa::RsaPublicKey::from_public_key_der(&public()?).map_err(|e| {
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
pub(crate) fn int_claim(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<i64>, TokenError> {
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
            if let Some(retired) = record.retired_at
                && now.micros().saturating_sub(retired.micros()) > grace_micros
            {
                continue;
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use rsa::traits::PrivateKeyParts;
    use std::sync::OnceLock;

    const ISS: &str = "https://cairn.test";
    const AUD: &str = "cairn";
    const NOW: i64 = 1_800_000_000;

    pub(crate) fn ts(secs: i64) -> Timestamp {
        Timestamp::from_micros(secs * 1_000_000)
    }

    /// RSA key generation is slow: one key per test binary.
    pub(crate) fn rsa_record() -> SigningKeyRecord {
        static KEY: OnceLock<SigningKeyRecord> = OnceLock::new();
        KEY.get_or_init(|| generate_key(Algorithm::RS256, ts(NOW - 100)).unwrap())
            .clone()
    }

    fn record(alg: Algorithm) -> SigningKeyRecord {
        match alg {
            Algorithm::RS256 => rsa_record(),
            other => generate_key(other, ts(NOW - 100)).unwrap(),
        }
    }

    fn claims() -> Claims {
        Claims {
            sub: "user:alice".into(),
            iss: ISS.into(),
            aud: AUD.into(),
            exp: NOW + 300,
            nbf: NOW - 5,
            iat: NOW - 5,
            jti: random_token(16),
            sid: "session-1".into(),
        }
    }

    fn b64(v: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    }

    /// A token from a hand-made header and payload, signed by `sign`.
    fn forge(header: &Value, payload: &Value, sign: impl Fn(&[u8]) -> String) -> String {
        let signed = format!("{}.{}", b64(header), b64(payload));
        let sig = sign(signed.as_bytes());
        format!("{signed}.{sig}")
    }

    /// Sign anything with a stored key, bypassing KeyRing's checks.
    fn sign_with(record: &SigningKeyRecord, header: &Value, payload: &Value) -> String {
        let key = LoadedKey::load(record).unwrap();
        forge(header, payload, |m| {
            jsonwebtoken::crypto::sign(m, &key.encoding, key.algorithm.jwt()).unwrap()
        })
    }

    fn hmac_with(secret: &[u8]) -> impl Fn(&[u8]) -> String {
        let key = EncodingKey::from_secret(secret);
        move |m| jsonwebtoken::crypto::sign(m, &key, jsonwebtoken::Algorithm::HS256).unwrap()
    }

    fn ring(records: &[SigningKeyRecord]) -> KeyRing {
        KeyRing::new(records, ts(NOW), 3600).unwrap()
    }

    fn verify(ring: &KeyRing, token: &str) -> Result<Claims, TokenError> {
        ring.verify(token, ISS, AUD, NOW, 0)
    }

    fn header(rec: &SigningKeyRecord) -> Value {
        json!({"alg": rec.algorithm, "kid": rec.kid, "typ": "JWT"})
    }

    fn payload() -> Value {
        serde_json::to_value(claims()).unwrap()
    }

    const ALL: [Algorithm; 3] = [Algorithm::EdDSA, Algorithm::RS256, Algorithm::HS256];

    #[test]
    fn roundtrip_every_algorithm() {
        for alg in ALL {
            let rec = record(alg);
            assert_eq!(rec.algorithm, alg.as_str());
            assert_eq!(rec.public_key.is_empty(), alg == Algorithm::HS256);
            let ring = ring(std::slice::from_ref(&rec));
            assert_eq!(ring.current_kid(), Some(rec.kid.as_str()));
            let c = claims();
            let token = ring.sign(&c).unwrap();
            assert_eq!(KeyRing::peek_kid(&token).as_deref(), Some(rec.kid.as_str()));
            assert!(ring.knows(&rec.kid));
            assert!(!ring.knows("other"));
            let header = decode_object(token.split('.').next().unwrap()).unwrap();
            assert_eq!(header["alg"], alg.as_str(), "{alg:?}");
            assert_eq!(verify(&ring, &token), Ok(c), "{alg:?}");
        }
    }

    #[test]
    fn generated_keys_are_fresh() {
        let a = generate_key(Algorithm::EdDSA, ts(NOW)).unwrap();
        let b = generate_key(Algorithm::EdDSA, ts(NOW)).unwrap();
        assert_ne!(a.kid, b.kid);
        assert_ne!(a.private_key, b.private_key);
        let h = generate_key(Algorithm::HS256, ts(NOW)).unwrap();
        assert!(STANDARD.decode(&h.private_key).unwrap().len() >= 32);
        assert_eq!(a.created_at, ts(NOW));
        assert_eq!(a.retired_at, None);
    }

    #[test]
    fn alg_none_is_refused() {
        for alg in ALL {
            let rec = record(alg);
            let ring = ring(std::slice::from_ref(&rec));
            for none in ["none", "None", "NONE", ""] {
                let token = forge(&json!({"alg": none, "kid": rec.kid}), &payload(), |_| {
                    String::new()
                });
                assert_eq!(verify(&ring, &token), Err(TokenError::WrongAlgorithm));
            }
            let no_alg = forge(&json!({"kid": rec.kid}), &payload(), |_| String::new());
            assert_eq!(verify(&ring, &no_alg), Err(TokenError::WrongAlgorithm));
        }
    }

    #[test]
    fn hs256_signed_with_a_public_key_is_refused() {
        for alg in [Algorithm::RS256, Algorithm::EdDSA] {
            let rec = record(alg);
            let ring = ring(std::slice::from_ref(&rec));
            let der = STANDARD.decode(&rec.public_key).unwrap();
            let jwk = ring.jwks()["keys"][0].to_string();
            let hs = json!({"alg": "HS256", "kid": rec.kid});
            for secret in [der.as_slice(), rec.public_key.as_bytes(), jwk.as_bytes()] {
                let token = forge(&hs, &payload(), hmac_with(secret));
                assert_eq!(verify(&ring, &token), Err(TokenError::WrongAlgorithm));
            }
        }
    }

    #[test]
    fn a_token_claiming_another_algorithm_than_its_key_is_refused() {
        let ed = record(Algorithm::EdDSA);
        let rsa = record(Algorithm::RS256);
        let hs = record(Algorithm::HS256);
        let ring = ring(&[ed.clone(), rsa.clone(), hs.clone()]);
        // Correctly signed by the EdDSA key, but naming the RSA key's kid.
        let token = sign_with(&ed, &json!({"alg": "EdDSA", "kid": rsa.kid}), &payload());
        assert_eq!(verify(&ring, &token), Err(TokenError::WrongAlgorithm));
        // Naming the EdDSA key's kid with the RSA algorithm.
        let token = sign_with(&rsa, &json!({"alg": "RS256", "kid": ed.kid}), &payload());
        assert_eq!(verify(&ring, &token), Err(TokenError::WrongAlgorithm));
        // Signed by the right key but another algorithm spelled in the header.
        let token = sign_with(&hs, &json!({"alg": "HS512", "kid": hs.kid}), &payload());
        assert_eq!(verify(&ring, &token), Err(TokenError::WrongAlgorithm));
        // Signed by another key of the same algorithm under this kid.
        let other = record(Algorithm::EdDSA);
        let token = sign_with(&other, &header(&ed), &payload());
        assert_eq!(verify(&ring, &token), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampered_tokens_are_refused() {
        for alg in ALL {
            let rec = record(alg);
            let ring = ring(std::slice::from_ref(&rec));
            let token = ring.sign(&claims()).unwrap();
            let parts: Vec<&str> = token.split('.').collect();
            // Payload changed (another subject), signature kept.
            let mut evil = payload();
            evil["sub"] = json!("user:root");
            let forged = format!("{}.{}.{}", parts[0], b64(&evil), parts[2]);
            assert_eq!(verify(&ring, &forged), Err(TokenError::BadSignature));
            // Signature changed in its first character.
            let sig = parts[2];
            let flipped = if sig.starts_with('A') { "B" } else { "A" };
            let forged = format!("{}.{}.{flipped}{}", parts[0], parts[1], &sig[1..]);
            assert_eq!(verify(&ring, &forged), Err(TokenError::BadSignature));
            // Signature dropped or truncated.
            let forged = format!("{}.{}.", parts[0], parts[1]);
            assert_eq!(verify(&ring, &forged), Err(TokenError::BadSignature));
            let forged = format!("{}.{}.{}", parts[0], parts[1], &sig[..sig.len() / 2]);
            assert!(matches!(
                verify(&ring, &forged),
                Err(TokenError::BadSignature | TokenError::Malformed)
            ));
        }
    }

    #[test]
    fn expiry_and_not_before() {
        let rec = record(Algorithm::EdDSA);
        let ring = ring(std::slice::from_ref(&rec));
        let mut c = claims();
        c.exp = NOW - 10;
        let token = ring.sign(&c).unwrap();
        assert_eq!(verify(&ring, &token), Err(TokenError::Expired));
        assert_eq!(
            ring.verify(&token, ISS, AUD, NOW, 9),
            Err(TokenError::Expired)
        );
        assert_eq!(ring.verify(&token, ISS, AUD, NOW, 11), Ok(c.clone()));
        c.exp = NOW;
        let token = ring.sign(&c).unwrap();
        assert_eq!(verify(&ring, &token), Err(TokenError::Expired));
        assert_eq!(ring.verify(&token, ISS, AUD, NOW - 1, 0), Ok(c));

        let mut c = claims();
        c.nbf = NOW + 100;
        let token = ring.sign(&c).unwrap();
        assert_eq!(verify(&ring, &token), Err(TokenError::NotYetValid));
        assert_eq!(
            ring.verify(&token, ISS, AUD, NOW, 99),
            Err(TokenError::NotYetValid)
        );
        assert_eq!(ring.verify(&token, ISS, AUD, NOW, 100), Ok(c.clone()));
        assert_eq!(ring.verify(&token, ISS, AUD, NOW + 100, 0), Ok(c));
    }

    #[test]
    fn wrong_issuer_or_audience() {
        let rec = record(Algorithm::HS256);
        let ring = ring(std::slice::from_ref(&rec));
        let token = ring.sign(&claims()).unwrap();
        assert_eq!(
            ring.verify(&token, "https://evil.test", AUD, NOW, 0),
            Err(TokenError::WrongIssuer)
        );
        assert_eq!(
            ring.verify(&token, ISS, "other", NOW, 0),
            Err(TokenError::WrongAudience)
        );
        let mut p = payload();
        p["aud"] = json!([AUD]);
        let token = sign_with(&rec, &header(&rec), &p);
        assert_eq!(verify(&ring, &token), Err(TokenError::Malformed));
    }

    #[test]
    fn unknown_or_missing_kid() {
        let rec = record(Algorithm::EdDSA);
        let ring = ring(std::slice::from_ref(&rec));
        let other = record(Algorithm::EdDSA);
        let token = KeyRing::new(std::slice::from_ref(&other), ts(NOW), 0)
            .unwrap()
            .sign(&claims())
            .unwrap();
        assert_eq!(verify(&ring, &token), Err(TokenError::UnknownKey));
        let token = sign_with(&rec, &json!({"alg": "EdDSA"}), &payload());
        assert_eq!(KeyRing::peek_kid(&token), None);
        assert_eq!(verify(&ring, &token), Err(TokenError::UnknownKey));
        let token = sign_with(&rec, &json!({"alg": "EdDSA", "kid": 7}), &payload());
        assert_eq!(verify(&ring, &token), Err(TokenError::Malformed));
    }

    #[test]
    fn every_required_claim_is_required() {
        let rec = record(Algorithm::HS256);
        let ring = ring(std::slice::from_ref(&rec));
        for name in REQUIRED_CLAIMS {
            for replacement in [None, Some(Value::Null)] {
                let mut p = payload();
                match &replacement {
                    None => p.as_object_mut().unwrap().remove(name),
                    Some(v) => p.as_object_mut().unwrap().insert(name.into(), v.clone()),
                };
                let token = sign_with(&rec, &header(&rec), &p);
                assert_eq!(
                    verify(&ring, &token),
                    Err(TokenError::MissingClaim(name.to_owned())),
                    "{name} = {replacement:?}"
                );
            }
        }
        // Present with the wrong type.
        let mut p = payload();
        p["exp"] = json!("tomorrow");
        let token = sign_with(&rec, &header(&rec), &p);
        assert_eq!(verify(&ring, &token), Err(TokenError::Malformed));
        let mut p = payload();
        p["sub"] = json!(42);
        let token = sign_with(&rec, &header(&rec), &p);
        assert_eq!(verify(&ring, &token), Err(TokenError::Malformed));
    }

    #[test]
    fn malformed_tokens() {
        let rec = record(Algorithm::HS256);
        let ring = ring(std::slice::from_ref(&rec));
        let good = ring.sign(&claims()).unwrap();
        let p: Vec<&str> = good.split('.').collect();
        let cases = [
            String::new(),
            "abc".into(),
            "a.b".into(),
            format!("{good}.x"),
            format!("!!!.{}.{}", p[1], p[2]),
            format!("{}.{}.{}", b64(&json!(["not", "object"])), p[1], p[2]),
            format!("{}={}", &good[..good.len() - 1], &good[good.len() - 1..]),
        ];
        for case in &cases {
            assert_eq!(verify(&ring, case), Err(TokenError::Malformed), "{case:?}");
        }
        // Signed payload that is not JSON.
        let key = LoadedKey::load(&rec).unwrap();
        let signed = format!("{}.{}", b64(&header(&rec)), URL_SAFE_NO_PAD.encode(b"nope"));
        let sig = jsonwebtoken::crypto::sign(signed.as_bytes(), &key.encoding, key.algorithm.jwt())
            .unwrap();
        assert_eq!(
            verify(&ring, &format!("{signed}.{sig}")),
            Err(TokenError::Malformed)
        );
        // A critical header extension is not understood.
        let mut h = header(&rec);
        h["crit"] = json!(["exp"]);
        let token = sign_with(&rec, &h, &payload());
        assert_eq!(verify(&ring, &token), Err(TokenError::Malformed));
    }

    #[test]
    fn rotation_keeps_retired_keys_for_the_grace_period() {
        let mut old = generate_key(Algorithm::EdDSA, ts(NOW - 5000)).unwrap();
        let old_token = ring(std::slice::from_ref(&old)).sign(&claims()).unwrap();
        old.retired_at = Some(ts(NOW - 1000));
        let new = generate_key(Algorithm::EdDSA, ts(NOW - 1000)).unwrap();
        let records = [old.clone(), new.clone()];

        // Within grace: the old key still verifies; the new one signs.
        let within = KeyRing::new(&records, ts(NOW), 1000).unwrap();
        assert!(within.knows(&old.kid));
        assert_eq!(within.current_kid(), Some(new.kid.as_str()));
        assert!(verify(&within, &old_token).is_ok());
        let fresh = within.sign(&claims()).unwrap();
        assert_eq!(KeyRing::peek_kid(&fresh).as_deref(), Some(new.kid.as_str()));
        assert_eq!(within.jwks()["keys"].as_array().unwrap().len(), 2);

        // After grace: the old key is gone.
        let after = KeyRing::new(&records, ts(NOW), 999).unwrap();
        assert!(!after.knows(&old.kid));
        assert_eq!(verify(&after, &old_token), Err(TokenError::UnknownKey));
        assert!(verify(&after, &fresh).is_ok());
        assert_eq!(after.jwks()["keys"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn the_newest_unretired_key_signs() {
        let a = generate_key(Algorithm::EdDSA, ts(NOW - 300)).unwrap();
        let b = generate_key(Algorithm::HS256, ts(NOW - 200)).unwrap();
        let mut c = generate_key(Algorithm::EdDSA, ts(NOW - 100)).unwrap();
        c.retired_at = Some(ts(NOW - 50));
        for order in [
            vec![a.clone(), b.clone(), c.clone()],
            vec![c.clone(), b.clone(), a.clone()],
        ] {
            let ring = KeyRing::new(&order, ts(NOW), 3600).unwrap();
            assert_eq!(ring.current_kid(), Some(b.kid.as_str()));
            let token = ring.sign(&claims()).unwrap();
            assert_eq!(KeyRing::peek_kid(&token).as_deref(), Some(b.kid.as_str()));
        }
        // Only retired keys: verification works, signing does not.
        let ring = KeyRing::new(std::slice::from_ref(&c), ts(NOW), 3600).unwrap();
        assert_eq!(ring.current_kid(), None);
        assert!(ring.sign(&claims()).is_err());
        assert!(
            KeyRing::new(&[], ts(NOW), 0)
                .unwrap()
                .sign(&claims())
                .is_err()
        );
    }

    #[test]
    fn bad_stored_keys_do_not_load() {
        let ed = record(Algorithm::EdDSA);
        let other = record(Algorithm::EdDSA);
        let rsa = record(Algorithm::RS256);
        let mut mismatched = ed.clone();
        mismatched.public_key = other.public_key.clone();
        let mut bad_b64 = ed.clone();
        bad_b64.private_key = "***".into();
        let mut unknown = ed.clone();
        unknown.algorithm = "ES256".into();
        let mut swapped = ed.clone();
        swapped.algorithm = "RS256".into();
        let mut rsa_as_ed = rsa.clone();
        rsa_as_ed.algorithm = "EdDSA".into();
        let mut short = record(Algorithm::HS256);
        short.private_key = STANDARD.encode([7u8; 16]);
        let mut empty_kid = ed.clone();
        empty_kid.kid = String::new();
        for bad in [
            mismatched, bad_b64, unknown, swapped, rsa_as_ed, short, empty_kid,
        ] {
            assert!(
                KeyRing::new(std::slice::from_ref(&bad), ts(NOW), 0).is_err(),
                "{bad:?} loaded"
            );
        }
        assert!(KeyRing::new(&[ed.clone(), ed], ts(NOW), 0).is_err());
    }

    #[test]
    fn jwks_has_public_keys_only() {
        let ed = record(Algorithm::EdDSA);
        let rsa = record(Algorithm::RS256);
        let hs = record(Algorithm::HS256);
        let ring = ring(&[ed.clone(), rsa.clone(), hs.clone()]);
        let jwks = ring.jwks();
        let keys = jwks["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        let text = jwks.to_string();
        for private in ["d", "p", "q", "dp", "dq", "qi", "k", "oth"] {
            for key in keys {
                assert!(key.get(private).is_none(), "{private} in {key}");
            }
        }
        assert!(!text.contains(&hs.kid));
        let secret = STANDARD.decode(&hs.private_key).unwrap();
        assert!(!text.contains(&URL_SAFE_NO_PAD.encode(&secret)));
        assert!(!text.contains(&hs.private_key));
        let ed_der = STANDARD.decode(&ed.private_key).unwrap();
        let seed = ed25519_dalek::SigningKey::from_pkcs8_der(&ed_der)
            .unwrap()
            .to_bytes();
        assert!(!text.contains(&URL_SAFE_NO_PAD.encode(seed)));
        let rsa_private =
            rsa::RsaPrivateKey::from_pkcs8_der(&STANDARD.decode(&rsa.private_key).unwrap())
                .unwrap();
        let d = URL_SAFE_NO_PAD.encode(rsa_private.d().to_bytes_be());
        assert!(!text.contains(&d[..40]));

        // The published keys verify tokens the ring signs.
        let token_by = |rec: &SigningKeyRecord| {
            KeyRing::new(std::slice::from_ref(rec), ts(NOW), 0)
                .unwrap()
                .sign(&claims())
                .unwrap()
        };
        for key in keys {
            let kid = key["kid"].as_str().unwrap();
            let (token, decoding, alg) = if kid == ed.kid {
                assert_eq!(key["kty"], "OKP");
                assert_eq!(key["crv"], "Ed25519");
                (
                    token_by(&ed),
                    DecodingKey::from_ed_components(key["x"].as_str().unwrap()).unwrap(),
                    jsonwebtoken::Algorithm::EdDSA,
                )
            } else {
                assert_eq!(kid, rsa.kid);
                assert_eq!(key["kty"], "RSA");
                assert_eq!(key["e"], "AQAB");
                (
                    token_by(&rsa),
                    DecodingKey::from_rsa_components(
                        key["n"].as_str().unwrap(),
                        key["e"].as_str().unwrap(),
                    )
                    .unwrap(),
                    jsonwebtoken::Algorithm::RS256,
                )
            };
            assert_eq!(key["alg"], alg_name(alg));
            let (signed, sig) = token.rsplit_once('.').unwrap();
            assert!(jsonwebtoken::crypto::verify(sig, signed.as_bytes(), &decoding, alg).unwrap());
        }
    }

    fn alg_name(alg: jsonwebtoken::Algorithm) -> &'static str {
        match alg {
            jsonwebtoken::Algorithm::EdDSA => "EdDSA",
            jsonwebtoken::Algorithm::RS256 => "RS256",
            _ => "other",
        }
    }
}
