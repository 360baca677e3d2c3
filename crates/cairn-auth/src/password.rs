//! Argon2id password hashes (PHC strings). Hashing is deliberately slow:
//! call these from a blocking thread.

use crate::CryptoError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::OsRng;
use std::sync::OnceLock;

/// Argon2id, version 0x13, the crate's default cost (19 MiB, 2 passes, 1 lane).
fn argon2() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::default())
}

/// Argon2id with a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| CryptoError(format!("hashing a password with Argon2id: {e}")))
}

/// Whether `password` matches the PHC string (false for a malformed one).
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    // Only Argon2id hashes are ours; refuse other algorithms in the PHC id.
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return false;
    }
    argon2()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Spend the time of one verification, for logins naming unknown users,
/// so response times do not tell which user names exist.
pub fn dummy_verify(password: &str) {
    static DUMMY: OnceLock<Option<String>> = OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_password("cairn dummy password").ok());
    if let Some(phc) = dummy {
        let _ = verify_password(password, phc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_then_verify() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$"), "{phc}");
        assert!(verify_password("correct horse battery staple", &phc));
        assert!(!verify_password("correct horse battery stapl", &phc));
        assert!(!verify_password("", &phc));
    }

    #[test]
    fn salts_are_random() {
        let a = hash_password("pw").unwrap();
        let b = hash_password("pw").unwrap();
        assert_ne!(a, b);
        assert!(verify_password("pw", &a));
        assert!(verify_password("pw", &b));
    }

    #[test]
    fn malformed_or_foreign_hashes_do_not_verify() {
        assert!(!verify_password("pw", ""));
        assert!(!verify_password("pw", "not a phc string"));
        assert!(!verify_password("pw", "$argon2id$v=19$m=19456,t=2,p=1$"));
        let phc = hash_password("pw").unwrap();
        // Same parameters, algorithm renamed to Argon2i: refused.
        let argon2i = phc.replacen("$argon2id$", "$argon2i$", 1);
        assert!(!verify_password("pw", &argon2i));
        // Hash truncated.
        assert!(!verify_password("pw", &phc[..phc.len() - 4]));
    }

    #[test]
    fn empty_and_unicode_passwords() {
        let phc = hash_password("").unwrap();
        assert!(verify_password("", &phc));
        assert!(!verify_password(" ", &phc));
        let phc = hash_password("pässwörd ✓").unwrap();
        assert!(verify_password("pässwörd ✓", &phc));
        assert!(!verify_password("passwörd ✓", &phc));
    }

    #[test]
    fn dummy_verify_takes_about_as_long_as_a_verification() {
        let phc = hash_password("pw").unwrap();
        let t = std::time::Instant::now();
        assert!(verify_password("pw", &phc));
        let real = t.elapsed();
        dummy_verify("warm up the dummy hash");
        let t = std::time::Instant::now();
        dummy_verify("pw");
        let dummy = t.elapsed();
        // Both run the same Argon2id cost; allow generous scheduling noise.
        assert!(dummy * 4 >= real, "dummy {dummy:?} vs real {real:?}");
    }
}
