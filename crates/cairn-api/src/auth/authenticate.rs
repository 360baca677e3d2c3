//! From an `Authorization` header to a [`Principal`], and the middleware
//! that does it for every request.

use super::{AuditNote, Auth, Caller, now};
use crate::AppState;
use crate::edge::pipeline::Next;
use crate::error::ApiError;
use crate::metrics::RequestId;
use axum::extract::Request;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use cairn_auth::apikey;
use cairn_domain::access::{
    Grant, ObjectRef, PermissionPattern, Principal, PrincipalKind, Role, RoleName,
};
use cairn_domain::{GroupId, ReceiverId};
use std::sync::Arc;

const GRAPHQL_QUERY: &str = "/api/v1/graphql/query";

/// Requests that need no credentials under `/api/v1`.
fn is_public(method: &Method, path: &str) -> bool {
    match (method, path) {
        (&Method::POST, "/api/v1/auth/login" | "/api/v1/auth/refresh") => true,
        (&Method::GET, "/api/v1/auth/jwks") => true,
        // The IDE page and its assets hold no data; every operation it
        // sends is authenticated.
        (&Method::GET, "/api/v1/graphql") => true,
        (&Method::GET, p) => p.starts_with("/api/v1/graphql/assets/"),
        _ => false,
    }
}

/// A WebSocket upgrade for subscriptions: it may authenticate in its
/// `connection_init` payload instead (browsers cannot set headers on
/// WebSockets).
fn is_subscription_upgrade(req: &Request) -> bool {
    req.method() == Method::GET
        && req.uri().path() == GRAPHQL_QUERY
        && req.headers().contains_key(header::UPGRADE)
}

/// The client's IP address (`edge::client`), when the router is served
/// with connect info.
fn client_addr(state: &AppState, req: &Request) -> String {
    crate::edge::client::ip(&state.config.edge, req)
        .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string())
}

/// Authenticate every `/api/v1` request (and `/metrics` when protected)
/// and hand the handlers a [`Caller`].
pub async fn layer(state: &AppState, mut req: Request, next: impl Next) -> Response {
    let path = req.uri().path();
    let metrics = path == "/metrics";
    // GraphQL clients get refusals as GraphQL errors.
    let reject: fn(ApiError) -> Response = if path == GRAPHQL_QUERY {
        crate::graphql::api_error_response
    } else {
        IntoResponse::into_response
    };
    if !(path.starts_with("/api/v1/") || path == "/api/v1" || metrics) {
        return next.run(req).await;
    }
    let auth = state.auth.clone();
    let (request_id, trace) = req
        .extensions()
        .get::<RequestId>()
        .map(|r| (r.0.clone(), r.1))
        .unwrap_or_default();
    let client = client_addr(state, &req);
    if !auth.enabled() {
        if metrics {
            return next.run(req).await;
        }
        let caller = Caller::new(
            Arc::new(Principal::anonymous()),
            request_id,
            client,
            Some(auth.access.clone()),
        )
        .with_trace(trace);
        req.extensions_mut().insert(caller);
        return next.run(req).await;
    }
    if metrics && !auth.config.protect_metrics {
        return next.run(req).await;
    }
    let header = req
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.to_str().map(str::to_owned));
    let public = is_public(req.method(), path);
    let header = match header {
        None if public || is_subscription_upgrade(&req) => return next.run(req).await,
        None => {
            crate::metrics::auth_failure("missing_credentials");
            return reject(ApiError::Unauthorized(
                "authentication required: send Authorization: Bearer <token>".into(),
            ));
        }
        Some(Err(_)) => {
            crate::metrics::auth_failure("malformed_header");
            return reject(ApiError::Unauthorized(
                "the Authorization header is not valid text".into(),
            ));
        }
        Some(Ok(h)) => h,
    };
    match authenticate_header(&auth, &header, &request_id, &client).await {
        Ok(caller) => {
            if metrics
                && let Err(e) = caller
                    .require(
                        cairn_domain::access::Permission::new(
                            cairn_domain::access::Resource::Metrics,
                            cairn_domain::access::Action::Read,
                        ),
                        None,
                    )
                    .await
            {
                return e.into_response();
            }
            req.extensions_mut().insert(caller.with_trace(trace));
            next.run(req).await
        }
        // Login and refresh take their credentials in the body; a stale
        // header must not stop them.
        Err(_) if public => next.run(req).await,
        Err(e) => reject(e),
    }
}

