//! [`AccessStore`] on PostgreSQL: users, API keys, roles, grants, sessions
//! with their refresh tokens, JWT signing keys and the audit log
//! (`migrations/postgres/0004_access.sql`).
//!
//! Several nodes share the database, so every rule that must hold across
//! them is kept by one statement, one transaction or a constraint:
//!
//! - a refresh token rotates with one conditional `UPDATE ... WHERE used_at
//!   IS NULL` (after locking its live session row in the same statement):
//!   of two concurrent presentations the second waits for the first,
//!   re-checks the condition, matches nothing and then sees the token
//!   used, which is reuse (the session is revoked); a revocation of the
//!   session and a rotation take turns too;
//! - `bootstrap_api_key` checks and inserts under `LOCK TABLE users,
//!   api_keys IN SHARE ROW EXCLUSIVE MODE`, which conflicts with itself and
//!   with every insert into either table, so no user or key can appear
//!   between the check and the insert;
//! - at most one signing key is unretired (a unique partial index on a
//!   constant); `ensure_signing_key` inserts with `ON CONFLICT DO NOTHING`
//!   on it and then reads the winner in a new statement (a new snapshot);
//!   `rotate_signing_key` locks the table first so that two rotations run
//!   one after the other;
//! - a failed login is counted (and the account locked) by one `UPDATE`;
//! - keys, sessions and grants for `user:<name>` are stored only while the
//!   user exists, holding its row (`FOR KEY SHARE`) until commit, so that
//!   `delete_user` (which deletes the row, then revokes and deletes what
//!   belongs to it, in one transaction) never leaves one behind;
//! - the audit log refuses `UPDATE`, `DELETE` and `TRUNCATE` (a trigger).
//!
//! A name or id already taken is `Invalid` naming the field (the unique
//! violation is mapped, never reported as an internal error); a missing
//! row is `NotFound`. PostgreSQL text cannot hold NUL characters, so a
//! write carrying one is `Invalid` naming the field, and a lookup by a key
//! containing one finds nothing without asking the server (no stored key
//! can contain one); audit entries have theirs replaced (U+FFFD) so that an
//! attempt is always recorded.

use super::rows::{col, db, time};
use super::{ListQuery, Param, PostgresStore, text};
use crate::access::{
    AccessStore, ApiKeyRecord, AuditEntry, AuditFilter, Credential, GrantFilter, GrantRecord,
    LoginFailure, NewAuditEntry, NewRefreshToken, RefreshOutcome, RoleRecord, SessionRecord,
    SigningKeyRecord, UserPatch, UserRecord,
};
use crate::{PageRequest, StoreError, StoreResult};
use async_trait::async_trait;
use cairn_domain::{FieldErrors, Timestamp};
use sqlx_core::query::query;
use sqlx_core::sql_str::AssertSqlSafe;
use sqlx_postgres::{PgConnection, PgRow};

/// A store error for a write refused because `field` holds a value another
/// row has, or any other database error as [`db`] maps it.
fn taken(
    context: &'static str,
    field: &'static str,
    message: String,
) -> impl FnOnce(sqlx_core::Error) -> StoreError {
    move |e| {
        if e.as_database_error()
            .is_some_and(|d| d.is_unique_violation())
        {
            invalid(field, message)
        } else {
            db(context)(e)
        }
    }
}

fn invalid(field: &str, message: impl Into<String>) -> StoreError {
    let mut errors = FieldErrors::default();
    errors.push(field, message);
    StoreError::Invalid(errors)
}

/// Whether PostgreSQL can store `s` (text cannot hold NUL). A key that it
/// cannot store matches no row.
fn storable(s: &str) -> bool {
    !s.contains('\0')
}

/// Collects the fields of a write that PostgreSQL cannot store.
#[derive(Default)]
struct Storable(FieldErrors);

impl Storable {
    fn text(mut self, field: &str, value: &str) -> Self {
        if !storable(value) {
            self.0.push(field, "must not contain NUL characters");
        }
        self
    }

    fn opt(self, field: &str, value: Option<&str>) -> Self {
        match value {
            Some(v) => self.text(field, v),
            None => self,
        }
    }

    fn list(self, field: &str, values: &[String]) -> Self {
        match values.iter().find(|v| !storable(v)) {
            Some(v) => self.text(field, v),
            None => self,
        }
    }

    fn check(self) -> StoreResult<()> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(StoreError::Invalid(self.0))
        }
    }
}

/// Audit text as PostgreSQL can store it: NUL replaced by U+FFFD, so that
/// an entry about odd input is still recorded.
fn loggable(s: String) -> String {
    if storable(&s) {
        s
    } else {
        s.replace('\0', "\u{FFFD}")
    }
}

/// A page cursor PostgreSQL can compare.
fn check_page(page: &PageRequest) -> StoreResult<()> {
    Storable::default()
        .opt("after", page.after.as_deref())
        .check()
}

fn no_user(name: &str) -> StoreError {
    StoreError::NotFound(format!("no user named {name:?}"))
}

fn opt_time(row: &PgRow, idx: usize) -> StoreResult<Option<Timestamp>> {
    Ok(col::<Option<i64>>(row, idx)?.map(Timestamp::from_micros))
}

fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn uncount(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

fn limit(page: &PageRequest) -> i64 {
    i64::from(page.limit)
}

/// The principal of a user's sessions, keys and grants.
fn user_principal(name: &str) -> String {
    format!("user:{name}")
}

const USER_COLUMNS: &str = "name, password_hash, roles, disabled, failed_logins, locked_until, \
                            last_login_at, created_at, updated_at";

fn user_row(row: &PgRow) -> StoreResult<UserRecord> {
    user_at(row, 0)
}

/// The [`USER_COLUMNS`] starting at column `f`.
fn user_at(row: &PgRow, f: usize) -> StoreResult<UserRecord> {
    Ok(UserRecord {
        name: col(row, f)?,
        password_hash: col(row, f + 1)?,
        roles: col(row, f + 2)?,
        disabled: col(row, f + 3)?,
        failed_logins: uncount(col(row, f + 4)?),
        locked_until: opt_time(row, f + 5)?,
        last_login_at: opt_time(row, f + 6)?,
        created_at: time(row, f + 7)?,
        updated_at: time(row, f + 8)?,
    })
}

const API_KEY_COLUMNS: &str = "id, name, secret_hash, principal, roles, scopes, expires_at, \
                               revoked_at, last_used_at, created_at, created_by";

fn api_key_row(row: &PgRow) -> StoreResult<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: col(row, 0)?,
        name: col(row, 1)?,
        secret_hash: col(row, 2)?,
        principal: col(row, 3)?,
        roles: col(row, 4)?,
        scopes: col(row, 5)?,
        expires_at: opt_time(row, 6)?,
        revoked_at: opt_time(row, 7)?,
        last_used_at: opt_time(row, 8)?,
        created_at: time(row, 9)?,
        created_by: col(row, 10)?,
    })
}

const ROLE_COLUMNS: &str = "name, permissions, on_grant, description, created_at";

fn role_row(row: &PgRow) -> StoreResult<RoleRecord> {
    Ok(RoleRecord {
        name: col(row, 0)?,
        permissions: col(row, 1)?,
        on_grant: col(row, 2)?,
        description: col(row, 3)?,
        created_at: time(row, 4)?,
    })
}

const GRANT_COLUMNS: &str =
    "id, principal, object_kind, object_id, permissions, created_at, created_by";

fn grant_row(row: &PgRow) -> StoreResult<GrantRecord> {
    grant_at(row, 0)
}

/// The [`GRANT_COLUMNS`] starting at column `f`.
fn grant_at(row: &PgRow, f: usize) -> StoreResult<GrantRecord> {
    Ok(GrantRecord {
        id: col(row, f)?,
        principal: col(row, f + 1)?,
        object_kind: col(row, f + 2)?,
        object_id: col(row, f + 3)?,
        permissions: col(row, f + 4)?,
        created_at: time(row, f + 5)?,
        created_by: col(row, f + 6)?,
    })
}

/// One round trip for what authenticating a request needs: `record_sql`
/// selects the credential's row (`width` columns, one named `principal`)
/// as `c`; each result row carries it, the user it acts as (all NULL when
/// none) and one grant of its principal (all NULL when none).
async fn credential<T>(
    store: &PostgresStore,
    record_sql: &str,
    key: &str,
    width: usize,
    record: impl Fn(&PgRow) -> StoreResult<T>,
) -> StoreResult<Option<Credential<T>>> {
    if !storable(key) {
        return Ok(None);
    }
    let rows = query(AssertSqlSafe(format!(
        "WITH c AS ({record_sql}) \
         SELECT c.*, u.name, u.password_hash, u.roles, u.disabled, u.failed_logins, \
                u.locked_until, u.last_login_at, u.created_at, u.updated_at, \
                g.id, g.principal, g.object_kind, g.object_id, g.permissions, \
                g.created_at, g.created_by \
         FROM c \
         LEFT JOIN users u \
           ON u.name = CASE WHEN starts_with(c.principal, 'user:') \
                            THEN substr(c.principal, 6) END \
         LEFT JOIN grants g ON g.principal = c.principal \
         ORDER BY g.id"
    )))
    .bind(key)
    .fetch_all(&store.pool)
    .await
    .map_err(db("reading a credential"))?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let user = match col::<Option<String>>(first, width)? {
        Some(_) => Some(user_at(first, width)?),
        None => None,
    };
    let mut grants = Vec::new();
    for row in &rows {
        if col::<Option<String>>(row, width + 9)?.is_some() {
            grants.push(grant_at(row, width + 9)?);
        }
    }
    Ok(Some(Credential {
        record: record(first)?,
        user,
        grants,
    }))
}

const SESSION_COLUMNS: &str = "id, principal, created_at, expires_at, revoked_at, revoked_reason";
/// [`SESSION_COLUMNS`] of a session aliased `s`.
const SESSION_COLUMNS_OF_S: &str =
    "s.id, s.principal, s.created_at, s.expires_at, s.revoked_at, s.revoked_reason";

/// The [`SESSION_COLUMNS`] starting at column `first`.
fn session_at(row: &PgRow, first: usize) -> StoreResult<SessionRecord> {
    Ok(SessionRecord {
        id: col(row, first)?,
        principal: col(row, first + 1)?,
        created_at: time(row, first + 2)?,
        expires_at: time(row, first + 3)?,
        revoked_at: opt_time(row, first + 4)?,
        revoked_reason: col(row, first + 5)?,
    })
}

fn session_row(row: &PgRow) -> StoreResult<SessionRecord> {
    session_at(row, 0)
}

const SIGNING_KEY_COLUMNS: &str = "kid, algorithm, private_key, public_key, created_at, retired_at";

