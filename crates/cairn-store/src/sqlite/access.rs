//! [`AccessStore`] on the embedded store. Every write is one job for the
//! single writer, so it runs inside the writer's transaction and is
//! serialised with every other write: the checks-then-changes below
//! (refresh-token rotation, bootstrap, the one signing key, login failure
//! counting) cannot interleave. A job refuses (`Invalid`, `NotFound`) only
//! before its first change, as the writer requires. Reads use the reader
//! pool.

use super::SqliteStore;
use super::rows::db;
use crate::access::{
    AccessStore, ApiKeyRecord, AuditEntry, AuditFilter, Credential, GrantFilter, GrantRecord,
    LoginFailure, NewAuditEntry, NewRefreshToken, RefreshOutcome, RoleRecord, SessionRecord,
    SigningKeyRecord, UserPatch, UserRecord,
};
use crate::{PageRequest, StoreError, StoreResult};
use async_trait::async_trait;
use cairn_domain::{FieldErrors, Timestamp};
use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OptionalExtension, Row, params};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

fn invalid(field: &str, message: String) -> StoreError {
    let mut errors = FieldErrors::default();
    errors.push(field, message);
    StoreError::Invalid(errors)
}

/// A list of names or patterns as stored: a JSON array of strings.
fn list_text(list: &[String], what: &str) -> StoreResult<String> {
    serde_json::to_string(list)
        .map_err(|e| StoreError::Internal(format!("encoding {what} as JSON: {e}")))
}

fn list_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Vec<String>> {
    let text: String = row.get(idx)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            rusqlite::types::Type::Text,
            format!("stored list {text:?} is not a JSON array of strings: {e}").into(),
        )
    })
}

fn time_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Timestamp> {
    Ok(Timestamp::from_micros(row.get(idx)?))
}

fn opt_time_at(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<Timestamp>> {
    Ok(row.get::<_, Option<i64>>(idx)?.map(Timestamp::from_micros))
}

fn micros(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::micros)
}

fn exists(conn: &Connection, sql: &str, key: &str, context: &'static str) -> StoreResult<bool> {
    conn.prepare_cached(sql)
        .and_then(|mut st| st.exists([key]))
        .map_err(db(context))
}

/// `SELECT columns FROM table WHERE ... ORDER BY order LIMIT ?` with exact
/// filters and key bounds, all as parameters.
struct Query {
    clauses: Vec<String>,
    params: Vec<Sql>,
}

impl Query {
    fn new() -> Self {
        Self {
            clauses: Vec::new(),
            params: Vec::new(),
        }
    }

    fn cmp(&mut self, column: &str, op: &str, value: Option<Sql>) -> &mut Self {
        if let Some(v) = value {
            self.params.push(v);
            self.clauses
                .push(format!("{column} {op} ?{}", self.params.len()));
        }
        self
    }

    fn eq(&mut self, column: &str, value: Option<String>) -> &mut Self {
        self.cmp(column, "=", value.map(Sql::Text))
    }

    fn run<T>(
        mut self,
        conn: &Connection,
        select: &str,
        order: &str,
        limit: u32,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
        context: &'static str,
    ) -> StoreResult<Vec<T>> {
        let filter = if self.clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.clauses.join(" AND "))
        };
        self.params.push(Sql::Integer(i64::from(limit)));
        let sql = format!(
            "{select}{filter} ORDER BY {order} LIMIT ?{}",
            self.params.len()
        );
        let mut st = conn.prepare_cached(&sql).map_err(db(context))?;
        st.query_map(rusqlite::params_from_iter(self.params), map)
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<T>>>())
            .map_err(db(context))
    }
}

// ---- users ----

const USER_COLUMNS: &str = "name, password_hash, roles, disabled, failed_logins, locked_until, \
                            last_login_at, created_at, updated_at";

fn user_row(row: &Row<'_>) -> rusqlite::Result<UserRecord> {
    Ok(UserRecord {
        name: row.get(0)?,
        password_hash: row.get(1)?,
        roles: list_at(row, 2)?,
        disabled: row.get(3)?,
        failed_logins: row.get(4)?,
        locked_until: opt_time_at(row, 5)?,
        last_login_at: opt_time_at(row, 6)?,
        created_at: time_at(row, 7)?,
        updated_at: time_at(row, 8)?,
    })
}

fn load_user(conn: &Connection, name: &str) -> StoreResult<Option<UserRecord>> {
    conn.prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"))
        .and_then(|mut st| st.query_row([name], user_row).optional())
        .map_err(db("reading a user"))
}

fn require_user(conn: &Connection, name: &str) -> StoreResult<UserRecord> {
    load_user(conn, name)?.ok_or_else(|| StoreError::NotFound(format!("no user named {name:?}")))
}

