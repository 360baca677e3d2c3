//! Credentials, with no knowledge of HTTP or SQL: API key tokens, Argon2id
//! password hashes, JWT access tokens signed and verified with stored keys
//! (EdDSA by default, RS256 or HS256), and OIDC bearer tokens verified
//! against an issuer's JWKS. What a credential may do is decided elsewhere
//! (`cairn_domain::access::decide`).

pub mod apikey;
pub mod jwt;
pub mod oidc;
pub mod password;

/// A credential could not be made (key generation, hashing).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CryptoError(pub String);
