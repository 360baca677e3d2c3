//! Identities and what they may do, stored: local users, API keys, custom
//! roles, grants, login sessions with their refresh tokens, JWT signing
//! keys and the append-only audit log.
//!
//! Everything here is stored (never only in one process's memory) so that
//! several nodes on one PostgreSQL database agree: a key revoked or a
//! session logged out on one node is refused by every node at its next
//! request. The same guarantees as [`crate::Store`] hold: a write is durable
//! before it returns and a failed write leaves nothing behind.
//!
//! Secrets are never stored: API keys and refresh tokens as SHA-256 hashes
//! (they are long random strings), passwords as Argon2id PHC strings. Only
//! JWT signing keys are stored as key material, because every node must
//! sign and verify with them.

use crate::{PageRequest, StoreResult};
use async_trait::async_trait;
use cairn_domain::Timestamp;

/// A local user (`user:<name>` as a principal).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// 1 to 64 characters, unique.
    pub name: String,
    /// Argon2id PHC string.
    pub password_hash: String,
    /// Role names (built-in or custom).
    pub roles: Vec<String>,
    pub disabled: bool,
    /// Failed logins since the last success or lockout.
    pub failed_logins: u32,
    /// Logins are refused until then.
    pub locked_until: Option<Timestamp>,
    pub last_login_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// A change to a user; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPatch {
    pub password_hash: Option<String>,
    pub roles: Option<Vec<String>>,
    pub disabled: Option<bool>,
    /// `true`: clear `failed_logins` and `locked_until`.
    pub unlock: bool,
}

/// What a failed login did to the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginFailure {
    /// Failures counted so far (0 right after a lockout began).
    pub failed_logins: u32,
    /// Set when this failure locked the account (or it was locked already).
    pub locked_until: Option<Timestamp>,
}

/// An API key. The key a client sends is `cairn_<id>_<secret>`; `id` is
/// public (shown in lists and logs), only SHA-256(secret) is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Public part, unique: 16 lower-case base32 characters.
    pub id: String,
    /// A label for people.
    pub name: String,
    /// Hex SHA-256 of the secret part.
    pub secret_hash: String,
    /// The principal the key acts as: `key:<id>` for a standalone key, or
    /// `user:<name>` for a key issued to a user.
    pub principal: String,
    /// Role names the key holds.
    pub roles: Vec<String>,
    /// Permission patterns (`resource:action`) further restricting the key;
    /// empty means no restriction beyond its roles.
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub created_at: Timestamp,
    /// The principal that created it (`cli`, `bootstrap`, `user:admin`...).
    pub created_by: String,
}

/// A custom role (built-in roles are not stored).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRecord {
    pub name: String,
    /// Permission patterns that hold everywhere.
    pub permissions: Vec<String>,
    /// Permission patterns that hold only on owned or granted objects.
    pub on_grant: Vec<String>,
    pub description: String,
    pub created_at: Timestamp,
}

/// A grant of permissions on one receiver or group to one principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrantRecord {
    /// ULID.
    pub id: String,
    /// `user:<name>`, `key:<id>` or `oidc:<subject>`.
    pub principal: String,
    /// `receiver` or `group`.
    pub object_kind: String,
    /// The receiver's or group's id.
    pub object_id: String,
    /// Permission patterns.
    pub permissions: Vec<String>,
    pub created_at: Timestamp,
    pub created_by: String,
}

#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub principal: Option<String>,
    pub object_kind: Option<String>,
    pub object_id: Option<String>,
}

/// A login session: one family of refresh tokens. Access tokens carry its
/// id (`sid`); revoking it (logout, refresh-token reuse, user disabled)
/// ends every token of the family on every node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// ULID.
    pub id: String,
    /// `user:<name>`.
    pub principal: String,
    pub created_at: Timestamp,
    /// No refresh after this, whatever the token says.
    pub expires_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
    /// `logout`, `reuse`, `user disabled`, ...
    pub revoked_reason: Option<String>,
}

/// A refresh token about to be stored (only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRefreshToken {
    /// Hex SHA-256 of the token.
    pub hash: String,
    pub expires_at: Timestamp,
}

