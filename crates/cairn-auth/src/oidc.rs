//! Bearer JWTs from an external OpenID Connect issuer, verified against the
//! issuer's JWKS: fetched on first use, cached, fetched again when a token
//! names an unknown `kid` (at most once per `min_refetch_secs`).

use crate::jwt::TokenError;
use std::collections::BTreeMap;

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

pub struct OidcVerifier {
    _private: (),
}

impl OidcVerifier {
    pub fn new(config: OidcConfig) -> Self {
        let _ = config;
        unimplemented!("helper C")
    }

    /// The `iss` claim of a token, unverified: to tell issuers apart.
    pub fn peek_issuer(token: &str) -> Option<String> {
        let _ = token;
        unimplemented!("helper C")
    }

    pub fn issuer(&self) -> &str {
        unimplemented!("helper C")
    }

    /// Verify signature (RS256, ES256 or EdDSA keys from the JWKS, the
    /// algorithm fixed by the key, never `none` or HMAC), `iss`, `aud`,
    /// `exp`, `nbf`, and map the roles claim.
    pub async fn verify(&self, token: &str) -> Result<OidcIdentity, TokenError> {
        let _ = token;
        unimplemented!("helper C")
    }
}
