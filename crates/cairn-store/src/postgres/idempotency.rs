//! [`IdempotencyStore`] on PostgreSQL (`migrations/postgres/0006_idempotency.sql`).
//!
//! Several nodes share the table, so a claim is one statement: an `INSERT
//! ... ON CONFLICT (scope, key) DO UPDATE ... WHERE` the existing row has
//! expired. Of two concurrent claims of a free key, the second waits for the
//! first's row, then finds the conflict and (the row being live) changes
//! nothing and returns nothing: it then reads the row that won. The same
//! statement purges a bounded number of other expired rows (a CTE, rows
//! locked by someone else skipped). Completing and releasing match the
//! claim's token, so a request whose claim expired and was claimed again
//! can never overwrite the new claim.

use super::PostgresStore;
use super::rows::{col, db};
use crate::idempotency::{
    Claim, IdempotencyStore, KeyRecord, KeyRow, NewClaim, PURGE_PER_CLAIM, StoredResponse,
    headers_to_json,
};
use crate::{StoreError, StoreResult};
use async_trait::async_trait;
use cairn_domain::{FieldErrors, Timestamp};
use sqlx_core::query::query;
use sqlx_postgres::PgRow;

/// A claim that lost to a row that then went away (released) is tried again
/// this many times before giving up.
const CLAIM_ATTEMPTS: usize = 4;

fn record(row: &PgRow) -> StoreResult<KeyRecord> {
    let status: Option<i32> = col(row, 2)?;
    let status = status
        .map(|s| {
            u16::try_from(s).map_err(|_| {
                StoreError::Internal(format!("stored response status {s} is not HTTP"))
            })
        })
        .transpose()?;
    KeyRow {
        fingerprint: col(row, 0)?,
        state: col(row, 1)?,
        status,
        headers: col(row, 3)?,
        body: col(row, 4)?,
        created_at: col(row, 5)?,
        expires_at: col(row, 6)?,
    }
    .record()
}

/// PostgreSQL text cannot hold NUL; the API never sends one (keys are
/// visible ASCII), but the store refuses it by name rather than failing.
fn check(field: &str, value: &str) -> StoreResult<()> {
    if value.contains('\0') {
        let mut errors = FieldErrors::default();
        errors.push(field, "must not contain NUL characters");
        return Err(StoreError::Invalid(errors));
    }
    Ok(())
}

#[async_trait]
impl IdempotencyStore for PostgresStore {
    async fn claim_idempotency_key(&self, claim: NewClaim) -> StoreResult<Claim> {
        check("scope", &claim.scope)?;
        check("Idempotency-Key", &claim.key)?;
        for _ in 0..CLAIM_ATTEMPTS {
            let claimed = query(
                "WITH purged AS (
                    DELETE FROM idempotency_keys WHERE ctid IN (
                        SELECT ctid FROM idempotency_keys
                        WHERE expires_at <= $5 AND NOT (scope = $1 AND key = $2)
                        LIMIT $7 FOR UPDATE SKIP LOCKED)
                 )
                 INSERT INTO idempotency_keys
                    (scope, key, fingerprint, token, state, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, 'in_progress', $5, $6)
                 ON CONFLICT (scope, key) DO UPDATE
                    SET fingerprint = EXCLUDED.fingerprint, token = EXCLUDED.token,
                        state = 'in_progress', status = NULL, headers = NULL, body = NULL,
                        created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
                    WHERE idempotency_keys.expires_at <= EXCLUDED.created_at
                 RETURNING 1",
            )
            .bind(claim.scope.as_str())
            .bind(claim.key.as_str())
            .bind(claim.fingerprint.as_str())
            .bind(claim.token.as_str())
            .bind(claim.now.micros())
            .bind(claim.expires_at.micros())
            .bind(i64::from(PURGE_PER_CLAIM))
            .fetch_optional(&self.pool)
            .await
            .map_err(db("claiming an idempotency key"))?;
            if claimed.is_some() {
                return Ok(Claim::Claimed);
            }
            // A live row holds the key: read it (a new statement, so a new
            // snapshot that sees the winner's committed row).
            let existing = query(
                "SELECT fingerprint, state, status, headers, body, created_at, expires_at
                 FROM idempotency_keys WHERE scope = $1 AND key = $2 AND expires_at > $3",
            )
            .bind(claim.scope.as_str())
            .bind(claim.key.as_str())
            .bind(claim.now.micros())
            .fetch_optional(&self.pool)
            .await
            .map_err(db("reading an idempotency key"))?;
            if let Some(row) = existing {
                return record(&row).map(Claim::Existing);
            }
            // Released (or expired) in between: claim again.
        }
        Err(StoreError::Unavailable(format!(
            "the idempotency key was claimed and released {CLAIM_ATTEMPTS} times while this request tried to claim it"
        )))
    }

    async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        token: &str,
        response: StoredResponse,
    ) -> StoreResult<bool> {
        let done = query(
            "UPDATE idempotency_keys
             SET state = 'completed', status = $4, headers = $5, body = $6
             WHERE scope = $1 AND key = $2 AND token = $3 AND state = 'in_progress'",
        )
        .bind(scope)
        .bind(key)
        .bind(token)
        .bind(i32::from(response.status))
        .bind(headers_to_json(&response.headers))
        .bind(response.body)
        .execute(&self.pool)
        .await
        .map_err(db("storing an idempotent response"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn release_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        token: &str,
    ) -> StoreResult<bool> {
        let done = query(
            "DELETE FROM idempotency_keys
             WHERE scope = $1 AND key = $2 AND token = $3 AND state = 'in_progress'",
        )
        .bind(scope)
        .bind(key)
        .bind(token)
        .execute(&self.pool)
        .await
        .map_err(db("releasing an idempotency key"))?;
        Ok(done.rows_affected() == 1)
    }

    async fn purge_idempotency_keys(&self, now: Timestamp, limit: u32) -> StoreResult<u64> {
        let done = query(
            "DELETE FROM idempotency_keys WHERE ctid IN (
                SELECT ctid FROM idempotency_keys WHERE expires_at <= $1
                LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(now.micros())
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(db("purging expired idempotency keys"))?;
        Ok(done.rows_affected())
    }
}