/// Write every field of an existing user.
fn save_user(conn: &Connection, user: &UserRecord) -> StoreResult<()> {
    let roles = list_text(&user.roles, "user roles")?;
    conn.prepare_cached(
        "UPDATE users SET password_hash = ?2, roles = ?3, disabled = ?4, failed_logins = ?5,
                          locked_until = ?6, last_login_at = ?7, updated_at = ?8
         WHERE name = ?1",
    )
    .and_then(|mut st| {
        st.execute(params![
            user.name,
            user.password_hash,
            roles,
            user.disabled,
            user.failed_logins,
            micros(user.locked_until),
            micros(user.last_login_at),
            user.updated_at.micros(),
        ])
    })
    .map(|_| ())
    .map_err(db("updating a user"))
}

fn insert_user(conn: &Connection, user: &UserRecord) -> StoreResult<()> {
    let count = user.name.chars().count();
    if !(1..=64).contains(&count) {
        return Err(invalid(
            "name",
            format!("must be 1 to 64 characters, not {count}"),
        ));
    }
    if exists(
        conn,
        "SELECT 1 FROM users WHERE name = ?1",
        &user.name,
        "checking a user name",
    )? {
        return Err(invalid(
            "name",
            format!("a user named {:?} exists already", user.name),
        ));
    }
    let roles = list_text(&user.roles, "user roles")?;
    conn.prepare_cached(
        "INSERT INTO users (name, password_hash, roles, disabled, failed_logins, locked_until,
                            last_login_at, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut st| {
        st.execute(params![
            user.name,
            user.password_hash,
            roles,
            user.disabled,
            user.failed_logins,
            micros(user.locked_until),
            micros(user.last_login_at),
            user.created_at.micros(),
            user.updated_at.micros(),
        ])
    })
    .map(|_| ())
    .map_err(db("inserting a user"))
}

fn record_failure(
    conn: &Connection,
    name: &str,
    now: Timestamp,
    threshold: u32,
    lock_for_micros: i64,
) -> StoreResult<LoginFailure> {
    let mut user = require_user(conn, name)?;
    if let Some(until) = user.locked_until
        && until > now
    {
        // Locked already: the lock stands and nothing is counted.
        return Ok(LoginFailure {
            failed_logins: user.failed_logins,
            locked_until: Some(until),
        });
    }
    let failed = user.failed_logins.saturating_add(1);
    // A threshold of 0 turns lockout off.
    if threshold > 0 && failed >= threshold {
        let until = Timestamp::from_micros(now.micros().saturating_add(lock_for_micros.max(0)));
        user.failed_logins = 0;
        user.locked_until = Some(until);
    } else {
        user.failed_logins = failed;
        // A lock that has run out is over.
        user.locked_until = None;
    }
    conn.prepare_cached("UPDATE users SET failed_logins = ?2, locked_until = ?3 WHERE name = ?1")
        .and_then(|mut st| st.execute(params![name, user.failed_logins, micros(user.locked_until)]))
        .map_err(db("counting a failed login"))?;
    Ok(LoginFailure {
        failed_logins: user.failed_logins,
        locked_until: user.locked_until,
    })
}

fn remove_user(conn: &Connection, name: &str, now: Timestamp) -> StoreResult<()> {
    require_user(conn, name)?;
    let principal = format!("user:{name}");
    let at = now.micros();
    conn.prepare_cached("DELETE FROM users WHERE name = ?1")
        .and_then(|mut st| st.execute([name]))
        .map_err(db("deleting a user"))?;
    conn.prepare_cached(
        "UPDATE sessions SET revoked_at = ?2, revoked_reason = 'user deleted'
         WHERE principal = ?1 AND revoked_at IS NULL",
    )
    .and_then(|mut st| st.execute(params![principal, at]))
    .map_err(db("revoking a deleted user's sessions"))?;
    conn.prepare_cached(
        "UPDATE api_keys SET revoked_at = ?2 WHERE principal = ?1 AND revoked_at IS NULL",
    )
    .and_then(|mut st| st.execute(params![principal, at]))
    .map_err(db("revoking a deleted user's API keys"))?;
    conn.prepare_cached("DELETE FROM grants WHERE principal = ?1")
        .and_then(|mut st| st.execute([&principal]))
        .map_err(db("deleting a deleted user's grants"))?;
    Ok(())
}

// ---- API keys ----

const KEY_COLUMNS: &str = "id, name, secret_hash, principal, roles, scopes, expires_at, \
                           revoked_at, last_used_at, created_at, created_by";

fn key_row(row: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: row.get(0)?,
        name: row.get(1)?,
        secret_hash: row.get(2)?,
        principal: row.get(3)?,
        roles: list_at(row, 4)?,
        scopes: list_at(row, 5)?,
        expires_at: opt_time_at(row, 6)?,
        revoked_at: opt_time_at(row, 7)?,
        last_used_at: opt_time_at(row, 8)?,
        created_at: time_at(row, 9)?,
        created_by: row.get(10)?,
    })
}

fn load_key(conn: &Connection, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
    conn.prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE id = ?1"))
        .and_then(|mut st| st.query_row([id], key_row).optional())
        .map_err(db("reading an API key"))
}

