//! The identity operations behind the REST routes, GraphQL and the CLI:
//! login, refresh, logout, users, API keys, roles, grants, signing keys and
//! the audit log. Each checks the caller's permission with
//! [`Caller::require`] and writes the audit log.
//!
//! Nobody can give more than they hold: the roles given to a user or key,
//! and the permissions of a grant, must each be held by the caller
//! (globally, or for a grant on that object).

use super::authenticate::role_of;
use super::fields::{Fields, Reader};
use super::{AuditNote, Auth, Caller, lockout_micros, now, ttl_secs};
use crate::error::ApiError;
use cairn_auth::{apikey, password};
use cairn_domain::Timestamp;
use cairn_domain::access::{
    Action, BUILTIN_ROLES, ObjectRef, Permission, PermissionPattern, Resource, Role, RoleName,
    Target,
};
use cairn_domain::{GroupId, ReceiverId};
use cairn_store::access::{
    ApiKeyRecord, AuditEntry, AuditFilter, GrantFilter, GrantRecord, NewRefreshToken,
    RefreshOutcome, RoleRecord, SessionRecord, UserPatch, UserRecord,
};
use cairn_store::{PageRequest, Store};
use serde::Serialize;
use std::sync::Arc;

fn perm(resource: Resource, action: Action) -> Permission {
    Permission::new(resource, action)
}

fn micros_of(secs: i64) -> i64 {
    secs.saturating_mul(1_000_000)
}

fn plus_secs(t: Timestamp, secs: i64) -> Timestamp {
    Timestamp::from_micros(t.micros().saturating_add(micros_of(secs)))
}

// ---------------------------------------------------------------- views

#[derive(Debug, Serialize)]
pub struct TokenPair {
    pub access_token: String,
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub refresh_token: String,
    pub refresh_expires_in: i64,
}

