//! JWT access tokens signed with stored keys (`cairn_store::access::SigningKeyRecord`).
//! The header carries `kid`; a token verifies only with the key its `kid`
//! names and only with that key's own algorithm (never `none`, never an
//! algorithm chosen by the token).

use crate::CryptoError;
use cairn_domain::Timestamp;
use cairn_store::access::SigningKeyRecord;
use serde::{Deserialize, Serialize};

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
}

/// A new signing key with a random `kid`, created at `now`.
pub fn generate_key(algorithm: Algorithm, now: Timestamp) -> Result<SigningKeyRecord, CryptoError> {
    let _ = (algorithm, now);
    unimplemented!("helper C")
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
    _private: (),
}

impl KeyRing {
    /// Keys from the store (any order). Fails if a stored key does not load.
    /// Keys retired more than `grace_secs` before `now` are left out.
    pub fn new(
        records: &[SigningKeyRecord],
        now: Timestamp,
        grace_secs: i64,
    ) -> Result<Self, CryptoError> {
        let _ = (records, now, grace_secs);
        unimplemented!("helper C")
    }

    /// Sign with the current key (header `alg` and `kid` set). Fails when
    /// there is no unretired key.
    pub fn sign(&self, claims: &Claims) -> Result<String, CryptoError> {
        let _ = claims;
        unimplemented!("helper C")
    }

    /// The `kid` in a token's header, without checking anything else.
    pub fn peek_kid(token: &str) -> Option<String> {
        let _ = token;
        unimplemented!("helper C")
    }

    /// Whether a key with this `kid` is in the ring.
    pub fn knows(&self, kid: &str) -> bool {
        let _ = kid;
        unimplemented!("helper C")
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
        let _ = (token, issuer, audience, now_secs, leeway_secs);
        unimplemented!("helper C")
    }

    /// The public keys as a JWKS document (`{"keys": [...]}`), HS256 keys
    /// left out.
    pub fn jwks(&self) -> serde_json::Value {
        unimplemented!("helper C")
    }
}