fn insert_key(conn: &Connection, key: &ApiKeyRecord) -> StoreResult<()> {
    if exists(
        conn,
        "SELECT 1 FROM api_keys WHERE id = ?1",
        &key.id,
        "checking an API key id",
    )? {
        return Err(invalid(
            "id",
            format!("an API key with id {:?} exists already", key.id),
        ));
    }
    let roles = list_text(&key.roles, "API key roles")?;
    let scopes = list_text(&key.scopes, "API key scopes")?;
    conn.prepare_cached(
        "INSERT INTO api_keys (id, name, secret_hash, principal, roles, scopes, expires_at,
                               revoked_at, last_used_at, created_at, created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
    )
    .and_then(|mut st| {
        st.execute(params![
            key.id,
            key.name,
            key.secret_hash,
            key.principal,
            roles,
            scopes,
            micros(key.expires_at),
            micros(key.revoked_at),
            micros(key.last_used_at),
            key.created_at.micros(),
            key.created_by,
        ])
    })
    .map(|_| ())
    .map_err(db("inserting an API key"))
}

// ---- roles ----

const ROLE_COLUMNS: &str = "name, permissions, on_grant, description, created_at";

fn role_row(row: &Row<'_>) -> rusqlite::Result<RoleRecord> {
    Ok(RoleRecord {
        name: row.get(0)?,
        permissions: list_at(row, 1)?,
        on_grant: list_at(row, 2)?,
        description: row.get(3)?,
        created_at: time_at(row, 4)?,
    })
}

fn load_role(conn: &Connection, name: &str) -> StoreResult<Option<RoleRecord>> {
    conn.prepare_cached(&format!("SELECT {ROLE_COLUMNS} FROM roles WHERE name = ?1"))
        .and_then(|mut st| st.query_row([name], role_row).optional())
        .map_err(db("reading a role"))
}

fn insert_role(conn: &Connection, role: &RoleRecord) -> StoreResult<()> {
    if cairn_domain::access::Role::builtin(&role.name).is_some() {
        return Err(invalid(
            "name",
            format!("{:?} is a built-in role", role.name),
        ));
    }
    if exists(
        conn,
        "SELECT 1 FROM roles WHERE name = ?1",
        &role.name,
        "checking a role name",
    )? {
        return Err(invalid(
            "name",
            format!("a role named {:?} exists already", role.name),
        ));
    }
    let permissions = list_text(&role.permissions, "role permissions")?;
    let on_grant = list_text(&role.on_grant, "role permissions on grant")?;
    conn.prepare_cached(
        "INSERT INTO roles (name, permissions, on_grant, description, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| {
        st.execute(params![
            role.name,
            permissions,
            on_grant,
            role.description,
            role.created_at.micros(),
        ])
    })
    .map(|_| ())
    .map_err(db("inserting a role"))
}

// ---- grants ----

const GRANT_COLUMNS: &str =
    "id, principal, object_kind, object_id, permissions, created_at, created_by";

fn grant_row(row: &Row<'_>) -> rusqlite::Result<GrantRecord> {
    Ok(GrantRecord {
        id: row.get(0)?,
        principal: row.get(1)?,
        object_kind: row.get(2)?,
        object_id: row.get(3)?,
        permissions: list_at(row, 4)?,
        created_at: time_at(row, 5)?,
        created_by: row.get(6)?,
    })
}

fn insert_grant(conn: &Connection, grant: &GrantRecord) -> StoreResult<()> {
    if exists(
        conn,
        "SELECT 1 FROM grants WHERE id = ?1",
        &grant.id,
        "checking a grant id",
    )? {
        return Err(invalid(
            "id",
            format!("a grant with id {:?} exists already", grant.id),
        ));
    }
    let lookup = match grant.object_kind.as_str() {
        "receiver" => "SELECT 1 FROM receivers WHERE id = ?1",
        "group" => "SELECT 1 FROM groups WHERE id = ?1",
        other => {
            return Err(invalid(
                "object_kind",
                format!("must be \"receiver\" or \"group\", not {other:?}"),
            ));
        }
    };
    if !exists(conn, lookup, &grant.object_id, "checking a grant's object")? {
        return Err(invalid(
            "object_id",
            format!("no {} with id {:?}", grant.object_kind, grant.object_id),
        ));
    }
    let permissions = list_text(&grant.permissions, "grant permissions")?;
    conn.prepare_cached(
        "INSERT INTO grants (id, principal, object_kind, object_id, permissions, created_at,
                             created_by)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut st| {
        st.execute(params![
            grant.id,
            grant.principal,
            grant.object_kind,
            grant.object_id,
            permissions,
            grant.created_at.micros(),
            grant.created_by,
        ])
    })
    .map(|_| ())
    .map_err(db("inserting a grant"))
}

// ---- sessions and refresh tokens ----

const SESSION_COLUMNS: &str = "id, principal, created_at, expires_at, revoked_at, revoked_reason";

