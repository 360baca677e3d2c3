//! API key tokens: `cairn_<id>_<secret>`. `id` (16 lower-case base32
//! characters) is public and names the stored key; only the SHA-256 of the
//! secret (43 characters of URL-safe base64, 256 random bits) is stored.

/// Every token starts with this, so leaked keys are easy to recognise.
pub const PREFIX: &str = "cairn_";

/// A new key: give `token` to its holder once, store `id` and `secret_hash`.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub id: String,
    pub token: String,
    pub secret_hash: String,
}

/// A fresh key from the operating system's random source.
pub fn generate() -> GeneratedKey {
    unimplemented!("helper C")
}

/// `(id, secret)` of a well-formed token; `None` for anything else.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let _ = token;
    unimplemented!("helper C")
}

/// Hex SHA-256 of a secret (of an API key or a refresh token).
pub fn hash_secret(secret: &str) -> String {
    let _ = secret;
    unimplemented!("helper C")
}

/// Whether `secret` hashes to `hash`, compared in constant time.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    let _ = (secret, hash);
    unimplemented!("helper C")
}

/// `bytes` random bytes as URL-safe base64 without padding (refresh
/// tokens, ids of signing keys).
pub fn random_token(bytes: usize) -> String {
    let _ = bytes;
    unimplemented!("helper C")
}