/// What presenting a refresh token did, decided atomically: of two
/// concurrent presentations of one token exactly one rotates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefreshOutcome {
    /// The token was unused and valid: it is now used and the new token is
    /// stored in the same session.
    Rotated(SessionRecord),
    /// The token had been used before: the whole session (family) is now
    /// revoked with reason `reuse`.
    Reused(SessionRecord),
    /// The session was revoked already (nothing changed).
    Revoked(SessionRecord),
    /// The token or its session has expired (nothing changed).
    Expired,
    /// No such token.
    Unknown,
}

/// A JWT signing key. The newest key without `retired_at` signs; retired
/// keys still verify until the application's grace period after
/// `retired_at` has passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    /// The JWT `kid`, unique.
    pub kid: String,
    /// `EdDSA`, `RS256` or `HS256`.
    pub algorithm: String,
    /// Private key (PKCS#8 DER) or HMAC secret, base64 (standard, padded).
    pub private_key: String,
    /// Public key (SubjectPublicKeyInfo DER) base64; empty for HS256.
    pub public_key: String,
    pub created_at: Timestamp,
    pub retired_at: Option<Timestamp>,
}

/// One audit log entry about to be appended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    pub at: Timestamp,
    /// Who acted: `user:<name>`, `key:<id>`, `oidc:<sub>`, `cli`,
    /// `bootstrap`, `anonymous`.
    pub actor: String,
    /// What was attempted, e.g. `auth.login`, `key.create`,
    /// `permission.denied`.
    pub action: String,
    /// What it was done to, e.g. `user:alice`, `receiver:01H...`.
    pub target: String,
    /// `success`, `failure` or `denied`.
    pub outcome: String,
    /// More words, never a secret.
    pub detail: String,
    pub request_id: String,
    pub client_addr: String,
}

/// A stored audit log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the log: increases with every append.
    pub seq: u64,
    pub entry: NewAuditEntry,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<String>,
    /// Inclusive lower bound on `at`.
    pub since: Option<Timestamp>,
    /// Only entries with `seq` below this (the next page, newest first).
    pub before_seq: Option<u64>,
    pub limit: u32,
}

/// A credential's record with what authenticating a request by it needs:
/// the user it acts as (when it is `user:<name>` and that user is still
/// stored) and every grant of its principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential<T> {
    pub record: T,
    pub user: Option<UserRecord>,
    pub grants: Vec<GrantRecord>,
}