fn session_row(row: &Row<'_>) -> rusqlite::Result<SessionRecord> {
    Ok(SessionRecord {
        id: row.get(0)?,
        principal: row.get(1)?,
        created_at: time_at(row, 2)?,
        expires_at: time_at(row, 3)?,
        revoked_at: opt_time_at(row, 4)?,
        revoked_reason: row.get(5)?,
    })
}

fn load_grants(conn: &Connection, principal: &str) -> StoreResult<Vec<GrantRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {GRANT_COLUMNS} FROM grants WHERE principal = ?1 ORDER BY id"
    ))
    .and_then(|mut st| {
        st.query_map([principal], grant_row)?
            .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(db("reading grants"))
}

/// `record` with the user it acts as and its principal's grants, read on
/// one connection.
fn credential<T>(conn: &Connection, principal: String, record: T) -> StoreResult<Credential<T>> {
    let user = match principal.strip_prefix("user:") {
        Some(name) => load_user(conn, name)?,
        None => None,
    };
    let grants = load_grants(conn, &principal)?;
    Ok(Credential {
        record,
        user,
        grants,
    })
}

fn load_session(conn: &Connection, id: &str) -> StoreResult<Option<SessionRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"
    ))
    .and_then(|mut st| st.query_row([id], session_row).optional())
    .map_err(db("reading a session"))
}

fn insert_token(conn: &Connection, session: &str, token: &NewRefreshToken) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO refresh_tokens (hash, session_id, expires_at) VALUES (?1, ?2, ?3)",
    )
    .and_then(|mut st| st.execute(params![token.hash, session, token.expires_at.micros()]))
    .map(|_| ())
    .map_err(db("storing a refresh token"))
}

fn token_taken(conn: &Connection, hash: &str) -> StoreResult<bool> {
    exists(
        conn,
        "SELECT 1 FROM refresh_tokens WHERE hash = ?1",
        hash,
        "checking a refresh token",
    )
}

/// Revoke `session` unless it is revoked already; the session as it is now.
fn revoke(
    conn: &Connection,
    mut session: SessionRecord,
    reason: &str,
    now: Timestamp,
) -> StoreResult<SessionRecord> {
    if session.revoked_at.is_some() {
        return Ok(session);
    }
    conn.prepare_cached(
        "UPDATE sessions SET revoked_at = ?2, revoked_reason = ?3
         WHERE id = ?1 AND revoked_at IS NULL",
    )
    .and_then(|mut st| st.execute(params![session.id, now.micros(), reason]))
    .map_err(db("revoking a session"))?;
    session.revoked_at = Some(now);
    session.revoked_reason = Some(reason.to_owned());
    Ok(session)
}

fn rotate(
    conn: &Connection,
    hash: &str,
    next: &NewRefreshToken,
    now: Timestamp,
) -> StoreResult<RefreshOutcome> {
    let token = conn
        .prepare_cached(
            "SELECT session_id, expires_at, used_at FROM refresh_tokens WHERE hash = ?1",
        )
        .and_then(|mut st| {
            st.query_row([hash], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    time_at(r, 1)?,
                    r.get::<_, Option<i64>>(2)?.is_some(),
                ))
            })
            .optional()
        })
        .map_err(db("reading a refresh token"))?;
    let Some((session_id, token_expires, used)) = token else {
        return Ok(RefreshOutcome::Unknown);
    };
    let session = load_session(conn, &session_id)?.ok_or_else(|| {
        StoreError::Internal(format!(
            "refresh token names missing session {session_id:?}"
        ))
    })?;
    if session.revoked_at.is_some() {
        return Ok(RefreshOutcome::Revoked(session));
    }
    if session.expires_at <= now {
        return Ok(RefreshOutcome::Expired);
    }
    if used {
        // Someone holds a token that was already exchanged: end the family.
        return Ok(RefreshOutcome::Reused(revoke(conn, session, "reuse", now)?));
    }
    if token_expires <= now {
        return Ok(RefreshOutcome::Expired);
    }
    if token_taken(conn, &next.hash)? {
        return Err(invalid(
            "hash",
            "the next refresh token is stored already".to_owned(),
        ));
    }
    conn.prepare_cached("UPDATE refresh_tokens SET used_at = ?2 WHERE hash = ?1")
        .and_then(|mut st| st.execute(params![hash, now.micros()]))
        .map_err(db("using a refresh token"))?;
    insert_token(conn, &session.id, next)?;
    Ok(RefreshOutcome::Rotated(session))
}

// ---- signing keys ----

const SIGNING_COLUMNS: &str = "kid, algorithm, private_key, public_key, created_at, retired_at";

fn signing_row(row: &Row<'_>) -> rusqlite::Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: row.get(0)?,
        algorithm: row.get(1)?,
        private_key: row.get(2)?,
        public_key: row.get(3)?,
        created_at: time_at(row, 4)?,
        retired_at: opt_time_at(row, 5)?,
    })
}

