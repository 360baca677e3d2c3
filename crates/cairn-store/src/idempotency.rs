//! Idempotency keys (`Idempotency-Key` on POST and PATCH, docs/idempotency.md):
//! the claims and the responses stored under them.
//!
//! Keys are stored, never kept in one process's memory, so that a retry
//! landing on another node of the same PostgreSQL database is answered the
//! same way. A key belongs to a scope (the principal that sent it), so two
//! callers' keys never collide. The unique `(scope, key)` constraint decides
//! which of several concurrent requests claims a key; the others see the
//! claim. An expired row is treated as absent: claiming over it replaces it,
//! and every claim also purges a bounded number of other expired rows.

use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use cairn_domain::Timestamp;

/// At most this many expired rows are purged by one claim (so purging keeps
/// up with claiming, one row created for up to this many removed, and a
/// claim's work stays bounded).
pub const PURGE_PER_CLAIM: u32 = 16;

/// A request to claim a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewClaim {
    /// Whose key it is (the principal id).
    pub scope: String,
    /// The `Idempotency-Key` header's value.
    pub key: String,
    /// Hex SHA-256 of the request (method, route, path, body...).
    pub fingerprint: String,
    /// Random; only the holder of the claim can complete or release it.
    pub token: String,
    pub now: Timestamp,
    /// When the key (claimed or completed) is forgotten.
    pub expires_at: Timestamp,
}

/// A response as stored, to be replayed byte for byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub status: u16,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Where a key that someone else claimed stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyState {
    /// Its request is still running (or its node died while it ran).
    InProgress,
    Completed(StoredResponse),
}

/// A live (unexpired) key found by a claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    pub fingerprint: String,
    pub state: KeyState,
    pub created_at: Timestamp,
    pub expires_at: Timestamp,
}

/// What a claim found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key was free (or expired) and is now claimed with this claim's
    /// token: run the request, then complete or release it.
    Claimed,
    /// The key is held: compare fingerprints, replay or refuse.
    Existing(KeyRecord),
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claim `(scope, key)` as in progress, unless an unexpired row holds
    /// it: then that row is returned and nothing changes. Durable before it
    /// returns, and atomic across nodes.
    async fn claim_idempotency_key(&self, claim: NewClaim) -> StoreResult<Claim>;

    /// Store the response of a claimed key. `false` when the claim is no
    /// longer this token's (it expired and was claimed again, or released).
    async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        token: &str,
        response: StoredResponse,
    ) -> StoreResult<bool>;

    /// Drop an in-progress claim so that the key may be used again. `false`
    /// when the claim is no longer this token's.
    async fn release_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        token: &str,
    ) -> StoreResult<bool>;

    /// Delete up to `limit` rows expired at `now`; returns how many.
    async fn purge_idempotency_keys(&self, now: Timestamp, limit: u32) -> StoreResult<u64>;
}

/// A stored key's columns as both stores read them (`SELECT fingerprint,
/// state, status, headers, body, created_at, expires_at`).
pub(crate) struct KeyRow {
    pub fingerprint: String,
    pub state: String,
    pub status: Option<u16>,
    pub headers: Option<String>,
    pub body: Option<Vec<u8>>,
    pub created_at: i64,
    pub expires_at: i64,
}

impl KeyRow {
    /// The record, or why the row is not one.
    pub(crate) fn record(self) -> StoreResult<KeyRecord> {
        let state = match (self.state.as_str(), self.status) {
            ("in_progress", _) => KeyState::InProgress,
            ("completed", Some(status)) => KeyState::Completed(StoredResponse {
                status,
                headers: headers_from_json(self.headers.as_deref().unwrap_or("[]"))
                    .map_err(StoreError::Internal)?,
                body: self.body.unwrap_or_default(),
            }),
            (other, _) => {
                return Err(StoreError::Internal(format!(
                    "stored idempotency key state {other:?} is not in_progress or completed"
                )));
            }
        };
        Ok(KeyRecord {
            fingerprint: self.fingerprint,
            state,
            created_at: Timestamp::from_micros(self.created_at),
            expires_at: Timestamp::from_micros(self.expires_at),
        })
    }
}

/// Headers as stored: a JSON array of `[name, value]` pairs.
pub fn headers_to_json(headers: &[(String, String)]) -> String {
    serde_json::Value::Array(
        headers
            .iter()
            .map(|(n, v)| {
                serde_json::Value::Array(vec![
                    serde_json::Value::String(n.clone()),
                    serde_json::Value::String(v.clone()),
                ])
            })
            .collect(),
    )
    .to_string()
}

/// The inverse of [`headers_to_json`].
pub fn headers_from_json(text: &str) -> Result<Vec<(String, String)>, String> {
    serde_json::from_str::<Vec<(String, String)>>(text)
        .map_err(|e| format!("stored response headers {text:?} are not [name, value] pairs: {e}"))
}
