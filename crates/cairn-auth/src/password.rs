//! Argon2id password hashes (PHC strings). Hashing is deliberately slow:
//! call these from a blocking thread.

use crate::CryptoError;

/// Argon2id with a random salt, as a PHC string.
pub fn hash_password(password: &str) -> Result<String, CryptoError> {
    let _ = password;
    unimplemented!("helper C")
}

/// Whether `password` matches the PHC string (false for a malformed one).
pub fn verify_password(password: &str, phc: &str) -> bool {
    let _ = (password, phc);
    unimplemented!("helper C")
}

/// Spend the time of one verification, for logins naming unknown users,
/// so response times do not tell which user names exist.
pub fn dummy_verify(password: &str) {
    let _ = password;
    unimplemented!("helper C")
}