#[derive(Debug, Serialize)]
pub struct UserView {
    pub name: String,
    pub roles: Vec<String>,
    pub disabled: bool,
    pub failed_logins: u32,
    pub locked_until: Option<Timestamp>,
    pub last_login_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl From<UserRecord> for UserView {
    fn from(u: UserRecord) -> Self {
        Self {
            name: u.name,
            roles: u.roles,
            disabled: u.disabled,
            failed_logins: u.failed_logins,
            locked_until: u.locked_until,
            last_login_at: u.last_login_at,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct KeyView {
    pub id: String,
    /// What the key starts with, to recognise it: `cairn_<id>_`.
    pub prefix: String,
    pub name: String,
    pub principal: String,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub created_at: Timestamp,
    pub created_by: String,
    /// The key itself: only in the answer that created it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

impl From<ApiKeyRecord> for KeyView {
    fn from(k: ApiKeyRecord) -> Self {
        Self {
            prefix: format!("{}{}_", apikey::PREFIX, k.id),
            id: k.id,
            name: k.name,
            principal: k.principal,
            roles: k.roles,
            scopes: k.scopes,
            expires_at: k.expires_at,
            revoked_at: k.revoked_at,
            last_used_at: k.last_used_at,
            created_at: k.created_at,
            created_by: k.created_by,
            key: None,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RoleView {
    pub name: String,
    pub builtin: bool,
    pub permissions: Vec<String>,
    pub on_grant: Vec<String>,
    pub description: String,
}

impl RoleView {
    fn of_role(role: &Role, builtin: bool, description: String) -> Self {
        Self {
            name: role.name.to_string(),
            builtin,
            permissions: role.permissions.iter().map(|p| p.to_string()).collect(),
            on_grant: role.on_grant.iter().map(|p| p.to_string()).collect(),
            description,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct GrantView {
    pub id: String,
    pub principal: String,
    pub object_kind: String,
    pub object_id: String,
    pub permissions: Vec<String>,
    pub created_at: Timestamp,
    pub created_by: String,
}

impl From<GrantRecord> for GrantView {
    fn from(g: GrantRecord) -> Self {
        Self {
            id: g.id,
            principal: g.principal,
            object_kind: g.object_kind,
            object_id: g.object_id,
            permissions: g.permissions,
            created_at: g.created_at,
            created_by: g.created_by,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct AuditView {
    pub seq: u64,
    pub at: Timestamp,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub outcome: String,
    pub detail: String,
    pub request_id: String,
    pub client_addr: String,
}

impl From<AuditEntry> for AuditView {
    fn from(a: AuditEntry) -> Self {
        let e = a.entry;
        Self {
            seq: a.seq,
            at: e.at,
            actor: e.actor,
            action: e.action,
            target: e.target,
            outcome: e.outcome,
            detail: e.detail,
            request_id: e.request_id,
            client_addr: e.client_addr,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct WhoAmI {
    pub principal: String,
    pub kind: &'static str,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub session: Option<String>,
    pub key_id: Option<String>,
}

pub fn whoami(caller: &Caller) -> WhoAmI {
    use cairn_domain::access::PrincipalKind as K;
    let p = &caller.principal;
    WhoAmI {
        principal: p.id.clone(),
        kind: match p.kind {
            K::User => "user",
            K::ApiKey => "api_key",
            K::Oidc => "oidc",
            K::Anonymous => "anonymous",
        },
        roles: p.roles.iter().map(|r| r.name.to_string()).collect(),
        scopes: p.scopes.iter().map(|s| s.to_string()).collect(),
        session: p.session.clone(),
        key_id: p.key_id.clone(),
    }
}

// ---------------------------------------------------------------- checks

fn valid_user_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
}

fn check_password(password: &str, errors: &mut Vec<String>) {
    let chars = password.chars().count();
    if !(8..=1024).contains(&chars) {
        errors.push(format!(
            "password: must be 8 to 1024 characters long, got {chars}"
        ));
    }
}

/// Every concrete permission a pattern covers.
fn expand(pattern: &PermissionPattern) -> impl Iterator<Item = Permission> + '_ {
    Resource::ALL.into_iter().flat_map(move |r| {
        Action::ALL
            .into_iter()
            .map(move |a| Permission::new(r, a))
            .filter(|p| pattern.matches(*p))
    })
}

/// Role names checked to exist (built-in, or stored custom roles), and
/// held by the caller: a caller may only give roles whose every
/// permission it holds itself.
async fn check_roles(
    auth: &Auth,
    caller: &Caller,
    field: &str,
    names: &[String],
    errors: &mut Vec<String>,
) -> Result<(), ApiError> {
    let custom: Vec<String> = names
        .iter()
        .filter(|n| Role::builtin(n).is_none())
        .cloned()
        .collect();
    let stored = if custom.is_empty() {
        Vec::new()
    } else {
        auth.access.roles(&custom).await?
    };
    for (i, name) in names.iter().enumerate() {
        let role = match Role::builtin(name) {
            Some(r) => r,
            None => match stored.iter().find(|r| &r.name == name) {
                Some(r) => role_of(r).map_err(ApiError::Internal)?,
                None => {
                    errors.push(format!("{field}[{i}]: no role named {name:?}"));
                    continue;
                }
            },
        };
        let missing = role
            .permissions
            .iter()
            .chain(role.on_grant.iter())
            .flat_map(expand)
            .find(|p| !caller.principal.may(p.resource, p.action));
        if let Some(p) = missing {
            return Err(ApiError::Forbidden(format!(
                "forbidden: {} may not give role {name:?}: it does not hold {p} itself",
                caller.id()
            )));
        }
    }
    Ok(())
}

fn parse_patterns(
    field: &str,
    list: &[String],
    errors: &mut Vec<String>,
) -> Vec<PermissionPattern> {
    let mut out = Vec::with_capacity(list.len());
    for (i, s) in list.iter().enumerate() {
        match PermissionPattern::parse(s) {
            Ok(p) => out.push(p),
            Err(e) => errors.push(format!("{field}[{i}]: {e}")),
        }
    }
    out
}

fn page(limit: u32, after: Option<String>) -> PageRequest {
    PageRequest { limit, after }
}

// ---------------------------------------------------------------- login

/// `POST /api/v1/auth/login {"username", "password"}`.
pub async fn login(auth: &Arc<Auth>, ctx: &Caller, body: Fields) -> Result<TokenPair, ApiError> {
    let mut r = Reader::new(&body);
    let name = r.string("username", true);
    let password = r.string("password", true);
    r.finish()?;
    let (Some(name), Some(password)) = (name, password) else {
        return Err(ApiError::Internal(
            "login fields checked but missing".into(),
        ));
    };
    let audited = |detail: String| {
        let ctx = ctx.clone();
        let target = format!("user:{name}");
        async move {
            ctx.audit(AuditNote {
                action: "auth.login",
                target: &target,
                outcome: "failure",
                detail: &detail,
            })
            .await;
        }
    };
    if let Err(wait) = auth.login_attempt(&ctx.client_addr) {
        audited("too many login attempts from this address".into()).await;
        return Err(ApiError::TooManyRequests {
            message: format!("too many login attempts: try again in {wait} s"),
            retry_after: wait,
        });
    }
    let invalid = || ApiError::Unauthorized("invalid user name or password".into());
    let now = now();
    let user = auth.access.user(&name).await?;
    let Some(user) = user.filter(|u| !u.disabled) else {
        let p = password.clone();
        let _ = tokio::task::spawn_blocking(move || password::dummy_verify(&p)).await;
        audited("unknown or disabled user".into()).await;
        crate::metrics::auth_failure("login_failed");
        return Err(invalid());
    };
    if let Some(until) = user.locked_until.filter(|t| *t > now) {
        let wait = u64::try_from((until.micros() - now.micros()) / 1_000_000 + 1).unwrap_or(1);
        audited("account is locked".into()).await;
        return Err(ApiError::TooManyRequests {
            message: format!(
                "the account is locked after repeated failed logins: try again in {wait} s"
            ),
            retry_after: wait,
        });
    }
    let hash = user.password_hash.clone();
    let ok = tokio::task::spawn_blocking(move || password::verify_password(&password, &hash))
        .await
        .map_err(|e| ApiError::Internal(format!("verifying a password: {e}")))?;
    if !ok {
        crate::metrics::auth_failure("login_failed");
        let failure = auth
            .access
            .record_login_failure(
                &name,
                now,
                auth.config.login_max_failures,
                lockout_micros(&auth.config),
            )
            .await?;
        audited("wrong password".into()).await;
        if failure.locked_until.is_some_and(|t| t > now) && failure.failed_logins == 0 {
            ctx.audit(AuditNote {
                action: "auth.lockout",
                target: &format!("user:{name}"),
                outcome: "success",
                detail: &format!(
                    "locked after {} failed logins",
                    auth.config.login_max_failures
                ),
            })
            .await;
        }
        return Err(invalid());
    }
    auth.access.record_login_success(&name, now).await?;
    let principal = format!("user:{name}");
    let pair = new_session(auth, &principal, now).await?;
    // From here on the caller is known: the entry names them as the actor.
    let mut who = (*ctx.principal).clone();
    who.id = principal.clone();
    Caller::new(
        Arc::new(who),
        ctx.request_id.clone(),
        ctx.client_addr.clone(),
        Some(auth.access.clone()),
    )
    .audit(AuditNote {
        action: "auth.login",
        target: &principal,
        outcome: "success",
        detail: "",
    })
    .await;
    Ok(pair)
}

async fn new_session(auth: &Auth, principal: &str, now: Timestamp) -> Result<TokenPair, ApiError> {
    let session = SessionRecord {
        id: ulid::Ulid::new().to_string(),
        principal: principal.to_owned(),
        created_at: now,
        expires_at: plus_secs(now, ttl_secs(auth.config.session_ttl)),
        revoked_at: None,
        revoked_reason: None,
    };
    let (refresh, first) = refresh_token(auth, &session, now);
    auth.access.create_session(session.clone(), first).await?;
    token_pair(auth, &session, refresh, now)
}

fn refresh_token(
    auth: &Auth,
    session: &SessionRecord,
    now: Timestamp,
) -> (String, NewRefreshToken) {
    let token = apikey::random_token(32);
    let expires_at =
        plus_secs(now, ttl_secs(auth.config.refresh_token_ttl)).min(session.expires_at);
    let hash = apikey::hash_secret(&token);
    (token, NewRefreshToken { hash, expires_at })
}

fn token_pair(
    auth: &Auth,
    session: &SessionRecord,
    refresh: String,
    now: Timestamp,
) -> Result<TokenPair, ApiError> {
    let now_secs = now.micros() / 1_000_000;
    let ttl = ttl_secs(auth.config.access_token_ttl);
    let claims = cairn_auth::jwt::Claims {
        sub: session.principal.clone(),
        iss: auth.config.issuer.clone(),
        aud: auth.config.audience.clone(),
        exp: now_secs.saturating_add(ttl),
        nbf: now_secs,
        iat: now_secs,
        jti: ulid::Ulid::new().to_string(),
        sid: session.id.clone(),
    };
    let access_token = auth
        .ring()
        .sign(&claims)
        .map_err(|e| ApiError::Internal(format!("signing an access token: {e}")))?;
    let refresh_expires =
        plus_secs(now, ttl_secs(auth.config.refresh_token_ttl)).min(session.expires_at);
    Ok(TokenPair {
        access_token,
        token_type: "Bearer",
        expires_in: ttl,
        refresh_token: refresh,
        refresh_expires_in: (refresh_expires.micros() - now.micros()) / 1_000_000,
    })
}

/// `POST /api/v1/auth/refresh {"refresh_token"}`: a new pair; the old
/// refresh token is spent. Presenting a spent one ends the whole session.
pub async fn refresh(auth: &Arc<Auth>, ctx: &Caller, body: Fields) -> Result<TokenPair, ApiError> {
    let mut r = Reader::new(&body);
    let token = r.string("refresh_token", true);
    r.finish()?;
    let Some(token) = token else {
        return Err(ApiError::Internal(
            "refresh field checked but missing".into(),
        ));
    };
    if let Err(wait) = auth.login_attempt(&ctx.client_addr) {
        return Err(ApiError::TooManyRequests {
            message: format!("too many attempts: try again in {wait} s"),
            retry_after: wait,
        });
    }
    let now = now();
    let hash = apikey::hash_secret(&token);
    // The next token is made before we know the session; its expiry is
    // capped below once we do (stored expiry is the refresh TTL).
    let next_token = apikey::random_token(32);
    let next = NewRefreshToken {
        hash: apikey::hash_secret(&next_token),
        expires_at: plus_secs(now, ttl_secs(auth.config.refresh_token_ttl)),
    };
    let fail = |action: &'static str, target: String, detail: &'static str| {
        let ctx = ctx.clone();
        async move {
            ctx.audit(AuditNote {
                action,
                target: &target,
                outcome: "failure",
                detail,
            })
            .await;
            crate::metrics::auth_failure("invalid_credentials");
        }
    };
    match auth.access.rotate_refresh_token(&hash, next, now).await? {
        RefreshOutcome::Rotated(session) => {
            let user = session.principal.strip_prefix("user:").unwrap_or("");
            let live = auth.access.user(user).await?.is_some_and(|u| !u.disabled);
            if !live || session.expires_at <= now {
                auth.access
                    .revoke_session(&session.id, "user disabled", now)
                    .await?;
                fail(
                    "auth.refresh",
                    format!("session:{}", session.id),
                    "user disabled or gone",
                )
                .await;
                return Err(ApiError::Unauthorized("the session has ended".into()));
            }
            ctx.audit(AuditNote {
                action: "auth.refresh",
                target: &format!("session:{}", session.id),
                outcome: "success",
                detail: &session.principal,
            })
            .await;
            token_pair(auth, &session, next_token, now)
        }
        RefreshOutcome::Reused(session) => {
            fail(
                "auth.refresh_reuse",
                format!("session:{}", session.id),
                "a spent refresh token was presented again: the session is revoked",
            )
            .await;
            Err(ApiError::Unauthorized(
                "refresh token reuse detected: every token of this session is revoked".into(),
            ))
        }
        RefreshOutcome::Revoked(session) => {
            fail(
                "auth.refresh",
                format!("session:{}", session.id),
                "session revoked",
            )
            .await;
            Err(ApiError::Unauthorized("the session has ended".into()))
        }
        RefreshOutcome::Expired => {
            fail("auth.refresh", String::new(), "refresh token expired").await;
            Err(ApiError::Unauthorized(
                "the refresh token has expired".into(),
            ))
        }
        RefreshOutcome::Unknown => {
            fail("auth.refresh", String::new(), "unknown refresh token").await;
            Err(ApiError::Unauthorized("invalid refresh token".into()))
        }
    }
}

/// `POST /api/v1/auth/logout`: end the caller's login session.
pub async fn logout(auth: &Arc<Auth>, caller: &Caller) -> Result<(), ApiError> {
    let Some(session) = caller.principal.session.clone() else {
        return Err(ApiError::field(
            "Authorization",
            "logout ends a login session: call it with an access token (API keys are revoked with DELETE /api/v1/keys/{id})",
        ));
    };
    auth.access
        .revoke_session(&session, "logout", now())
        .await?;
    caller
        .audit(AuditNote {
            action: "auth.logout",
            target: &format!("session:{session}"),
            outcome: "success",
            detail: "",
        })
        .await;
    Ok(())
}

// ---------------------------------------------------------------- users

/// `POST /api/v1/users {"name", "password", "roles"}`.
pub async fn create_user(auth: &Auth, caller: &Caller, body: Fields) -> Result<UserView, ApiError> {
    caller
        .require(perm(Resource::Users, Action::Create), None)
        .await?;
    let mut r = Reader::new(&body);
    let name = r.string("name", true);
    let password = r.string("password", true);
    let roles = r.strings("roles").unwrap_or_default();
    let disabled = r.boolean("disabled").unwrap_or(false);
    let mut errors = std::mem::take(&mut r.errors);
    if let Some(n) = &name
        && !valid_user_name(n)
    {
        errors.push(format!(
            "name: must be 1 to 64 characters of letters, digits, '.', '_', '-', '@', got {n:?}"
        ));
    }
    if let Some(p) = &password {
        check_password(p, &mut errors);
    }
    check_roles(auth, caller, "roles", &roles, &mut errors).await?;
    r.errors = errors;
    r.finish()?;
    let (Some(name), Some(password)) = (name, password) else {
        return Err(ApiError::Internal("user fields checked but missing".into()));
    };
    let hash = tokio::task::spawn_blocking(move || password::hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(format!("hashing a password: {e}")))?
        .map_err(|e| ApiError::Internal(format!("hashing a password: {e}")))?;
    let now = now();
    let user = UserRecord {
        name: name.clone(),
        password_hash: hash,
        roles,
        disabled,
        failed_logins: 0,
        locked_until: None,
        last_login_at: None,
        created_at: now,
        updated_at: now,
    };
    auth.access.create_user(user.clone()).await?;
    caller
        .audit(AuditNote {
            action: "user.create",
            target: &format!("user:{name}"),
            outcome: "success",
            detail: &format!("roles {:?}", user.roles),
        })
        .await;
    Ok(user.into())
}

pub async fn list_users(
    auth: &Auth,
    caller: &Caller,
    limit: u32,
    after: Option<String>,
) -> Result<Vec<UserView>, ApiError> {
    caller
        .require(perm(Resource::Users, Action::Read), None)
        .await?;
    let users = auth.access.list_users(page(limit, after)).await?;
    Ok(users.into_iter().map(UserView::from).collect())
}

pub async fn get_user(auth: &Auth, caller: &Caller, name: &str) -> Result<UserView, ApiError> {
    caller
        .require(perm(Resource::Users, Action::Read), None)
        .await?;
    auth.access
        .user(name)
        .await?
        .map(UserView::from)
        .ok_or_else(|| ApiError::NotFound(format!("no user named {name:?}")))
}

/// `PATCH /api/v1/users/{name} {"password", "roles", "disabled", "unlock"}`.
pub async fn update_user(
    auth: &Auth,
    caller: &Caller,
    name: &str,
    body: Fields,
) -> Result<UserView, ApiError> {
    caller
        .require(perm(Resource::Users, Action::Update), None)
        .await?;
    let mut r = Reader::new(&body);
    let password = r.string("password", false);
    let roles = r.strings("roles");
    let disabled = r.boolean("disabled");
    let unlock = r.boolean("unlock").unwrap_or(false);
    let mut errors = std::mem::take(&mut r.errors);
    if let Some(p) = &password {
        check_password(p, &mut errors);
    }
    if let Some(roles) = &roles {
        check_roles(auth, caller, "roles", roles, &mut errors).await?;
    }
    r.errors = errors;
    r.finish()?;
    let password_hash = match password {
        Some(p) => Some(
            tokio::task::spawn_blocking(move || password::hash_password(&p))
                .await
                .map_err(|e| ApiError::Internal(format!("hashing a password: {e}")))?
                .map_err(|e| ApiError::Internal(format!("hashing a password: {e}")))?,
        ),
        None => None,
    };
    let changed_password = password_hash.is_some();
    let patch = UserPatch {
        password_hash,
        roles: roles.clone(),
        disabled,
        unlock,
    };
    let now = now();
    let user = auth.access.update_user(name, patch, now).await?;
    let principal = format!("user:{name}");
    // A new password or a disabled account ends every login session.
    if changed_password || disabled == Some(true) {
        auth.access
            .revoke_sessions_of(&principal, "user changed", now)
            .await?;
    }
    let mut what = Vec::new();
    if changed_password {
        what.push("password".to_owned());
    }
    if let Some(r) = &roles {
        what.push(format!("roles {r:?}"));
    }
    if let Some(d) = disabled {
        what.push(format!("disabled {d}"));
    }
    if unlock {
        what.push("unlocked".to_owned());
    }
    caller
        .audit(AuditNote {
            action: "user.update",
            target: &principal,
            outcome: "success",
            detail: &what.join(", "),
        })
        .await;
    Ok(user.into())
}

pub async fn delete_user(auth: &Auth, caller: &Caller, name: &str) -> Result<(), ApiError> {
    caller
        .require(perm(Resource::Users, Action::Delete), None)
        .await?;
    auth.access.delete_user(name, now()).await?;
    caller
        .audit(AuditNote {
            action: "user.delete",
            target: &format!("user:{name}"),
            outcome: "success",
            detail: "sessions and keys revoked, grants removed",
        })
        .await;
    Ok(())
}

// ---------------------------------------------------------------- keys

/// What a new key is made from (routes and CLI).
#[derive(Debug, Default)]
pub struct NewKey {
    pub name: String,
    pub roles: Vec<String>,
    pub scopes: Vec<String>,
    pub expires_at: Option<Timestamp>,
    /// Issue it to this user (acts as `user:<name>`); otherwise it is a
    /// principal of its own, `key:<id>`.
    pub user: Option<String>,
}

/// `POST /api/v1/keys {"name", "roles", "scopes", "expires_at" | "expires_in", "user"}`.
pub async fn create_key_from(
    auth: &Auth,
    caller: &Caller,
    body: Fields,
) -> Result<KeyView, ApiError> {
    caller
        .require(perm(Resource::Keys, Action::Create), None)
        .await?;
    let mut r = Reader::new(&body);
    let name = r.string("name", true);
    let roles = r.strings("roles").unwrap_or_default();
    let scopes = r.strings("scopes").unwrap_or_default();
    let expires_at = r.timestamp("expires_at");
    let expires_in = r.positive_int("expires_in");
    let user = r.string("user", false);
    if expires_at.is_some() && expires_in.is_some() {
        r.errors
            .push("expires_in: give expires_at or expires_in, not both".into());
    }
    r.finish()?;
    let expires_at = expires_at.or_else(|| expires_in.map(|s| plus_secs(now(), s)));
    create_key(
        auth,
        caller,
        NewKey {
            name: name.unwrap_or_default(),
            roles,
            scopes,
            expires_at,
            user,
        },
    )
    .await
}

pub async fn create_key(auth: &Auth, caller: &Caller, new: NewKey) -> Result<KeyView, ApiError> {
    caller
        .require(perm(Resource::Keys, Action::Create), None)
        .await?;
    let mut errors = Vec::new();
    if new.name.trim().is_empty() || new.name.chars().count() > 200 {
        errors.push("name: must be 1 to 200 characters".to_owned());
    }
    parse_patterns("scopes", &new.scopes, &mut errors);
    let now = now();
    if let Some(t) = new.expires_at
        && t <= now
    {
        errors.push("expires_at: must be in the future".to_owned());
    }
    check_roles(auth, caller, "roles", &new.roles, &mut errors).await?;
    if let Some(user) = &new.user
        && auth.access.user(user).await?.is_none()
    {
        errors.push(format!("user: no user named {user:?}"));
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let generated = apikey::generate();
    let principal = match &new.user {
        Some(u) => format!("user:{u}"),
        None => format!("key:{}", generated.id),
    };
    let record = ApiKeyRecord {
        id: generated.id.clone(),
        name: new.name,
        secret_hash: generated.secret_hash,
        principal,
        roles: new.roles,
        scopes: new.scopes,
        expires_at: new.expires_at,
        revoked_at: None,
        last_used_at: None,
        created_at: now,
        created_by: caller.id().to_owned(),
    };
    auth.access.create_api_key(record.clone()).await?;
    caller
        .audit(AuditNote {
            action: "key.create",
            target: &format!("key:{}", record.id),
            outcome: "success",
            detail: &format!("as {} with roles {:?}", record.principal, record.roles),
        })
        .await;
    let mut view = KeyView::from(record);
    view.key = Some(generated.token);
    Ok(view)
}

pub async fn list_keys(
    auth: &Auth,
    caller: &Caller,
    principal: Option<&str>,
    limit: u32,
    after: Option<String>,
) -> Result<Vec<KeyView>, ApiError> {
    caller
        .require(perm(Resource::Keys, Action::Read), None)
        .await?;
    let keys = auth
        .access
        .list_api_keys(principal, page(limit, after))
        .await?;
    Ok(keys.into_iter().map(KeyView::from).collect())
}

pub async fn get_key(auth: &Auth, caller: &Caller, id: &str) -> Result<KeyView, ApiError> {
    caller
        .require(perm(Resource::Keys, Action::Read), None)
        .await?;
    auth.access
        .api_key(id)
        .await?
        .map(KeyView::from)
        .ok_or_else(|| ApiError::NotFound(format!("no API key with id {id:?}")))
}

pub async fn revoke_key(auth: &Auth, caller: &Caller, id: &str) -> Result<KeyView, ApiError> {
    caller
        .require(perm(Resource::Keys, Action::Delete), None)
        .await?;
    let key = auth.access.revoke_api_key(id, now()).await?;
    caller
        .audit(AuditNote {
            action: "key.revoke",
            target: &format!("key:{id}"),
            outcome: "success",
            detail: "",
        })
        .await;
    Ok(key.into())
}

// ---------------------------------------------------------------- roles

pub async fn list_roles(
    auth: &Auth,
    caller: &Caller,
    limit: u32,
    after: Option<String>,
) -> Result<Vec<RoleView>, ApiError> {
    caller
        .require(perm(Resource::Roles, Action::Read), None)
        .await?;
    let mut out = Vec::new();
    if after.is_none() {
        for name in BUILTIN_ROLES {
            if let Some(role) = Role::builtin(name) {
                out.push(RoleView::of_role(
                    &role,
                    true,
                    format!("built-in role {name}"),
                ));
            }
        }
    }
    for record in auth.access.list_roles(page(limit, after)).await? {
        let role = role_of(&record).map_err(ApiError::Internal)?;
        out.push(RoleView::of_role(&role, false, record.description));
    }
    Ok(out)
}

pub async fn get_role(auth: &Auth, caller: &Caller, name: &str) -> Result<RoleView, ApiError> {
    caller
        .require(perm(Resource::Roles, Action::Read), None)
        .await?;
    if let Some(role) = Role::builtin(name) {
        return Ok(RoleView::of_role(
            &role,
            true,
            format!("built-in role {name}"),
        ));
    }
    let record = auth
        .access
        .role(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no role named {name:?}")))?;
    let role = role_of(&record).map_err(ApiError::Internal)?;
    Ok(RoleView::of_role(&role, false, record.description))
}

/// What a new custom role is made from (routes and CLI).
#[derive(Debug, Default)]
pub struct NewRole {
    pub name: String,
    pub permissions: Vec<String>,
    pub on_grant: Vec<String>,
    pub description: String,
}

/// `POST /api/v1/roles {"name", "permissions", "on_grant", "description"}`.
pub async fn create_role_from(
    auth: &Auth,
    caller: &Caller,
    body: Fields,
) -> Result<RoleView, ApiError> {
    caller
        .require(perm(Resource::Roles, Action::Create), None)
        .await?;
    let mut r = Reader::new(&body);
    let name = r.string("name", true);
    let permissions = r.strings("permissions").unwrap_or_default();
    let on_grant = r.strings("on_grant").unwrap_or_default();
    let description = r.string("description", false).unwrap_or_default();
    r.finish()?;
    create_role(
        auth,
        caller,
        NewRole {
            name: name.unwrap_or_default(),
            permissions,
            on_grant,
            description,
        },
    )
    .await
}

pub async fn create_role(auth: &Auth, caller: &Caller, new: NewRole) -> Result<RoleView, ApiError> {
    caller
        .require(perm(Resource::Roles, Action::Create), None)
        .await?;
    let mut errors = Vec::new();
    match RoleName::parse(&new.name) {
        Ok(n) if n.is_builtin() => errors.push(format!(
            "name: {:?} is a built-in role and cannot be redefined",
            new.name
        )),
        Ok(_) => {}
        Err(e) => errors.push(format!("name: {e}")),
    }
    let permissions = parse_patterns("permissions", &new.permissions, &mut errors);
    let on_grant = parse_patterns("on_grant", &new.on_grant, &mut errors);
    if permissions.is_empty() && on_grant.is_empty() && errors.is_empty() {
        errors.push("permissions: a role needs at least one permission or on_grant entry".into());
    }
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    // Defining a role gives nothing by itself, but only someone holding
    // all of it may define it (it could be given on later).
    if let Some(p) = permissions
        .iter()
        .chain(on_grant.iter())
        .flat_map(expand)
        .find(|p| !caller.principal.may(p.resource, p.action))
    {
        return Err(ApiError::Forbidden(format!(
            "forbidden: {} may not define a role with {p}: it does not hold it itself",
            caller.id()
        )));
    }
    let record = RoleRecord {
        name: new.name.clone(),
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        on_grant: on_grant.iter().map(|p| p.to_string()).collect(),
        description: new.description,
        created_at: now(),
    };
    auth.access.create_role(record.clone()).await?;
    caller
        .audit(AuditNote {
            action: "role.create",
            target: &format!("role:{}", record.name),
            outcome: "success",
            detail: &format!(
                "permissions {:?}, on_grant {:?}",
                record.permissions, record.on_grant
            ),
        })
        .await;
    let role = role_of(&record).map_err(ApiError::Internal)?;
    Ok(RoleView::of_role(&role, false, record.description))
}

pub async fn delete_role(auth: &Auth, caller: &Caller, name: &str) -> Result<(), ApiError> {
    caller
        .require(perm(Resource::Roles, Action::Delete), None)
        .await?;
    if Role::builtin(name).is_some() {
        return Err(ApiError::field(
            "name",
            format!("{name:?} is a built-in role and cannot be deleted"),
        ));
    }
    auth.access.delete_role(name).await?;
    caller
        .audit(AuditNote {
            action: "role.delete",
            target: &format!("role:{name}"),
            outcome: "success",
            detail: "",
        })
        .await;
    Ok(())
}

// ---------------------------------------------------------------- grants

/// What a new grant is made from (routes and CLI).
#[derive(Debug, Default)]
pub struct NewGrant {
    pub principal: String,
    pub receiver_id: Option<String>,
    pub group_id: Option<String>,
    pub permissions: Vec<String>,
}

fn valid_principal(p: &str) -> bool {
    let ok_rest =
        |rest: &str| !rest.is_empty() && rest.len() <= 256 && !rest.chars().any(char::is_control);
    ["user:", "key:", "oidc:"]
        .iter()
        .any(|prefix| p.strip_prefix(prefix).is_some_and(ok_rest))
}

/// `POST /api/v1/grants {"principal", "receiver_id" | "group_id", "permissions"}`.
pub async fn create_grant_from(
    auth: &Auth,
    store: &dyn Store,
    caller: &Caller,
    body: Fields,
) -> Result<GrantView, ApiError> {
    caller
        .require(perm(Resource::Grants, Action::Create), None)
        .await?;
    let mut r = Reader::new(&body);
    let principal = r.string("principal", true);
    let receiver_id = r.string("receiver_id", false);
    let group_id = r.string("group_id", false);
    let permissions = r.strings("permissions");
    if permissions.is_none() {
        r.errors.push("permissions: is required".into());
    }
    r.finish()?;
    create_grant(
        auth,
        store,
        caller,
        NewGrant {
            principal: principal.unwrap_or_default(),
            receiver_id,
            group_id,
            permissions: permissions.unwrap_or_default(),
        },
    )
    .await
}

pub async fn create_grant(
    auth: &Auth,
    store: &dyn Store,
    caller: &Caller,
    new: NewGrant,
) -> Result<GrantView, ApiError> {
    caller
        .require(perm(Resource::Grants, Action::Create), None)
        .await?;
    let mut errors = Vec::new();
    if !valid_principal(&new.principal) {
        errors.push(format!(
            "principal: must be user:<name>, key:<id> or oidc:<subject>, got {:?}",
            new.principal
        ));
    }
    if let Some(user) = new.principal.strip_prefix("user:")
        && valid_principal(&new.principal)
        && auth.access.user(user).await?.is_none()
    {
        errors.push(format!("principal: no user named {user:?}"));
    }
    let permissions = parse_patterns("permissions", &new.permissions, &mut errors);
    if new.permissions.is_empty() {
        errors.push("permissions: must name at least one permission".into());
    }
    let object = match (&new.receiver_id, &new.group_id) {
        (Some(r), None) => match ReceiverId::parse(r) {
            Some(id) if store.receiver(id).await?.is_some() => Some(ObjectRef::Receiver(id)),
            _ => {
                errors.push(format!("receiver_id: no receiver with id {r:?}"));
                None
            }
        },
        (None, Some(g)) => match GroupId::parse(g) {
            Some(id) if store.group(id).await?.is_some() => Some(ObjectRef::Group(id)),
            _ => {
                errors.push(format!("group_id: no group with id {g:?}"));
                None
            }
        },
        (Some(_), Some(_)) => {
            errors.push("receiver_id: give receiver_id or group_id, not both".into());
            None
        }
        (None, None) => {
            errors.push("receiver_id: give receiver_id or group_id".into());
            None
        }
    };
    if !errors.is_empty() {
        return Err(ApiError::Invalid(errors));
    }
    let Some(object) = object else {
        return Err(ApiError::Internal(
            "grant object checked but missing".into(),
        ));
    };
    // Only what the caller may do on that object can be granted on it.
    for p in permissions.iter().flat_map(expand) {
        let target = Target {
            object,
            owner: None,
        };
        let allowed = caller
            .principal
            .decide(&cairn_domain::access::Request {
                permission: p,
                target: Some(target),
            })
            .is_allowed();
        if !allowed {
            return Err(ApiError::Forbidden(format!(
                "forbidden: {} may not grant {p}: it does not hold it on that object",
                caller.id()
            )));
        }
    }
    let (object_kind, object_id) = match object {
        ObjectRef::Receiver(id) => ("receiver", id.to_string()),
        ObjectRef::Group(id) => ("group", id.to_string()),
    };
    let record = GrantRecord {
        id: ulid::Ulid::new().to_string(),
        principal: new.principal,
        object_kind: object_kind.to_owned(),
        object_id,
        permissions: permissions.iter().map(|p| p.to_string()).collect(),
        created_at: now(),
        created_by: caller.id().to_owned(),
    };
    auth.access.create_grant(record.clone()).await?;
    caller
        .audit(AuditNote {
            action: "grant.create",
            target: &format!("{}:{}", record.object_kind, record.object_id),
            outcome: "success",
            detail: &format!("{:?} to {}", record.permissions, record.principal),
        })
        .await;
    Ok(record.into())
}

pub async fn list_grants(
    auth: &Auth,
    caller: &Caller,
    filter: GrantFilter,
    limit: u32,
    after: Option<String>,
) -> Result<Vec<GrantView>, ApiError> {
    caller
        .require(perm(Resource::Grants, Action::Read), None)
        .await?;
    let grants = auth.access.list_grants(filter, page(limit, after)).await?;
    Ok(grants.into_iter().map(GrantView::from).collect())
}

pub async fn delete_grant(auth: &Auth, caller: &Caller, id: &str) -> Result<GrantView, ApiError> {
    caller
        .require(perm(Resource::Grants, Action::Delete), None)
        .await?;
    let grant = auth.access.delete_grant(id).await?;
    caller
        .audit(AuditNote {
            action: "grant.delete",
            target: &format!("{}:{}", grant.object_kind, grant.object_id),
            outcome: "success",
            detail: &format!("{:?} from {}", grant.permissions, grant.principal),
        })
        .await;
    Ok(grant.into())
}

// ---------------------------------------------------------------- audit, signing keys

pub async fn list_audit(
    auth: &Auth,
    caller: &Caller,
    filter: AuditFilter,
) -> Result<Vec<AuditView>, ApiError> {
    caller
        .require(perm(Resource::Audit, Action::Read), None)
        .await?;
    let entries = auth.access.list_audit(filter).await?;
    Ok(entries.into_iter().map(AuditView::from).collect())
}

/// Retire the signing key and make a new one; tokens signed with the old
/// key stay valid for the grace period (`auth_signing_key_grace_secs`).
pub async fn rotate_signing_key(auth: &Auth, caller: &Caller) -> Result<String, ApiError> {
    caller
        .require(perm(Resource::Keys, Action::Update), None)
        .await?;
    let algorithm = auth.config.algorithm;
    let now = now();
    let key = tokio::task::spawn_blocking(move || cairn_auth::jwt::generate_key(algorithm, now))
        .await
        .map_err(|e| ApiError::Internal(format!("generating a signing key: {e}")))?
        .map_err(|e| ApiError::Internal(format!("generating a signing key: {e}")))?;
    let kid = key.kid.clone();
    auth.access.rotate_signing_key(key, now).await?;
    auth.reload_keys(true).await?;
    caller
        .audit(AuditNote {
            action: "signing_key.rotate",
            target: &format!("kid:{kid}"),
            outcome: "success",
            detail: algorithm.as_str(),
        })
        .await;
    Ok(kid)
}

/// On first start with authentication on and nobody to log in as: make an
/// admin API key, hand it to `keep` (which writes it to a file before
/// anything is stored, so the key is never stored without being kept),
/// then store its hash unless principals exist by now (another node may
/// have been first). `Ok(true)` when this call made the key.
pub async fn bootstrap_admin_key(
    auth: &Auth,
    keep: impl FnOnce(&str) -> Result<(), String>,
) -> Result<bool, ApiError> {
    let generated = apikey::generate();
    let now = now();
    let record = ApiKeyRecord {
        id: generated.id.clone(),
        name: "bootstrap admin key".to_owned(),
        secret_hash: generated.secret_hash,
        principal: format!("key:{}", generated.id),
        roles: vec!["admin".to_owned()],
        scopes: Vec::new(),
        expires_at: None,
        revoked_at: None,
        last_used_at: None,
        created_at: now,
        created_by: "bootstrap".to_owned(),
    };
    keep(&generated.token).map_err(ApiError::Internal)?;
    if !auth.access.bootstrap_api_key(record).await? {
        return Ok(false);
    }
    let mut principal = cairn_domain::access::Principal::anonymous();
    principal.id = "bootstrap".to_owned();
    Caller::new(
        Arc::new(principal),
        String::new(),
        "local".to_owned(),
        Some(auth.access.clone()),
    )
    .audit(AuditNote {
        action: "key.create",
        target: &format!("key:{}", generated.id),
        outcome: "success",
        detail: "first start: admin key written to the data directory",
    })
    .await;
    Ok(true)
}

/// Paging and filters for `GET /api/v1/grants`.
pub fn grant_filter(
    principal: Option<String>,
    receiver_id: Option<String>,
    group_id: Option<String>,
) -> GrantFilter {
    let (object_kind, object_id) = match (receiver_id, group_id) {
        (Some(r), _) => (Some("receiver".to_owned()), Some(r)),
        (None, Some(g)) => (Some("group".to_owned()), Some(g)),
        (None, None) => (None, None),
    };
    GrantFilter {
        principal,
        object_kind,
        object_id,
    }
}