fn signing_key_row(row: &PgRow) -> StoreResult<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: col(row, 0)?,
        algorithm: col(row, 1)?,
        private_key: col(row, 2)?,
        public_key: col(row, 3)?,
        created_at: time(row, 4)?,
        retired_at: opt_time(row, 5)?,
    })
}

const AUDIT_COLUMNS: &str =
    "seq, at, actor, action, target, outcome, detail, request_id, client_addr";

fn audit_row(row: &PgRow) -> StoreResult<AuditEntry> {
    let seq: i64 = col(row, 0)?;
    Ok(AuditEntry {
        seq: u64::try_from(seq).unwrap_or(0),
        entry: NewAuditEntry {
            at: time(row, 1)?,
            actor: col(row, 2)?,
            action: col(row, 3)?,
            target: col(row, 4)?,
            outcome: col(row, 5)?,
            detail: col(row, 6)?,
            request_id: col(row, 7)?,
            client_addr: col(row, 8)?,
        },
    })
}

/// A page of `table` keyed by its `name` column (users, roles).
async fn page_by_name<T>(
    conn: &mut PgConnection,
    table: &str,
    columns: &str,
    page: &PageRequest,
    map: impl Fn(&PgRow) -> StoreResult<T>,
    context: &'static str,
) -> StoreResult<Vec<T>> {
    let rows = match &page.after {
        Some(after) => {
            query(AssertSqlSafe(format!(
                "SELECT {columns} FROM {table} WHERE name > $1 ORDER BY name LIMIT $2"
            )))
            .bind(after.as_str())
            .bind(limit(page))
            .fetch_all(&mut *conn)
            .await
        }
        None => {
            query(AssertSqlSafe(format!(
                "SELECT {columns} FROM {table} ORDER BY name LIMIT $1"
            )))
            .bind(limit(page))
            .fetch_all(&mut *conn)
            .await
        }
    }
    .map_err(db(context))?;
    rows.iter().map(map).collect()
}

/// For a principal `user:<name>`, require the user and hold its row
/// (`FOR KEY SHARE`) until the transaction ends: a concurrent
/// [`AccessStore::delete_user`] waits for this transaction and then revokes
/// or deletes what it stored, and one that committed first is seen here.
/// Other principals (`key:`, `oidc:`) have no row to require.
async fn require_user_of(conn: &mut PgConnection, principal: &str) -> StoreResult<()> {
    let Some(name) = principal.strip_prefix("user:") else {
        return Ok(());
    };
    let found = query("SELECT 1 FROM users WHERE name = $1 FOR KEY SHARE")
        .bind(name)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db("looking up a principal's user"))?;
    match found {
        Some(_) => Ok(()),
        None => Err(invalid("principal", format!("no user named {name:?}"))),
    }
}

fn check_api_key(key: &ApiKeyRecord) -> StoreResult<()> {
    Storable::default()
        .text("id", &key.id)
        .text("name", &key.name)
        .text("secret_hash", &key.secret_hash)
        .text("principal", &key.principal)
        .list("roles", &key.roles)
        .list("scopes", &key.scopes)
        .text("created_by", &key.created_by)
        .check()
}

