//! API key tokens: `cairn_<id>_<secret>`. `id` (16 lower-case base32
//! characters) is public and names the stored key; only the SHA-256 of the
//! secret (43 characters of URL-safe base64, 256 random bits) is stored.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Every token starts with this, so leaked keys are easy to recognise.
pub const PREFIX: &str = "cairn_";

/// Length of the public id, in base32 characters.
pub const ID_LEN: usize = 16;
/// Length of the secret: 32 bytes as URL-safe base64 without padding.
pub const SECRET_LEN: usize = 43;
const SECRET_BYTES: usize = 32;
const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// A new key: give `token` to its holder once, store `id` and `secret_hash`.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub id: String,
    pub token: String,
    pub secret_hash: String,
}

/// A fresh key from the operating system's random source.
pub fn generate() -> GeneratedKey {
    let mut raw = [0u8; ID_LEN];
    OsRng.fill_bytes(&mut raw);
    // 256 is a multiple of 32: every character is uniformly distributed.
    let id: String = raw
        .iter()
        .map(|b| char::from(BASE32[usize::from(b & 31)]))
        .collect();
    let secret = random_token(SECRET_BYTES);
    let token = format!("{PREFIX}{id}_{secret}");
    let secret_hash = hash_secret(&secret);
    GeneratedKey {
        id,
        token,
        secret_hash,
    }
}

/// `(id, secret)` of a well-formed token; `None` for anything else.
pub fn parse(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    if rest.len() != ID_LEN + 1 + SECRET_LEN || !rest.is_ascii() {
        return None;
    }
    let (id, tail) = rest.split_at(ID_LEN);
    let secret = tail.strip_prefix('_')?;
    if !id.bytes().all(|b| BASE32.contains(&b)) {
        return None;
    }
    if !secret
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return None;
    }
    // 43 characters carry 258 bits: the last one must leave the 2 spare
    // bits zero, or the text is not the canonical encoding of 32 bytes.
    match URL_SAFE_NO_PAD.decode(secret) {
        Ok(bytes) if bytes.len() == SECRET_BYTES => Some((id, secret)),
        _ => None,
    }
}

/// Hex SHA-256 of a secret (of an API key or a refresh token).
pub fn hash_secret(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `hash`, compared in constant time.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    let computed = hash_secret(secret);
    // Lengths are public (always 64 for a real hash); contents are compared
    // without early exit.
    computed.len() == hash.len() && bool::from(computed.as_bytes().ct_eq(hash.as_bytes()))
}

/// `bytes` random bytes as URL-safe base64 without padding (refresh
/// tokens, ids of signing keys).
pub fn random_token(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    OsRng.fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_key_parses_and_verifies() {
        let key = generate();
        assert!(key.token.starts_with(PREFIX));
        assert_eq!(key.token.len(), PREFIX.len() + ID_LEN + 1 + SECRET_LEN);
        let (id, secret) = parse(&key.token).unwrap();
        assert_eq!(id, key.id);
        assert_eq!(secret.len(), SECRET_LEN);
        assert!(verify_secret(secret, &key.secret_hash));
        assert!(!verify_secret("something else", &key.secret_hash));
        assert_eq!(key.secret_hash.len(), 64);
    }

    #[test]
    fn generated_keys_differ() {
        let a = generate();
        let b = generate();
        assert_ne!(a.id, b.id);
        assert_ne!(a.token, b.token);
        assert_ne!(a.secret_hash, b.secret_hash);
    }

    #[test]
    fn hash_is_hex_sha256() {
        assert_eq!(
            hash_secret("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn verify_secret_rejects_wrong_or_malformed_hashes() {
        let h = hash_secret("s3cret");
        assert!(verify_secret("s3cret", &h));
        assert!(!verify_secret("s3cret", &h.to_uppercase()));
        assert!(!verify_secret("s3cret", &h[..63]));
        assert!(!verify_secret("s3cret", ""));
        assert!(!verify_secret("s3cres", &h));
    }

    #[test]
    fn parse_rejects_malformed_tokens() {
        let good = generate().token;
        let (id, secret) = parse(&good).unwrap();
        let cases = [
            String::new(),
            "cairn_".to_owned(),
            format!("cairn-{id}_{secret}"),
            format!("CAIRN_{id}_{secret}"),
            format!("xcairn_{id}_{secret}"),
            format!("{id}_{secret}"),
            // wrong lengths
            format!("cairn_{}_{secret}", &id[..15]),
            format!("cairn_{id}a_{secret}"),
            format!("cairn_{id}_{}", &secret[..42]),
            format!("cairn_{id}_{secret}A"),
            format!("{good} "),
            format!(" {good}"),
            // wrong separator
            format!("cairn_{id}-{secret}"),
            format!("cairn_{id}{secret}_"),
            // bad charset in id: upper case, digits outside 2-7, symbols
            format!("cairn_{}_{secret}", id.to_uppercase()),
            format!("cairn_{}1_{secret}", &id[..15]),
            format!("cairn_{}8_{secret}", &id[..15]),
            format!("cairn_{}=_{secret}", &id[..15]),
            // bad charset in secret
            format!("cairn_{id}_{}+", &secret[..42]),
            format!("cairn_{id}_{}/", &secret[..42]),
            format!("cairn_{id}_{}=", &secret[..42]),
            format!("cairn_{id}_{}é", &secret[..41]),
        ];
        for case in &cases {
            assert_eq!(parse(case), None, "{case:?} was accepted");
        }
    }

    #[test]
    fn parse_rejects_non_canonical_secret_encoding() {
        // 'B' as the 43rd character sets one of the two spare bits.
        let token = format!("cairn_{}_{}B", "a".repeat(16), "A".repeat(42));
        assert_eq!(parse(&token), None);
        let token = format!("cairn_{}_{}A", "a".repeat(16), "A".repeat(42));
        assert!(parse(&token).is_some());
    }

    #[test]
    fn random_token_has_expected_length_and_charset() {
        for n in [0usize, 1, 16, 32, 33] {
            let t = random_token(n);
            assert_eq!(URL_SAFE_NO_PAD.decode(&t).unwrap().len(), n);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
        assert_ne!(random_token(32), random_token(32));
    }
}