/// `Bearer <token>` to a caller; refusals are audited (`auth.rejected`).
pub async fn authenticate_header(
    auth: &Arc<Auth>,
    header: &str,
    request_id: &str,
    client: &str,
) -> Result<Caller, ApiError> {
    let token = match header.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
        _ => {
            crate::metrics::auth_failure("malformed_header");
            return Err(ApiError::Unauthorized(
                "the Authorization header must be `Bearer <token>`".into(),
            ));
        }
    };
    match principal_of(auth, token).await {
        Ok(principal) => Ok(Caller::new(
            Arc::new(principal),
            request_id.to_owned(),
            client.to_owned(),
            Some(auth.access.clone()),
        )),
        Err(Refusal::Store(e)) => Err(e),
        Err(Refusal::Credentials { reason, who }) => {
            let rejected = Caller::new(
                Arc::new(Principal {
                    id: who.unwrap_or_else(|| "unauthenticated".to_owned()),
                    ..Principal::anonymous()
                }),
                request_id.to_owned(),
                client.to_owned(),
                Some(auth.access.clone()),
            );
            rejected
                .audit(AuditNote {
                    action: "auth.rejected",
                    target: "",
                    outcome: "failure",
                    detail: &reason,
                })
                .await;
            crate::metrics::auth_failure("invalid_credentials");
            Err(ApiError::InvalidToken(format!(
                "invalid credentials: {reason}"
            )))
        }
    }
}

enum Refusal {
    /// Credentials that do not hold, and whose they claimed to be.
    Credentials { reason: String, who: Option<String> },
    /// The store failed: not the caller's fault.
    Store(ApiError),
}

fn refuse(reason: impl Into<String>, who: Option<String>) -> Refusal {
    Refusal::Credentials {
        reason: reason.into(),
        who,
    }
}

impl From<cairn_store::StoreError> for Refusal {
    fn from(e: cairn_store::StoreError) -> Self {
        Refusal::Store(e.into())
    }
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Store(e)
    }
}

async fn principal_of(auth: &Arc<Auth>, token: &str) -> Result<Principal, Refusal> {
    if token.starts_with(apikey::PREFIX) {
        return api_key_principal(auth, token).await;
    }
    if let Some(oidc) = auth.oidc()
        && cairn_auth::oidc::OidcVerifier::peek_issuer(token).as_deref() == Some(oidc.issuer())
    {
        let identity = oidc
            .verify(token)
            .await
            .map_err(|e| refuse(e.to_string(), None))?;
        let id = format!("oidc:{}", identity.subject);
        let roles = resolve_roles(auth, &identity.roles).await?;
        let grants = grants_of(auth, &id).await?;
        return Ok(Principal {
            id,
            kind: PrincipalKind::Oidc,
            roles,
            scopes: Vec::new(),
            grants,
            session: None,
            key_id: None,
        });
    }
    access_token_principal(auth, token).await
}