/// Insert a checked key, inside a transaction.
async fn insert_api_key(conn: &mut PgConnection, key: &ApiKeyRecord) -> StoreResult<()> {
    require_user_of(conn, &key.principal).await?;
    query(AssertSqlSafe(format!(
        "INSERT INTO api_keys ({API_KEY_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    )))
    .bind(key.id.as_str())
    .bind(key.name.as_str())
    .bind(key.secret_hash.as_str())
    .bind(key.principal.as_str())
    .bind(key.roles.as_slice())
    .bind(key.scopes.as_slice())
    .bind(key.expires_at.map(Timestamp::micros))
    .bind(key.revoked_at.map(Timestamp::micros))
    .bind(key.last_used_at.map(Timestamp::micros))
    .bind(key.created_at.micros())
    .bind(key.created_by.as_str())
    .execute(&mut *conn)
    .await
    .map_err(taken(
        "storing an API key",
        "id",
        format!("an API key with id {:?} exists already", key.id),
    ))?;
    Ok(())
}

/// Store `key` as the (only) unretired signing key.
async fn insert_signing_key(conn: &mut PgConnection, key: &SigningKeyRecord) -> StoreResult<()> {
    query(AssertSqlSafe(format!(
        "INSERT INTO signing_keys ({SIGNING_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, NULL)"
    )))
    .bind(key.kid.as_str())
    .bind(key.algorithm.as_str())
    .bind(key.private_key.as_str())
    .bind(key.public_key.as_str())
    .bind(key.created_at.micros())
    .execute(&mut *conn)
    .await
    .map_err(taken(
        "storing a signing key",
        "kid",
        format!("a signing key with kid {:?} exists already", key.kid),
    ))?;
    Ok(())
}

fn check_signing_key(key: &SigningKeyRecord) -> StoreResult<()> {
    Storable::default()
        .text("kid", &key.kid)
        .text("algorithm", &key.algorithm)
        .text("private_key", &key.private_key)
        .text("public_key", &key.public_key)
        .check()
}

async fn insert_refresh_token(
    conn: &mut PgConnection,
    session: &str,
    token: &NewRefreshToken,
    now: Timestamp,
) -> StoreResult<()> {
    query(
        "INSERT INTO refresh_tokens (hash, session_id, expires_at, created_at, used_at)
         VALUES ($1, $2, $3, $4, NULL)",
    )
    .bind(token.hash.as_str())
    .bind(session)
    .bind(token.expires_at.micros())
    .bind(now.micros())
    .execute(&mut *conn)
    .await
    .map_err(taken(
        "storing a refresh token",
        "hash",
        "this refresh token was issued already".to_owned(),
    ))?;
    Ok(())
}

/// How often `rotate_refresh_token` and `ensure_signing_key` start over
/// when the row they matched nothing on changed under them before they
/// could read why (each retry needs another transaction to intervene).
const RETRIES: usize = 3;

/// Why a presented refresh token did not rotate: read after the
/// conditional update matched nothing.
async fn refresh_refusal(
    conn: &mut PgConnection,
    hash: &str,
    now: Timestamp,
) -> StoreResult<Option<RefreshOutcome>> {
    let context = "presenting a refresh token";
    let row = query(AssertSqlSafe(format!(
        "SELECT t.used_at, t.expires_at, {SESSION_COLUMNS_OF_S}
         FROM refresh_tokens t JOIN sessions s ON s.id = t.session_id
         WHERE t.hash = $1"
    )))
    .bind(hash)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db(context))?;
    let Some(row) = row else {
        return Ok(Some(RefreshOutcome::Unknown));
    };
    let used_at = opt_time(&row, 0)?;
    let token_expires = time(&row, 1)?;
    let session = session_at(&row, 2)?;
    if session.revoked_at.is_some() {
        return Ok(Some(RefreshOutcome::Revoked(session)));
    }
    if used_at.is_some() {
        // Presented again after it rotated: someone holds a copy. End the
        // whole family, unless another presentation just did.
        let revoked = query(AssertSqlSafe(format!(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = 'reuse'
             WHERE id = $1 AND revoked_at IS NULL RETURNING {SESSION_COLUMNS}"
        )))
        .bind(session.id.as_str())
        .bind(now.micros())
        .fetch_optional(&mut *conn)
        .await
        .map_err(db(context))?;
        return match revoked {
            Some(r) => Ok(Some(RefreshOutcome::Reused(session_row(&r)?))),
            None => Ok(None),
        };
    }
    if token_expires <= now || session.expires_at <= now {
        return Ok(Some(RefreshOutcome::Expired));
    }
    // Unused, live and valid, yet the update matched nothing: it changed
    // between the two statements. Start over.
    Ok(None)
}

#[async_trait]
impl AccessStore for PostgresStore {
    async fn create_user(&self, user: UserRecord) -> StoreResult<()> {
        let length = user.name.chars().count();
        if !(1..=64).contains(&length) {
            return Err(invalid(
                "name",
                format!("must be 1 to 64 characters, not {length}"),
            ));
        }
        Storable::default()
            .text("name", &user.name)
            .text("password_hash", &user.password_hash)
            .list("roles", &user.roles)
            .check()?;
        query(AssertSqlSafe(format!(
            "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        )))
        .bind(user.name.as_str())
        .bind(user.password_hash.as_str())
        .bind(user.roles.as_slice())
        .bind(user.disabled)
        .bind(count(user.failed_logins))
        .bind(user.locked_until.map(Timestamp::micros))
        .bind(user.last_login_at.map(Timestamp::micros))
        .bind(user.created_at.micros())
        .bind(user.updated_at.micros())
        .execute(&self.pool)
        .await
        .map_err(taken(
            "storing a user",
            "name",
            format!("a user named {:?} exists already", user.name),
        ))?;
        Ok(())
    }

    async fn user(&self, name: &str) -> StoreResult<Option<UserRecord>> {
        if !storable(name) {
            return Ok(None);
        }
        query(AssertSqlSafe(format!(
            "SELECT {USER_COLUMNS} FROM users WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a user"))?
        .map(|r| user_row(&r))
        .transpose()
    }

    async fn list_users(&self, page: PageRequest) -> StoreResult<Vec<UserRecord>> {
        check_page(&page)?;
        let mut conn = self.conn().await?;
        page_by_name(
            &mut conn,
            "users",
            USER_COLUMNS,
            &page,
            user_row,
            "listing users",
        )
        .await
    }

    async fn update_user(
        &self,
        name: &str,
        patch: UserPatch,
        now: Timestamp,
    ) -> StoreResult<UserRecord> {
        if !storable(name) {
            return Err(no_user(name));
        }
        Storable::default()
            .opt("password_hash", patch.password_hash.as_deref())
            .list("roles", patch.roles.as_deref().unwrap_or_default())
            .check()?;
        query(AssertSqlSafe(format!(
            "UPDATE users SET
                 password_hash = COALESCE($2, password_hash),
                 roles = COALESCE($3::text[], roles),
                 disabled = COALESCE($4, disabled),
                 failed_logins = CASE WHEN $5 THEN 0 ELSE failed_logins END,
                 locked_until = CASE WHEN $5 THEN NULL ELSE locked_until END,
                 updated_at = $6
             WHERE name = $1
             RETURNING {USER_COLUMNS}"
        )))
        .bind(name)
        .bind(patch.password_hash)
        .bind(patch.roles)
        .bind(patch.disabled)
        .bind(patch.unlock)
        .bind(now.micros())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("updating a user"))?
        .map(|r| user_row(&r))
        .transpose()?
        .ok_or_else(|| no_user(name))
    }

    async fn delete_user(&self, name: &str, now: Timestamp) -> StoreResult<()> {
        let context = "deleting a user";
        if !storable(name) {
            return Err(no_user(name));
        }
        let principal = user_principal(name);
        let mut tx = self.pool.begin().await.map_err(db(context))?;
        let deleted = query("DELETE FROM users WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await
            .map_err(db(context))?;
        if deleted.rows_affected() == 0 {
            return Err(no_user(name));
        }
        query(
            "UPDATE sessions SET revoked_at = $2, revoked_reason = 'user deleted'
             WHERE principal = $1 AND revoked_at IS NULL",
        )
        .bind(principal.as_str())
        .bind(now.micros())
        .execute(&mut *tx)
        .await
        .map_err(db(context))?;
        query("UPDATE api_keys SET revoked_at = $2 WHERE principal = $1 AND revoked_at IS NULL")
            .bind(principal.as_str())
            .bind(now.micros())
            .execute(&mut *tx)
            .await
            .map_err(db(context))?;
        query("DELETE FROM grants WHERE principal = $1")
            .bind(principal.as_str())
            .execute(&mut *tx)
            .await
            .map_err(db(context))?;
        tx.commit().await.map_err(db(context))
    }

    /// A `threshold` of 0 never locks (failures are still counted). While
    /// the account is locked, a failure changes nothing and reports the
    /// lock.
    async fn record_login_failure(
        &self,
        name: &str,
        now: Timestamp,
        threshold: u32,
        lock_for_micros: i64,
    ) -> StoreResult<LoginFailure> {
        if !storable(name) {
            return Err(no_user(name));
        }
        let until = now.micros().saturating_add(lock_for_micros.max(0));
        // Every right-hand side reads the row as it was before this update,
        // and the row lock makes concurrent failures count one by one.
        let row = query(
            "UPDATE users SET
                 failed_logins = CASE
                     WHEN locked_until > $2 THEN failed_logins
                     WHEN $3 > 0 AND failed_logins + 1 >= $3 THEN 0
                     ELSE LEAST(failed_logins, 2147483646) + 1 END,
                 locked_until = CASE
                     WHEN locked_until > $2 THEN locked_until
                     WHEN $3 > 0 AND failed_logins + 1 >= $3 THEN $4
                     ELSE NULL END
             WHERE name = $1
             RETURNING failed_logins, locked_until",
        )
        .bind(name)
        .bind(now.micros())
        .bind(i64::from(threshold))
        .bind(until)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("counting a failed login"))?
        .ok_or_else(|| no_user(name))?;
        Ok(LoginFailure {
            failed_logins: uncount(col(&row, 0)?),
            locked_until: opt_time(&row, 1)?,
        })
    }

    async fn record_login_success(&self, name: &str, now: Timestamp) -> StoreResult<()> {
        if !storable(name) {
            return Err(no_user(name));
        }
        let done = query(
            "UPDATE users SET failed_logins = 0, locked_until = NULL, last_login_at = $2
             WHERE name = $1",
        )
        .bind(name)
        .bind(now.micros())
        .execute(&self.pool)
        .await
        .map_err(db("recording a login"))?;
        if done.rows_affected() == 0 {
            return Err(no_user(name));
        }
        Ok(())
    }

    async fn create_api_key(&self, key: ApiKeyRecord) -> StoreResult<()> {
        let context = "storing an API key";
        check_api_key(&key)?;
        let mut tx = self.pool.begin().await.map_err(db(context))?;
        insert_api_key(&mut tx, &key).await?;
        tx.commit().await.map_err(db(context))
    }

    async fn api_key_credential(&self, id: &str) -> StoreResult<Option<Credential<ApiKeyRecord>>> {
        credential(
            self,
            &format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1"),
            id,
            11,
            api_key_row,
        )
        .await
    }

    async fn session_credential(&self, id: &str) -> StoreResult<Option<Credential<SessionRecord>>> {
        credential(
            self,
            &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"),
            id,
            6,
            session_row,
        )
        .await
    }

    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        if !storable(id) {
            return Ok(None);
        }
        query(AssertSqlSafe(format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading an API key"))?
        .map(|r| api_key_row(&r))
        .transpose()
    }

    async fn list_api_keys(
        &self,
        principal: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Vec<ApiKeyRecord>> {
        check_page(&page)?;
        if !principal.is_none_or(storable) {
            return Ok(Vec::new());
        }
        let mut q = ListQuery::new("api_keys", API_KEY_COLUMNS);
        q.eq("principal", text(principal.map(str::to_owned)));
        let mut conn = self.conn().await?;
        q.run(&mut conn, &page, api_key_row).await
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<ApiKeyRecord> {
        if !storable(id) {
            return Err(StoreError::NotFound(format!("no API key with id {id:?}")));
        }
        query(AssertSqlSafe(format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1
             RETURNING {API_KEY_COLUMNS}"
        )))
        .bind(id)
        .bind(now.micros())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("revoking an API key"))?
        .map(|r| api_key_row(&r))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("no API key with id {id:?}")))
    }

    async fn touch_api_key(&self, id: &str, now: Timestamp) -> StoreResult<()> {
        if !storable(id) {
            return Ok(());
        }
        // GREATEST ignores NULL; a late, older touch never moves it back.
        query("UPDATE api_keys SET last_used_at = GREATEST(last_used_at, $2) WHERE id = $1")
            .bind(id)
            .bind(now.micros())
            .execute(&self.pool)
            .await
            .map_err(db("recording an API key's use"))?;
        Ok(())
    }

    async fn bootstrap_api_key(&self, key: ApiKeyRecord) -> StoreResult<bool> {
        let context = "storing the bootstrap API key";
        // Refuse what cannot be stored before taking the locks.
        check_api_key(&key)?;
        let mut tx = self.pool.begin().await.map_err(db(context))?;
        // Conflicts with itself and with every write to either table, and is
        // granted only once those in flight ended: the check below (a new
        // statement, so a new snapshot) sees them, and nothing can be added
        // until this transaction ends.
        query("LOCK TABLE users, api_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(db(context))?;
        let occupied: bool = query(
            "SELECT EXISTS (SELECT 1 FROM users)
                 OR EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)",
        )
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| sqlx_core::row::Row::try_get(&r, 0))
        .map_err(db(context))?;
        if occupied {
            return Ok(false);
        }
        insert_api_key(&mut tx, &key).await?;
        tx.commit().await.map_err(db(context))?;
        Ok(true)
    }

    async fn create_role(&self, role: RoleRecord) -> StoreResult<()> {
        Storable::default()
            .text("name", &role.name)
            .list("permissions", &role.permissions)
            .list("on_grant", &role.on_grant)
            .text("description", &role.description)
            .check()?;
        query(AssertSqlSafe(format!(
            "INSERT INTO roles ({ROLE_COLUMNS}) VALUES ($1, $2, $3, $4, $5)"
        )))
        .bind(role.name.as_str())
        .bind(role.permissions.as_slice())
        .bind(role.on_grant.as_slice())
        .bind(role.description.as_str())
        .bind(role.created_at.micros())
        .execute(&self.pool)
        .await
        .map_err(taken(
            "storing a role",
            "name",
            format!("a role named {:?} exists already", role.name),
        ))?;
        Ok(())
    }

    async fn role(&self, name: &str) -> StoreResult<Option<RoleRecord>> {
        if !storable(name) {
            return Ok(None);
        }
        query(AssertSqlSafe(format!(
            "SELECT {ROLE_COLUMNS} FROM roles WHERE name = $1"
        )))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a role"))?
        .map(|r| role_row(&r))
        .transpose()
    }

    async fn roles(&self, names: &[String]) -> StoreResult<Vec<RoleRecord>> {
        let names: Vec<&str> = names
            .iter()
            .map(String::as_str)
            .filter(|n| storable(n))
            .collect();
        if names.is_empty() {
            return Ok(Vec::new());
        }
        query(AssertSqlSafe(format!(
            "SELECT {ROLE_COLUMNS} FROM roles WHERE name = ANY($1) ORDER BY name"
        )))
        .bind(names)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading roles"))?
        .iter()
        .map(role_row)
        .collect()
    }

    async fn list_roles(&self, page: PageRequest) -> StoreResult<Vec<RoleRecord>> {
        check_page(&page)?;
        let mut conn = self.conn().await?;
        page_by_name(
            &mut conn,
            "roles",
            ROLE_COLUMNS,
            &page,
            role_row,
            "listing roles",
        )
        .await
    }

    async fn delete_role(&self, name: &str) -> StoreResult<()> {
        if !storable(name) {
            return Err(StoreError::NotFound(format!("no role named {name:?}")));
        }
        let done = query("DELETE FROM roles WHERE name = $1")
            .bind(name)
            .execute(&self.pool)
            .await
            .map_err(db("deleting a role"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("no role named {name:?}")));
        }
        Ok(())
    }

    async fn create_grant(&self, grant: GrantRecord) -> StoreResult<()> {
        if !matches!(grant.object_kind.as_str(), "receiver" | "group") {
            return Err(invalid(
                "object_kind",
                format!(
                    "must be \"receiver\" or \"group\", not {:?}",
                    grant.object_kind
                ),
            ));
        }
        Storable::default()
            .text("id", &grant.id)
            .text("principal", &grant.principal)
            .text("object_id", &grant.object_id)
            .list("permissions", &grant.permissions)
            .text("created_by", &grant.created_by)
            .check()?;
        let context = "storing a grant";
        let mut tx = self.pool.begin().await.map_err(db(context))?;
        require_user_of(&mut tx, &grant.principal).await?;
        query(AssertSqlSafe(format!(
            "INSERT INTO grants ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        )))
        .bind(grant.id.as_str())
        .bind(grant.principal.as_str())
        .bind(grant.object_kind.as_str())
        .bind(grant.object_id.as_str())
        .bind(grant.permissions.as_slice())
        .bind(grant.created_at.micros())
        .bind(grant.created_by.as_str())
        .execute(&mut *tx)
        .await
        .map_err(taken(
            context,
            "id",
            format!("a grant with id {:?} exists already", grant.id),
        ))?;
        tx.commit().await.map_err(db(context))
    }

    async fn grants_of(&self, principal: &str) -> StoreResult<Vec<GrantRecord>> {
        if !storable(principal) {
            return Ok(Vec::new());
        }
        query(AssertSqlSafe(format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE principal = $1 ORDER BY id"
        )))
        .bind(principal)
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading grants"))?
        .iter()
        .map(grant_row)
        .collect()
    }

    async fn list_grants(
        &self,
        filter: GrantFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<GrantRecord>> {
        check_page(&page)?;
        let filters = [&filter.principal, &filter.object_kind, &filter.object_id];
        if !filters.iter().all(|f| f.as_deref().is_none_or(storable)) {
            return Ok(Vec::new());
        }
        let mut q = ListQuery::new("grants", GRANT_COLUMNS);
        q.eq("principal", text(filter.principal))
            .eq("object_kind", text(filter.object_kind))
            .eq("object_id", text(filter.object_id));
        let mut conn = self.conn().await?;
        q.run(&mut conn, &page, grant_row).await
    }

    async fn delete_grant(&self, id: &str) -> StoreResult<GrantRecord> {
        if !storable(id) {
            return Err(StoreError::NotFound(format!("no grant with id {id:?}")));
        }
        query(AssertSqlSafe(format!(
            "DELETE FROM grants WHERE id = $1 RETURNING {GRANT_COLUMNS}"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("deleting a grant"))?
        .map(|r| grant_row(&r))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("no grant with id {id:?}")))
    }

    async fn create_session(
        &self,
        session: SessionRecord,
        first: NewRefreshToken,
    ) -> StoreResult<()> {
        let context = "starting a session";
        if session.revoked_at.is_some() != session.revoked_reason.is_some() {
            return Err(invalid(
                "revoked_reason",
                "is set exactly when revoked_at is",
            ));
        }
        Storable::default()
            .text("id", &session.id)
            .text("principal", &session.principal)
            .opt("revoked_reason", session.revoked_reason.as_deref())
            .text("hash", &first.hash)
            .check()?;
        let mut tx = self.pool.begin().await.map_err(db(context))?;
        require_user_of(&mut tx, &session.principal).await?;
        query(AssertSqlSafe(format!(
            "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6)"
        )))
        .bind(session.id.as_str())
        .bind(session.principal.as_str())
        .bind(session.created_at.micros())
        .bind(session.expires_at.micros())
        .bind(session.revoked_at.map(Timestamp::micros))
        .bind(session.revoked_reason.as_deref())
        .execute(&mut *tx)
        .await
        .map_err(taken(
            context,
            "id",
            format!("a session with id {:?} exists already", session.id),
        ))?;
        insert_refresh_token(&mut tx, &session.id, &first, session.created_at).await?;
        tx.commit().await.map_err(db(context))
    }

    async fn session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        if !storable(id) {
            return Ok(None);
        }
        query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db("reading a session"))?
        .map(|r| session_row(&r))
        .transpose()
    }

    /// Checked in this order: unknown, session revoked, token used before
    /// (reuse: the session is revoked even if it has expired since, so that
    /// its access tokens end too), token or session expired.
    async fn rotate_refresh_token(
        &self,
        hash: &str,
        next: NewRefreshToken,
        now: Timestamp,
    ) -> StoreResult<RefreshOutcome> {
        let context = "presenting a refresh token";
        if !storable(hash) {
            return Ok(RefreshOutcome::Unknown);
        }
        Storable::default().text("hash", &next.hash).check()?;
        for _ in 0..RETRIES {
            let mut tx = self.pool.begin().await.map_err(db(context))?;
            // The one decision, in one statement. The session is locked
            // first (FOR NO KEY UPDATE: it still lets the new token's
            // foreign key check through), so presentations of one family's
            // tokens and the session's revocation take turns: a revocation
            // that committed first is seen (the lock re-reads the row) and
            // one that comes later waits for this rotation. Then the token
            // is marked used only if nobody did: a second presentation of
            // it, let through once the first committed, re-checks
            // `used_at IS NULL` on the updated row and matches nothing.
            let rotated = query(AssertSqlSafe(format!(
                "WITH s AS (
                     SELECT {SESSION_COLUMNS} FROM sessions
                     WHERE id = (SELECT session_id FROM refresh_tokens WHERE hash = $1)
                       AND revoked_at IS NULL AND expires_at > $2
                     FOR NO KEY UPDATE)
                 UPDATE refresh_tokens t SET used_at = $2
                 FROM s
                 WHERE t.hash = $1 AND t.session_id = s.id
                   AND t.used_at IS NULL AND t.expires_at > $2
                 RETURNING {SESSION_COLUMNS_OF_S}"
            )))
            .bind(hash)
            .bind(now.micros())
            .fetch_optional(&mut *tx)
            .await
            .map_err(db(context))?;
            let outcome = match rotated {
                Some(row) => {
                    let session = session_row(&row)?;
                    insert_refresh_token(&mut tx, &session.id, &next, now).await?;
                    RefreshOutcome::Rotated(session)
                }
                None => match refresh_refusal(&mut tx, hash, now).await? {
                    Some(outcome) => outcome,
                    None => continue,
                },
            };
            tx.commit().await.map_err(db(context))?;
            return Ok(outcome);
        }
        Err(StoreError::Internal(format!(
            "{context}: the token kept changing, {RETRIES} attempts"
        )))
    }

    async fn revoke_session(
        &self,
        id: &str,
        reason: &str,
        now: Timestamp,
    ) -> StoreResult<SessionRecord> {
        if !storable(id) {
            return Err(StoreError::NotFound(format!("no session with id {id:?}")));
        }
        Storable::default().text("reason", reason).check()?;
        query(AssertSqlSafe(format!(
            "UPDATE sessions SET
                 revoked_reason = CASE WHEN revoked_at IS NULL THEN $2 ELSE revoked_reason END,
                 revoked_at = COALESCE(revoked_at, $3)
             WHERE id = $1
             RETURNING {SESSION_COLUMNS}"
        )))
        .bind(id)
        .bind(reason)
        .bind(now.micros())
        .fetch_optional(&self.pool)
        .await
        .map_err(db("revoking a session"))?
        .map(|r| session_row(&r))
        .transpose()?
        .ok_or_else(|| StoreError::NotFound(format!("no session with id {id:?}")))
    }

    /// Live: not revoked and not expired at `now`.
    async fn revoke_sessions_of(
        &self,
        principal: &str,
        reason: &str,
        now: Timestamp,
    ) -> StoreResult<u64> {
        Storable::default().text("reason", reason).check()?;
        if !storable(principal) {
            return Ok(0);
        }
        let done = query(
            "UPDATE sessions SET revoked_at = $3, revoked_reason = $2
             WHERE principal = $1 AND revoked_at IS NULL AND expires_at > $3",
        )
        .bind(principal)
        .bind(reason)
        .bind(now.micros())
        .execute(&self.pool)
        .await
        .map_err(db("revoking sessions"))?;
        Ok(done.rows_affected())
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        query(AssertSqlSafe(format!(
            "SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys ORDER BY created_at DESC, kid DESC"
        )))
        .fetch_all(&self.pool)
        .await
        .map_err(db("reading signing keys"))?
        .iter()
        .map(signing_key_row)
        .collect()
    }

    async fn ensure_signing_key(&self, key: SigningKeyRecord) -> StoreResult<SigningKeyRecord> {
        let context = "ensuring a signing key";
        check_signing_key(&key)?;
        for _ in 0..RETRIES {
            // Waits for a racing insert of an unretired key to end; if that
            // one committed, this inserts nothing.
            query(AssertSqlSafe(format!(
                "INSERT INTO signing_keys ({SIGNING_KEY_COLUMNS}) VALUES ($1, $2, $3, $4, $5, NULL)
                 ON CONFLICT ((true)) WHERE retired_at IS NULL DO NOTHING"
            )))
            .bind(key.kid.as_str())
            .bind(key.algorithm.as_str())
            .bind(key.private_key.as_str())
            .bind(key.public_key.as_str())
            .bind(key.created_at.micros())
            .execute(&self.pool)
            .await
            .map_err(taken(
                context,
                "kid",
                format!("a signing key with kid {:?} exists already", key.kid),
            ))?;
            // A new statement, so it sees whichever key won.
            let current = query(AssertSqlSafe(format!(
                "SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys WHERE retired_at IS NULL"
            )))
            .fetch_optional(&self.pool)
            .await
            .map_err(db(context))?;
            if let Some(row) = current {
                return signing_key_row(&row);
            }
            // Retired in between without a successor (only by hand): again.
        }
        Err(StoreError::Internal(format!(
            "{context}: no unretired key after {RETRIES} attempts"
        )))
    }

    async fn rotate_signing_key(&self, key: SigningKeyRecord, now: Timestamp) -> StoreResult<()> {
        let context = "rotating the signing key";
        check_signing_key(&key)?;
        let mut tx = self.pool.begin().await.map_err(db(context))?;
        // Rotations (and first inserts) run one after the other, each
        // retiring what the previous one stored.
        query("LOCK TABLE signing_keys IN SHARE ROW EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(db(context))?;
        query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(now.micros())
            .execute(&mut *tx)
            .await
            .map_err(db(context))?;
        insert_signing_key(&mut tx, &key).await?;
        tx.commit().await.map_err(db(context))
    }

    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<u64> {
        let entry = NewAuditEntry {
            actor: loggable(entry.actor),
            action: loggable(entry.action),
            target: loggable(entry.target),
            outcome: loggable(entry.outcome),
            detail: loggable(entry.detail),
            request_id: loggable(entry.request_id),
            client_addr: loggable(entry.client_addr),
            ..entry
        };
        let seq: i64 = query(
            "INSERT INTO audit_log
                 (at, actor, action, target, outcome, detail, request_id, client_addr)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq",
        )
        .bind(entry.at.micros())
        .bind(entry.actor.as_str())
        .bind(entry.action.as_str())
        .bind(entry.target.as_str())
        .bind(entry.outcome.as_str())
        .bind(entry.detail.as_str())
        .bind(entry.request_id.as_str())
        .bind(entry.client_addr.as_str())
        .fetch_one(&self.pool)
        .await
        .and_then(|r| sqlx_core::row::Row::try_get(&r, 0))
        .map_err(db("appending to the audit log"))?;
        Ok(u64::try_from(seq).unwrap_or(0))
    }

    async fn list_audit(&self, filter: AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        let filters = [&filter.actor, &filter.action, &filter.outcome];
        if !filters.iter().all(|f| f.as_deref().is_none_or(storable)) {
            return Ok(Vec::new());
        }
        let mut clauses = Vec::new();
        let mut params = Vec::new();
        let mut add = |clause: &str, value: Option<Param>| {
            if let Some(v) = value {
                params.push(v);
                clauses.push(format!("{clause} ${}", params.len()));
            }
        };
        add("actor =", text(filter.actor));
        add("action =", text(filter.action));
        add("outcome =", text(filter.outcome));
        add("at >=", filter.since.map(|t| Param::Int(t.micros())));
        add(
            "seq <",
            filter
                .before_seq
                .map(|s| Param::Int(i64::try_from(s).unwrap_or(i64::MAX))),
        );
        params.push(Param::Int(i64::from(filter.limit)));
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {AUDIT_COLUMNS} FROM audit_log{filter} ORDER BY seq DESC LIMIT ${}",
            params.len()
        );
        let mut q = query(AssertSqlSafe(sql));
        for p in params {
            q = match p {
                Param::Text(s) => q.bind(s),
                Param::Int(i) => q.bind(i),
                Param::Bool(b) => q.bind(b),
            };
        }
        q.fetch_all(&self.pool)
            .await
            .map_err(db("reading the audit log"))?
            .iter()
            .map(audit_row)
            .collect()
    }
}