fn current_signing_key(conn: &Connection) -> StoreResult<Option<SigningKeyRecord>> {
    conn.prepare_cached(&format!(
        "SELECT {SIGNING_COLUMNS} FROM signing_keys WHERE retired_at IS NULL
         ORDER BY created_at DESC, seq DESC LIMIT 1"
    ))
    .and_then(|mut st| st.query_row([], signing_row).optional())
    .map_err(db("reading the signing key"))
}

/// Refusals common to storing a new signing key.
fn check_new_signing_key(conn: &Connection, key: &SigningKeyRecord) -> StoreResult<()> {
    if key.retired_at.is_some() {
        return Err(invalid(
            "retired_at",
            "a new signing key cannot be retired already".to_owned(),
        ));
    }
    if exists(
        conn,
        "SELECT 1 FROM signing_keys WHERE kid = ?1",
        &key.kid,
        "checking a signing key id",
    )? {
        return Err(invalid(
            "kid",
            format!("a signing key with kid {:?} exists already", key.kid),
        ));
    }
    Ok(())
}

fn insert_signing_key(conn: &Connection, key: &SigningKeyRecord) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO signing_keys (kid, algorithm, private_key, public_key, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )
    .and_then(|mut st| {
        st.execute(params![
            key.kid,
            key.algorithm,
            key.private_key,
            key.public_key,
            key.created_at.micros(),
        ])
    })
    .map(|_| ())
    .map_err(db("storing a signing key"))
}

// ---- audit log ----

fn audit_row(row: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        seq: u64::try_from(row.get::<_, i64>(0)?).unwrap_or(0),
        entry: NewAuditEntry {
            at: time_at(row, 1)?,
            actor: row.get(2)?,
            action: row.get(3)?,
            target: row.get(4)?,
            outcome: row.get(5)?,
            detail: row.get(6)?,
            request_id: row.get(7)?,
            client_addr: row.get(8)?,
        },
    })
}

/// Credentials as authenticating reads them, kept between requests.
///
/// Coherent because nothing but this process changes the embedded store
/// (the data-directory lock): every write to identities, keys, roles,
/// grants, sessions or signing keys goes through [`SqliteStore::access_write`],
/// which moves the generation on once it committed, and an entry is used
/// only while the generation it was read at is still current. The
/// generation is read *before* the store is, so an entry can only be older
/// than its generation says, never newer. Expiry times are data: callers
/// compare them with the clock on every request. `last_used_at` may be
/// stale here (touches do not move the generation; authenticating never
/// reads it).
#[derive(Default)]
pub(super) struct CredentialCache {
    generation: AtomicU64,
    keys: CacheMap<ApiKeyRecord>,
    sessions: CacheMap<SessionRecord>,
}

impl CredentialCache {
    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every entry read before this call is stale from now on.
    fn invalidate(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// Entries by id; emptied whole when full (bounded memory, no eviction
/// bookkeeping on the hot path).
struct CacheMap<T> {
    entries: Mutex<HashMap<String, (u64, Credential<T>)>>,
}

impl<T> Default for CacheMap<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

const CREDENTIAL_CACHE_MAX: usize = 10_000;

impl<T: Clone> CacheMap<T> {
    fn get(&self, id: &str, generation: u64) -> Option<Credential<T>> {
        let entries = self.entries.lock().ok()?;
        match entries.get(id) {
            Some((g, c)) if *g == generation => Some(c.clone()),
            _ => None,
        }
    }

    fn put(&self, id: &str, generation: u64, credential: &Credential<T>) {
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() >= CREDENTIAL_CACHE_MAX {
                entries.clear();
            }
            entries.insert(id.to_owned(), (generation, credential.clone()));
        }
    }
}

impl SqliteStore {
    /// A key's or session's credential from `cache` while no identity write
    /// happened since it was read, else from the store (`load` the record,
    /// then the user and grants of its `principal`), remembered.
    async fn cached_credential<T: Clone + Send + 'static>(
        &self,
        cache: &CacheMap<T>,
        id: &str,
        load: fn(&Connection, &str) -> StoreResult<Option<T>>,
        principal: fn(&T) -> String,
    ) -> StoreResult<Option<Credential<T>>> {
        let generation = self.credentials.generation();
        if let Some(hit) = cache.get(id, generation) {
            return Ok(Some(hit));
        }
        let key = id.to_owned();
        let found = self
            .read(move |conn, _| {
                let Some(record) = load(conn, &key)? else {
                    return Ok(None);
                };
                credential(conn, principal(&record), record).map(Some)
            })
            .await?;
        if let Some(c) = &found {
            cache.put(id, generation, c);
        }
        Ok(found)
    }