async fn api_key_principal(auth: &Arc<Auth>, token: &str) -> Result<Principal, Refusal> {
    let Some((id, secret)) = apikey::parse(token) else {
        return Err(refuse("the API key is malformed", None));
    };
    let who = Some(format!("key:{id}"));
    // One read: the key, the user it may act as, its principal's grants.
    let Some(credential) = auth.access.api_key_credential(id).await? else {
        return Err(refuse("unknown API key", who));
    };
    let key = credential.record;
    if !apikey::verify_secret(secret, &key.secret_hash) {
        return Err(refuse("the API key's secret does not match", who));
    }
    let now = now();
    if key.revoked_at.is_some() {
        return Err(refuse("the API key has been revoked", who));
    }
    if key.expires_at.is_some_and(|t| t <= now) {
        return Err(refuse("the API key has expired", who));
    }
    if key.principal.starts_with("user:") && credential.user.as_ref().is_none_or(|u| u.disabled) {
        return Err(refuse("the API key's user is disabled or gone", who));
    }
    if auth.touch_due(&key.id) {
        let access = auth.access.clone();
        let id = key.id.clone();
        tokio::spawn(async move {
            if let Err(e) = access.touch_api_key(&id, now).await {
                tracing::warn!(error = %e, key = %id, "recording an API key's last use");
            }
        });
    }
    let roles = resolve_roles(auth, &key.roles).await?;
    let scopes = key
        .scopes
        .iter()
        .map(|s| PermissionPattern::parse(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ApiError::Internal(format!("stored scope of key {}: {e}", key.id)))?;
    let grants = grants_from(credential.grants)?;
    Ok(Principal {
        id: key.principal.clone(),
        kind: PrincipalKind::ApiKey,
        roles,
        scopes,
        grants,
        session: None,
        key_id: Some(key.id),
    })
}

async fn access_token_principal(auth: &Arc<Auth>, token: &str) -> Result<Principal, Refusal> {
    let Some(kid) = cairn_auth::jwt::KeyRing::peek_kid(token) else {
        return Err(refuse(
            "the token is not a JWT with a kid, nor an API key",
            None,
        ));
    };
    let mut ring = auth.ring();
    if !ring.knows(&kid) {
        // Another node may have rotated the signing key.
        ring = auth.reload_keys(false).await?;
    }
    let now_secs = now().micros() / 1_000_000;
    let claims = ring
        .verify(
            token,
            &auth.config.issuer,
            &auth.config.audience,
            now_secs,
            5,
        )
        .map_err(|e| refuse(e.to_string(), None))?;
    let who = Some(claims.sub.clone());
    // One read: the session, its user, the user's grants.
    let Some(credential) = auth.access.session_credential(&claims.sid).await? else {
        return Err(refuse("the token's session does not exist", who));
    };
    let session = credential.record;
    if session.revoked_at.is_some() {
        return Err(refuse(
            "the token's session has ended (logged out or revoked)",
            who,
        ));
    }
    if session.principal != claims.sub {
        return Err(refuse("the token's session belongs to someone else", who));
    }
    if !claims.sub.starts_with("user:") {
        return Err(refuse("the token's subject is not a user", who));
    }
    let user = match credential.user {
        Some(u) if !u.disabled => u,
        _ => return Err(refuse("the token's user is disabled or gone", who)),
    };
    let roles = resolve_roles(auth, &user.roles).await?;
    let grants = grants_from(credential.grants)?;
    Ok(Principal {
        id: claims.sub,
        kind: PrincipalKind::User,
        roles,
        scopes: Vec::new(),
        grants,
        session: Some(session.id),
        key_id: None,
    })
}

/// Role names to roles: built-in ones directly, custom ones from the
/// store (one read); names no longer defined confer nothing.
async fn resolve_roles(auth: &Auth, names: &[String]) -> Result<Vec<Role>, Refusal> {
    let mut roles = Vec::with_capacity(names.len());
    let mut custom = Vec::new();
    for name in names {
        match Role::builtin(name) {
            Some(r) => roles.push(r),
            None => custom.push(name.clone()),
        }
    }
    if !custom.is_empty() {
        for record in auth.access.roles(&custom).await? {
            roles.push(role_of(&record).map_err(ApiError::Internal)?);
        }
    }
    Ok(roles)
}

/// A stored custom role as a domain role.
pub fn role_of(record: &cairn_store::access::RoleRecord) -> Result<Role, String> {
    let parse = |list: &[String]| {
        list.iter()
            .map(|p| PermissionPattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("stored role {}: {e}", record.name))
    };
    Ok(Role {
        name: RoleName::parse(&record.name)
            .map_err(|e| format!("stored role {}: {e}", record.name))?,
        permissions: parse(&record.permissions)?,
        on_grant: parse(&record.on_grant)?,
    })
}

async fn grants_of(auth: &Auth, principal: &str) -> Result<Vec<Grant>, Refusal> {
    grants_from(auth.access.grants_of(principal).await?)
}

/// Stored grants as domain grants.
fn grants_from(records: Vec<cairn_store::access::GrantRecord>) -> Result<Vec<Grant>, Refusal> {
    let mut grants = Vec::with_capacity(records.len());
    for g in records {
        let object = match g.object_kind.as_str() {
            "receiver" => ReceiverId::parse(&g.object_id).map(ObjectRef::Receiver),
            "group" => GroupId::parse(&g.object_id).map(ObjectRef::Group),
            _ => None,
        };
        let Some(object) = object else {
            tracing::warn!(grant = %g.id, "a stored grant names no receiver or group; ignored");
            continue;
        };
        let permissions = g
            .permissions
            .iter()
            .map(|p| PermissionPattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ApiError::Internal(format!("stored grant {}: {e}", g.id)))?;
        grants.push(Grant {
            object,
            permissions,
        });
    }
    Ok(grants)
}