/// Storage of identities, grants, sessions, signing keys and the audit log.
///
/// Lists take [`PageRequest`] (ids after `after`, ascending), except the
/// audit log, which is read newest first.
#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    // Users. `Invalid` (naming `name`) when the name is taken.
    async fn create_user(&self, user: UserRecord) -> StoreResult<()>;
    async fn user(&self, name: &str) -> StoreResult<Option<UserRecord>>;
    async fn list_users(&self, page: PageRequest) -> StoreResult<Vec<UserRecord>>;
    /// `NotFound` when there is no such user.
    async fn update_user(
        &self,
        name: &str,
        patch: UserPatch,
        now: Timestamp,
    ) -> StoreResult<UserRecord>;
    /// Also revokes the user's sessions and keys issued to `user:<name>`,
    /// and deletes grants to it. `NotFound` when there is no such user.
    async fn delete_user(&self, name: &str, now: Timestamp) -> StoreResult<()>;
    /// Count one more failed login, atomically; once `threshold` failures
    /// are counted the account is locked until `now + lock_for_micros` and
    /// the count starts again. `NotFound` when there is no such user.
    async fn record_login_failure(
        &self,
        name: &str,
        now: Timestamp,
        threshold: u32,
        lock_for_micros: i64,
    ) -> StoreResult<LoginFailure>;
    /// Clear the failure count and set `last_login_at`.
    async fn record_login_success(&self, name: &str, now: Timestamp) -> StoreResult<()>;

    // API keys. `Invalid` (naming `id`) when the id is taken.
    async fn create_api_key(&self, key: ApiKeyRecord) -> StoreResult<()>;
    async fn api_key(&self, id: &str) -> StoreResult<Option<ApiKeyRecord>>;
    /// Keys, of one principal or all, by id.
    async fn list_api_keys(
        &self,
        principal: Option<&str>,
        page: PageRequest,
    ) -> StoreResult<Vec<ApiKeyRecord>>;
    /// The key with its user and grants, for authenticating one request.
    /// Implementations answer in one read where they can; this default
    /// reads the three apart.
    async fn api_key_credential(&self, id: &str) -> StoreResult<Option<Credential<ApiKeyRecord>>> {
        let Some(record) = self.api_key(id).await? else {
            return Ok(None);
        };
        let user = match record.principal.strip_prefix("user:") {
            Some(name) => self.user(name).await?,
            None => None,
        };
        let grants = self.grants_of(&record.principal).await?;
        Ok(Some(Credential {
            record,
            user,
            grants,
        }))
    }
    /// Set `revoked_at` (kept if already set). `NotFound` if no such key.
    async fn revoke_api_key(&self, id: &str, now: Timestamp) -> StoreResult<ApiKeyRecord>;
    /// Set `last_used_at` (callers throttle this; it never fails a request).
    async fn touch_api_key(&self, id: &str, now: Timestamp) -> StoreResult<()>;
    /// Store `key` only if no user exists and no unrevoked API key exists,
    /// atomically across nodes. `true` when it was stored.
    async fn bootstrap_api_key(&self, key: ApiKeyRecord) -> StoreResult<bool>;

    // Custom roles. `Invalid` (naming `name`) when the name is taken.
    async fn create_role(&self, role: RoleRecord) -> StoreResult<()>;
    async fn role(&self, name: &str) -> StoreResult<Option<RoleRecord>>;
    /// The stored roles among `names` (unknown ones left out): one read.
    async fn roles(&self, names: &[String]) -> StoreResult<Vec<RoleRecord>>;
    async fn list_roles(&self, page: PageRequest) -> StoreResult<Vec<RoleRecord>>;
    /// `NotFound` when there is no such role.
    async fn delete_role(&self, name: &str) -> StoreResult<()>;

    // Grants.
    async fn create_grant(&self, grant: GrantRecord) -> StoreResult<()>;
    /// Every grant to `principal` (one read; used on each request).
    async fn grants_of(&self, principal: &str) -> StoreResult<Vec<GrantRecord>>;
    async fn list_grants(
        &self,
        filter: GrantFilter,
        page: PageRequest,
    ) -> StoreResult<Vec<GrantRecord>>;
    /// `NotFound` when there is no such grant; returns the deleted grant.
    async fn delete_grant(&self, id: &str) -> StoreResult<GrantRecord>;

    // Sessions and refresh tokens.
    async fn create_session(
        &self,
        session: SessionRecord,
        first: NewRefreshToken,
    ) -> StoreResult<()>;
    async fn session(&self, id: &str) -> StoreResult<Option<SessionRecord>>;
    /// The session with its user and grants, for authenticating one
    /// request by an access token (one read where the store can).
    async fn session_credential(&self, id: &str) -> StoreResult<Option<Credential<SessionRecord>>> {
        let Some(record) = self.session(id).await? else {
            return Ok(None);
        };
        let user = match record.principal.strip_prefix("user:") {
            Some(name) => self.user(name).await?,
            None => None,
        };
        let grants = self.grants_of(&record.principal).await?;
        Ok(Some(Credential {
            record,
            user,
            grants,
        }))
    }
    /// Present refresh token `hash`: see [`RefreshOutcome`].
    async fn rotate_refresh_token(
        &self,
        hash: &str,
        next: NewRefreshToken,
        now: Timestamp,
    ) -> StoreResult<RefreshOutcome>;
    /// Revoke a session (kept as it was if already revoked). `NotFound` if
    /// there is no such session.
    async fn revoke_session(
        &self,
        id: &str,
        reason: &str,
        now: Timestamp,
    ) -> StoreResult<SessionRecord>;
    /// Revoke every live session of `principal`; returns how many.
    async fn revoke_sessions_of(
        &self,
        principal: &str,
        reason: &str,
        now: Timestamp,
    ) -> StoreResult<u64>;

    // JWT signing keys.
    /// Every stored signing key, newest first.
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    /// Store `key` as the signing key unless an unretired key exists
    /// (atomically across nodes); returns the signing key either way.
    async fn ensure_signing_key(&self, key: SigningKeyRecord) -> StoreResult<SigningKeyRecord>;
    /// Retire the current signing key(s) at `now` and store `key` as the new
    /// one, in one transaction.
    async fn rotate_signing_key(&self, key: SigningKeyRecord, now: Timestamp) -> StoreResult<()>;

    // Audit log: append-only (the schema refuses UPDATE and DELETE).
    async fn append_audit(&self, entry: NewAuditEntry) -> StoreResult<u64>;
    /// Newest first.
    async fn list_audit(&self, filter: AuditFilter) -> StoreResult<Vec<AuditEntry>>;
}
