//! [`IdempotencyStore`] on the embedded store. A claim is one writer job:
//! the writer runs jobs one after another, so the look-up and the insert of
//! a claim cannot interleave with another claim. Completing and releasing
//! are one job each too. The claim's bounded purge of expired rows runs in
//! the same job (a job refuses only before its first change, and these
//! never refuse).

use super::SqliteStore;
use super::rows::db;
use crate::StoreResult;
use crate::idempotency::{
    Claim, IdempotencyStore, KeyRow, NewClaim, PURGE_PER_CLAIM, StoredResponse, headers_to_json,
};
use async_trait::async_trait;
use cairn_domain::Timestamp;
use rusqlite::{Connection, OptionalExtension, params};

fn load(conn: &Connection, scope: &str, key: &str) -> StoreResult<Option<KeyRow>> {
    conn.prepare_cached(
        "SELECT fingerprint, state, status, headers, body, created_at, expires_at
         FROM idempotency_keys WHERE scope = ?1 AND key = ?2",
    )
    .and_then(|mut st| {
        st.query_row(params![scope, key], |r| {
            Ok(KeyRow {
                fingerprint: r.get(0)?,
                state: r.get(1)?,
                status: r.get(2)?,
                headers: r.get(3)?,
                body: r.get(4)?,
                created_at: r.get(5)?,
                expires_at: r.get(6)?,
            })
        })
        .optional()
    })
    .map_err(db("reading an idempotency key"))
}

fn purge(conn: &Connection, now: i64, limit: u32) -> StoreResult<u64> {
    conn.prepare_cached(
        "DELETE FROM idempotency_keys WHERE (scope, key) IN
            (SELECT scope, key FROM idempotency_keys WHERE expires_at <= ?1 LIMIT ?2)",
    )
    .and_then(|mut st| st.execute(params![now, limit]))
    .map(|n| n as u64)
    .map_err(db("purging expired idempotency keys"))
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn claim_idempotency_key(&self, claim: NewClaim) -> StoreResult<Claim> {
        self.write(move |ctx| {
            let now = claim.now.micros();
            if let Some(row) = load(ctx.conn, &claim.scope, &claim.key)?
                && row.expires_at > now
            {
                return row.record().map(Claim::Existing);
            }
            // Absent or expired: the expired row (if any) goes with the
            // purge, and a few other expired rows with it.
            ctx.conn
                .prepare_cached("DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2")
                .and_then(|mut st| st.execute(params![claim.scope, claim.key]))
                .map_err(db("replacing an expired idempotency key"))?;
            purge(ctx.conn, now, PURGE_PER_CLAIM)?;
            ctx.conn
                .prepare_cached(
                    "INSERT INTO idempotency_keys
                        (scope, key, fingerprint, token, state, created_at, expires_at)
                     VALUES (?1, ?2, ?3, ?4, 'in_progress', ?5, ?6)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        claim.scope,
                        claim.key,
                        claim.fingerprint,
                        claim.token,
                        now,
                        claim.expires_at.micros(),
                    ])
                })
                .map_err(db("claiming an idempotency key"))?;
            Ok(Claim::Claimed)
        })
        .await
    }

    async fn complete_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        token: &str,
        response: StoredResponse,
    ) -> StoreResult<bool> {
        let (scope, key, token) = (scope.to_owned(), key.to_owned(), token.to_owned());
        let headers = headers_to_json(&response.headers);
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached(
                    "UPDATE idempotency_keys
                     SET state = 'completed', status = ?4, headers = ?5, body = ?6
                     WHERE scope = ?1 AND key = ?2 AND token = ?3 AND state = 'in_progress'",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        scope,
                        key,
                        token,
                        response.status,
                        headers,
                        response.body
                    ])
                })
                .map(|n| n == 1)
                .map_err(db("storing an idempotent response"))
        })
        .await
    }

    async fn release_idempotency_key(
        &self,
        scope: &str,
        key: &str,
        token: &str,
    ) -> StoreResult<bool> {
        let (scope, key, token) = (scope.to_owned(), key.to_owned(), token.to_owned());
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached(
                    "DELETE FROM idempotency_keys
                     WHERE scope = ?1 AND key = ?2 AND token = ?3 AND state = 'in_progress'",
                )
                .and_then(|mut st| st.execute(params![scope, key, token]))
                .map(|n| n == 1)
                .map_err(db("releasing an idempotency key"))
        })
        .await
    }

    async fn purge_idempotency_keys(&self, now: Timestamp, limit: u32) -> StoreResult<u64> {
        self.write(move |ctx| purge(ctx.conn, now.micros(), limit))
            .await
    }
}