    /// A write that may change what authenticating a request reads: once
    /// it has committed (or failed), cached credentials are dropped.
    async fn access_write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut super::writer::WriteCtx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let result = self.write(op).await;
        self.credentials.invalidate();
        result
    }
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn create_user(&self, user: UserRecord) -> StoreResult<()> {
        self.access_write(move |ctx| insert_user(ctx.conn, &user))
            .await
    }

    async fn user(&self, name: &str) -> StoreResult<Option<UserRecord>> {
        let name = name.to_owned();
        self.read(move |conn, _| load_user(conn, &name)).await
    }

    async fn list_users(&self, page: PageRequest) -> StoreResult<Vec<UserRecord>> {
        self.read(move |conn, _| {
            let mut q = Query::new();
            q.cmp("name", ">", page.after.map(Sql::Text));
            q.run(
                conn,
                &format!("SELECT {USER_COLUMNS} FROM users"),
                "name",
                page.limit,
                user_row,
                "listing users",
            )
        })
        .await
    }

    async fn update_user(
        &self,
        name: &str,
        patch: UserPatch,
        now: Timestamp,
    ) -> StoreResult<UserRecord> {
        let name = name.to_owned();
        self.access_write(move |ctx| {
            let mut user = require_user(ctx.conn, &name)?;
            if let Some(hash) = patch.password_hash {
                user.password_hash = hash;
            }
            if let Some(roles) = patch.roles {
                user.roles = roles;
            }
            if let Some(disabled) = patch.disabled {
                user.disabled = disabled;
            }
            if patch.unlock {
                user.failed_logins = 0;
                user.locked_until = None;
            }
            user.updated_at = now;
            save_user(ctx.conn, &user)?;
            Ok(user)
        })
        .await
    }

    async fn delete_user(&self, name: &str, now: Timestamp) -> StoreResult<()> {
        let name = name.to_owned();
        self.access_write(move |ctx| remove_user(ctx.conn, &name, now))
            .await
    }

    async fn record_login_failure(
        &self,
        name: &str,
        now: Timestamp,
        threshold: u32,
        lock_for_micros: i64,
    ) -> StoreResult<LoginFailure> {
        let name = name.to_owned();
        self.access_write(move |ctx| {
            record_failure(ctx.conn, &name, now, threshold, lock_for_micros)
        })
        .await
    }

    async fn record_login_success(&self, name: &str, now: Timestamp) -> StoreResult<()> {
        let name = name.to_owned();
        self.access_write(move |ctx| {
            require_user(ctx.conn, &name)?;
            ctx.conn
                .prepare_cached(
                    "UPDATE users SET failed_logins = 0, last_login_at = ?2 WHERE name = ?1",
                )
                .and_then(|mut st| st.execute(params![name, now.micros()]))
                .map(|_| ())
                .map_err(db("recording a login"))
        })
        .await
    }

    async fn create_api_key(&self, key: ApiKeyRecord) -> StoreResult<()> {
        self.access_write(move |ctx| insert_key(ctx.conn, &key))
            .await
    }

    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let id = id.to_owned();
        self.read(move |conn, _| load_key(conn, &id)).await
    }

    async fn api_key_credential(&self, id: &str) -> StoreResult<Option<Credential<ApiKeyRecord>>> {
        self.cached_credential(&self.credentials.keys, id, load_key, |k| {
            k.principal.clone()
        })
        .await
    }

    async fn list_api_keys(
        &self,
        principal: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Vec<ApiKeyRecord>> {
        let principal = principal.map(str::to_owned);
        self.read(move |conn, _| {
            let mut q = Query::new();
            q.eq("principal", principal)
                .cmp("id", ">", page.after.map(Sql::Text));
            q.run(
                conn,
                &format!("SELECT {KEY_COLUMNS} FROM api_keys"),
                "id",
                page.limit,
                key_row,
                "listing API keys",
            )
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<ApiKeyRecord> {
        let id = id.to_owned();
        self.access_write(move |ctx| {
            let mut key = load_key(ctx.conn, &id)?
                .ok_or_else(|| StoreError::NotFound(format!("no API key with id {id:?}")))?;
            if key.revoked_at.is_none() {
                ctx.conn
                    .prepare_cached("UPDATE api_keys SET revoked_at = ?2 WHERE id = ?1")
                    .and_then(|mut st| st.execute(params![id, now.micros()]))
                    .map_err(db("revoking an API key"))?;
                key.revoked_at = Some(now);
            }
            Ok(key)
        })
        .await
    }

    async fn touch_api_key(&self, id: &str, now: Timestamp) -> StoreResult<()> {
        let id = id.to_owned();
        // Not a change to what authenticating reads (`last_used_at` is
        // never checked there): the credential cache stays.
        self.write(move |ctx| {
            // Never moves back (touches may arrive out of order); a missing
            // key has nothing to touch.
            ctx.conn
                .prepare_cached(
                    "UPDATE api_keys SET last_used_at = ?2
                     WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
                )
                .and_then(|mut st| st.execute(params![id, now.micros()]))
                .map(|_| ())
                .map_err(db("recording an API key's use"))
        })
        .await
    }

    async fn bootstrap_api_key(&self, key: ApiKeyRecord) -> StoreResult<bool> {
        self.access_write(move |ctx| {
            let taken: bool = ctx
                .conn
                .prepare_cached(
                    "SELECT EXISTS (SELECT 1 FROM users)
                         OR EXISTS (SELECT 1 FROM api_keys WHERE revoked_at IS NULL)",
                )
                .and_then(|mut st| st.query_row([], |r| r.get(0)))
                .map_err(db("checking for users and keys"))?;
            if taken {
                return Ok(false);
            }
            insert_key(ctx.conn, &key)?;
            Ok(true)
        })
        .await
    }

    async fn create_role(&self, role: RoleRecord) -> StoreResult<()> {
        self.access_write(move |ctx| insert_role(ctx.conn, &role))
            .await
    }

    async fn role(&self, name: &str) -> StoreResult<Option<RoleRecord>> {
        let name = name.to_owned();
        self.read(move |conn, _| load_role(conn, &name)).await
    }

    async fn roles(&self, names: &[String]) -> StoreResult<Vec<RoleRecord>> {
        if names.is_empty() {
            return Ok(Vec::new());
        }
        let mut names = names.to_vec();
        names.sort();
        names.dedup();
        self.read(move |conn, _| {
            let mut out = Vec::new();
            for chunk in names.chunks(500) {
                let marks = vec!["?"; chunk.len()].join(", ");
                let found = conn
                    .prepare_cached(&format!(
                        "SELECT {ROLE_COLUMNS} FROM roles WHERE name IN ({marks}) ORDER BY name"
                    ))
                    .and_then(|mut st| {
                        st.query_map(rusqlite::params_from_iter(chunk.iter()), role_row)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    })
                    .map_err(db("reading roles"))?;
                out.extend(found);
            }
            Ok(out)
        })
        .await
    }

    async fn list_roles(&self, page: PageRequest) -> StoreResult<Vec<RoleRecord>> {
        self.read(move |conn, _| {
            let mut q = Query::new();
            q.cmp("name", ">", page.after.map(Sql::Text));
            q.run(
                conn,
                &format!("SELECT {ROLE_COLUMNS} FROM roles"),
                "name",
                page.limit,
                role_row,
                "listing roles",
            )
        })
        .await
    }

    async fn delete_role(&self, name: &str) -> StoreResult<()> {
        let name = name.to_owned();
        self.access_write(move |ctx| {
            if load_role(ctx.conn, &name)?.is_none() {
                return Err(StoreError::NotFound(format!("no role named {name:?}")));
            }
            ctx.conn
                .prepare_cached("DELETE FROM roles WHERE name = ?1")
                .and_then(|mut st| st.execute([&name]))
                .map(|_| ())
                .map_err(db("deleting a role"))
        })
        .await
    }

    async fn create_grant(&self, grant: GrantRecord) -> StoreResult<()> {
        self.access_write(move |ctx| insert_grant(ctx.conn, &grant))
            .await
    }

    async fn grants_of(&self, principal: &str) -> StoreResult<Vec<GrantRecord>> {
        let principal = principal.to_owned();
        self.read(move |conn, _| load_grants(conn, &principal))
            .await
    }

    async fn list_grants(
        &self,
        filter: GrantFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<GrantRecord>> {
        self.read(move |conn, _| {
            let mut q = Query::new();
            q.eq("principal", filter.principal)
                .eq("object_kind", filter.object_kind)
                .eq("object_id", filter.object_id)
                .cmp("id", ">", page.after.map(Sql::Text));
            q.run(
                conn,
                &format!("SELECT {GRANT_COLUMNS} FROM grants"),
                "id",
                page.limit,
                grant_row,
                "listing grants",
            )
        })
        .await
    }

    async fn delete_grant(&self, id: &str) -> StoreResult<GrantRecord> {
        let id = id.to_owned();
        self.access_write(move |ctx| {
            let grant = ctx
                .conn
                .prepare_cached(&format!("SELECT {GRANT_COLUMNS} FROM grants WHERE id = ?1"))
                .and_then(|mut st| st.query_row([&id], grant_row).optional())
                .map_err(db("reading a grant"))?
                .ok_or_else(|| StoreError::NotFound(format!("no grant with id {id:?}")))?;
            ctx.conn
                .prepare_cached("DELETE FROM grants WHERE id = ?1")
                .and_then(|mut st| st.execute([&id]))
                .map_err(db("deleting a grant"))?;
            Ok(grant)
        })
        .await
    }

    async fn create_session(
        &self,
        session: SessionRecord,
        first: NewRefreshToken,
    ) -> StoreResult<()> {
        self.access_write(move |ctx| {
            if load_session(ctx.conn, &session.id)?.is_some() {
                return Err(invalid(
                    "id",
                    format!("a session with id {:?} exists already", session.id),
                ));
            }
            if token_taken(ctx.conn, &first.hash)? {
                return Err(invalid(
                    "hash",
                    "the refresh token is stored already".to_owned(),
                ));
            }
            ctx.conn
                .prepare_cached(
                    "INSERT INTO sessions (id, principal, created_at, expires_at, revoked_at,
                                           revoked_reason)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        session.id,
                        session.principal,
                        session.created_at.micros(),
                        session.expires_at.micros(),
                        micros(session.revoked_at),
                        session.revoked_reason,
                    ])
                })
                .map_err(db("storing a session"))?;
            insert_token(ctx.conn, &session.id, &first)
        })
        .await
    }

    async fn session(&self, id: &str) -> StoreResult<Option<SessionRecord>> {
        let id = id.to_owned();
        self.read(move |conn, _| load_session(conn, &id)).await
    }

    async fn session_credential(&self, id: &str) -> StoreResult<Option<Credential<SessionRecord>>> {
        self.cached_credential(&self.credentials.sessions, id, load_session, |s| {
            s.principal.clone()
        })
        .await
    }

    async fn rotate_refresh_token(
        &self,
        hash: &str,
        next: NewRefreshToken,
        now: Timestamp,
    ) -> StoreResult<RefreshOutcome> {
        let hash = hash.to_owned();
        self.access_write(move |ctx| rotate(ctx.conn, &hash, &next, now))
            .await
    }

    async fn revoke_session(
        &self,
        id: &str,
        reason: &str,
        now: Timestamp,
    ) -> StoreResult<SessionRecord> {
        let id = id.to_owned();
        let reason = reason.to_owned();
        self.access_write(move |ctx| {
            let session = load_session(ctx.conn, &id)?
                .ok_or_else(|| StoreError::NotFound(format!("no session with id {id:?}")))?;
            revoke(ctx.conn, session, &reason, now)
        })
        .await
    }

    async fn revoke_sessions_of(
        &self,
        principal: &str,
        reason: &str,
        now: Timestamp,
    ) -> StoreResult<u64> {
        let principal = principal.to_owned();
        let reason = reason.to_owned();
        self.access_write(move |ctx| {
            ctx.conn
                .prepare_cached(
                    "UPDATE sessions SET revoked_at = ?2, revoked_reason = ?3
                     WHERE principal = ?1 AND revoked_at IS NULL AND expires_at > ?2",
                )
                .and_then(|mut st| st.execute(params![principal, now.micros(), reason]))
                .map(|n| n as u64)
                .map_err(db("revoking sessions"))
        })
        .await
    }

    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        self.read(|conn, _| {
            conn.prepare_cached(&format!(
                "SELECT {SIGNING_COLUMNS} FROM signing_keys ORDER BY created_at DESC, seq DESC"
            ))
            .and_then(|mut st| {
                st.query_map([], signing_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db("reading signing keys"))
        })
        .await
    }

    async fn ensure_signing_key(&self, key: SigningKeyRecord) -> StoreResult<SigningKeyRecord> {
        self.access_write(move |ctx| {
            if let Some(current) = current_signing_key(ctx.conn)? {
                return Ok(current);
            }
            check_new_signing_key(ctx.conn, &key)?;
            insert_signing_key(ctx.conn, &key)?;
            Ok(key)
        })
        .await
    }

    async fn rotate_signing_key(&self, key: SigningKeyRecord, now: Timestamp) -> StoreResult<()> {
        self.access_write(move |ctx| {
            check_new_signing_key(ctx.conn, &key)?;
            ctx.conn
                .prepare_cached("UPDATE signing_keys SET retired_at = ?1 WHERE retired_at IS NULL")
                .and_then(|mut st| st.execute([now.micros()]))
                .map_err(db("retiring the signing key"))?;
            insert_signing_key(ctx.conn, &key)
        })
        .await
    }

    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<u64> {
        self.write(move |ctx| {
            ctx.conn
                .prepare_cached(
                    "INSERT INTO audit_log (at, actor, action, target, outcome, detail,
                                            request_id, client_addr)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .and_then(|mut st| {
                    st.execute(params![
                        entry.at.micros(),
                        entry.actor,
                        entry.action,
                        entry.target,
                        entry.outcome,
                        entry.detail,
                        entry.request_id,
                        entry.client_addr,
                    ])
                })
                .map_err(db("appending to the audit log"))?;
            Ok(u64::try_from(ctx.conn.last_insert_rowid()).unwrap_or(0))
        })
        .await
    }

    async fn list_audit(&self, filter: AuditFilter) -> StoreResult<Vec<AuditEntry>> {
        self.read(move |conn, _| {
            let mut q = Query::new();
            q.eq("actor", filter.actor)
                .eq("action", filter.action)
                .eq("outcome", filter.outcome)
                .cmp("at", ">=", filter.since.map(|t| Sql::Integer(t.micros())))
                .cmp(
                    "seq",
                    "<",
                    filter
                        .before_seq
                        .map(|s| Sql::Integer(i64::try_from(s).unwrap_or(i64::MAX))),
                );
            q.run(
                conn,
                "SELECT seq, at, actor, action, target, outcome, detail, request_id, client_addr
                 FROM audit_log",
                "seq DESC",
                filter.limit,
                audit_row,
                "listing the audit log",
            )
        })
        .await
    }
}
