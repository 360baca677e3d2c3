//! Who is calling: every `/api/v1` request (REST and GraphQL) is
//! authenticated here, before any handler runs, into a [`Caller`]; the
//! handlers and the [`crate::service`] operations then ask
//! [`Caller::require`], which asks `cairn_domain::access` (the one policy
//! function) and writes refusals to the audit log.
//!
//! Credentials, all sent as `Authorization: Bearer <token>`:
//! - API keys (`cairn_<id>_<secret>`), looked up by id, secret compared
//!   against its stored hash; revoked or expired keys are refused;
//! - access tokens (JWT) this server issued at login, verified against the
//!   stored signing keys, whose login session must still be live;
//! - bearer JWTs of the configured OIDC issuer, verified against its JWKS.
//!
//! Every lookup reads the store, so a revocation on one node holds on every
//! node at its next request.

pub mod accounts;
mod authenticate;
pub mod fields;

pub use authenticate::{authenticate_header, layer};

use crate::error::ApiError;
use cairn_auth::jwt::{Algorithm, KeyRing};
use cairn_auth::oidc::{OidcConfig, OidcVerifier};
use cairn_domain::Timestamp;
use cairn_domain::access::{Permission, Principal, PrincipalKind, Request, Target};
use cairn_store::access::{AccessStore, NewAuditEntry};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// Authentication settings (`auth_*` settings of the binary).
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// `false`: `--auth off`; every caller may do everything.
    pub enabled: bool,
    /// `iss` and `aud` of the access tokens this server issues.
    pub issuer: String,
    pub audience: String,
    /// Algorithm of newly generated signing keys.
    pub algorithm: Algorithm,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    /// A login session ends after this, refreshed or not.
    pub session_ttl: Duration,
    /// How long a retired signing key still verifies.
    pub signing_key_grace: Duration,
    /// Failed logins before an account is locked.
    pub login_max_failures: u32,
    pub login_lockout: Duration,
    /// Login attempts per client address per minute.
    pub login_attempts_per_minute: u32,
    /// Require `metrics:read` on `/metrics`.
    pub protect_metrics: bool,
    pub oidc: Option<OidcConfig>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            issuer: "cairn".to_owned(),
            audience: "cairn".to_owned(),
            algorithm: Algorithm::EdDSA,
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(14 * 24 * 3600),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            signing_key_grace: Duration::from_secs(24 * 3600),
            login_max_failures: 5,
            login_lockout: Duration::from_secs(15 * 60),
            login_attempts_per_minute: 30,
            protect_metrics: false,
            oidc: None,
        }
    }
}

/// Authentication state shared by every request of this node.
pub struct Auth {
    pub config: AuthConfig,
    pub access: Arc<dyn AccessStore>,
    keys: RwLock<Arc<KeyRing>>,
    /// When the key ring was last read from the store (unknown-kid reloads
    /// are throttled to one per second).
    keys_loaded: Mutex<Instant>,
    oidc: Option<OidcVerifier>,
    /// API key id -> when its `last_used_at` was last written.
    touched: Mutex<HashMap<String, Instant>>,
    /// Client address -> (minute window start, attempts).
    login_attempts: Mutex<HashMap<String, (Instant, u32)>>,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("enabled", &self.config.enabled)
            .finish_non_exhaustive()
    }
}

/// The current time as a [`Timestamp`].
pub fn now() -> Timestamp {
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_micros(micros)
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Auth {
    /// Make sure a signing key exists (generating one of the configured
    /// algorithm, once across all nodes) and load the key ring.
    pub async fn start(config: AuthConfig, access: Arc<dyn AccessStore>) -> Result<Self, String> {
        let algorithm = config.algorithm;
        let generated =
            tokio::task::spawn_blocking(move || cairn_auth::jwt::generate_key(algorithm, now()))
                .await
                .map_err(|e| format!("generating a signing key: {e}"))?
                .map_err(|e| format!("generating a signing key: {e}"))?;
        let active = access
            .ensure_signing_key(generated)
            .await
            .map_err(|e| format!("storing the first signing key: {e}"))?;
        // A changed `auth_jwt_algorithm` takes effect at the next start:
        // the current key is retired (it verifies through the grace
        // period) and a key of the configured algorithm signs from now on.
        if active.algorithm != algorithm.as_str() {
            let key = tokio::task::spawn_blocking(move || {
                cairn_auth::jwt::generate_key(algorithm, now())
            })
            .await
            .map_err(|e| format!("generating a signing key: {e}"))?
            .map_err(|e| format!("generating a signing key: {e}"))?;
            tracing::info!(
                from = %active.algorithm,
                to = algorithm.as_str(),
                kid = %key.kid,
                "auth_jwt_algorithm changed: rotating the signing key"
            );
            access
                .rotate_signing_key(key, now())
                .await
                .map_err(|e| format!("rotating the signing key: {e}"))?;
        }
        let ring = load_ring(access.as_ref(), &config).await?;
        let oidc = config.oidc.clone().map(OidcVerifier::new);
        Ok(Self {
            config,
            access,
            keys: RwLock::new(Arc::new(ring)),
            keys_loaded: Mutex::new(Instant::now()),
            oidc,
            touched: Mutex::new(HashMap::new()),
            login_attempts: Mutex::new(HashMap::new()),
        })
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// The signing keys in force on this node.
    pub fn ring(&self) -> Arc<KeyRing> {
        match self.keys.read() {
            Ok(k) => k.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Read the signing keys again (after a rotation here, or when a token
    /// names a kid this node has not seen: another node rotated).
    pub(crate) async fn reload_keys(&self, force: bool) -> Result<Arc<KeyRing>, ApiError> {
        if !force {
            let mut last = self
                .keys_loaded
                .lock()
                .map_err(|_| ApiError::Internal("key ring lock poisoned".into()))?;
            if last.elapsed() < Duration::from_secs(1) {
                return Ok(self.ring());
            }
            *last = Instant::now();
        }
        let ring = Arc::new(
            load_ring(self.access.as_ref(), &self.config)
                .await
                .map_err(ApiError::Internal)?,
        );
        if let Ok(mut k) = self.keys.write() {
            *k = ring.clone();
        }
        Ok(ring)
    }

    pub(crate) fn oidc(&self) -> Option<&OidcVerifier> {
        self.oidc.as_ref()
    }

    /// Whether `last_used_at` of this key is due to be written (at most
    /// once a minute per key and node).
    pub(crate) fn touch_due(&self, key_id: &str) -> bool {
        let Ok(mut map) = self.touched.lock() else {
            return false;
        };
        let due = map
            .get(key_id)
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if due {
            if map.len() > 100_000 {
                map.clear();
            }
            map.insert(key_id.to_owned(), Instant::now());
        }
        due
    }

    /// Count a login attempt from `client`; `Err(seconds to wait)` once
    /// the per-minute budget is spent.
    pub(crate) fn login_attempt(&self, client: &str) -> Result<(), u64> {
        let Ok(mut map) = self.login_attempts.lock() else {
            return Ok(());
        };
        let window = Duration::from_secs(60);
        if map.len() > 100_000 {
            map.retain(|_, (start, _)| start.elapsed() < window);
        }
        let entry = map.entry(client.to_owned()).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= window {
            *entry = (Instant::now(), 0);
        }
        if entry.1 >= self.config.login_attempts_per_minute {
            let wait = window.saturating_sub(entry.0.elapsed()).as_secs().max(1);
            return Err(wait);
        }
        entry.1 += 1;
        Ok(())
    }
}

async fn load_ring(access: &dyn AccessStore, config: &AuthConfig) -> Result<KeyRing, String> {
    let records = access
        .signing_keys()
        .await
        .map_err(|e| format!("reading the signing keys: {e}"))?;
    KeyRing::new(&records, now(), secs(config.signing_key_grace))
        .map_err(|e| format!("loading the signing keys: {e}"))
}

/// The authenticated caller of one request, with what the audit log
/// records about it.
#[derive(Clone)]
pub struct Caller {
    pub principal: Arc<Principal>,
    pub request_id: String,
    pub client_addr: String,
    /// The request's `traceparent`, for the messages its writes cause.
    pub trace: Option<cairn_domain::TraceParent>,
    audit: Option<Arc<dyn AccessStore>>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("principal", &self.principal.id)
            .field("request_id", &self.request_id)
            .finish_non_exhaustive()
    }
}

/// What one audit entry says (the caller fills in actor, time, request
/// id and client address).
pub struct AuditNote<'a> {
    pub action: &'a str,
    pub target: &'a str,
    pub outcome: &'a str,
    pub detail: &'a str,
}

impl Caller {
    pub fn new(
        principal: Arc<Principal>,
        request_id: String,
        client_addr: String,
        audit: Option<Arc<dyn AccessStore>>,
    ) -> Self {
        Self {
            principal,
            request_id,
            client_addr,
            trace: None,
            audit,
        }
    }

    /// The same caller, acting in the trace context `trace`.
    pub fn with_trace(mut self, trace: Option<cairn_domain::TraceParent>) -> Self {
        self.trace = trace;
        self
    }

    /// A caller that may do everything and audits nothing to a request:
    /// authentication off, or code that is not serving a request.
    pub fn anonymous() -> Self {
        Self::new(
            Arc::new(Principal::anonymous()),
            String::new(),
            String::new(),
            None,
        )
    }

    /// The command line acting on the store directly, as an admin,
    /// audited as actor `cli`.
    pub fn cli(access: Arc<dyn AccessStore>) -> Self {
        let mut principal = Principal::anonymous();
        principal.id = "cli".to_owned();
        Self::new(
            Arc::new(principal),
            String::new(),
            "local".to_owned(),
            Some(access),
        )
    }

    pub fn id(&self) -> &str {
        &self.principal.id
    }

    /// The owner to record on what this caller creates (none when
    /// authentication is off).
    pub fn owner(&self) -> Option<String> {
        match self.principal.kind {
            PrincipalKind::Anonymous => None,
            _ => Some(self.principal.id.clone()),
        }
    }

    /// Allowed, or 403 (and an audit entry `permission.denied`).
    pub async fn require(
        &self,
        permission: Permission,
        target: Option<Target<'_>>,
    ) -> Result<(), ApiError> {
        let decision = self.principal.decide(&Request { permission, target });
        if decision.is_allowed() {
            return Ok(());
        }
        let target_text = match target.map(|t| t.object) {
            Some(cairn_domain::access::ObjectRef::Receiver(id)) => format!("receiver:{id}"),
            Some(cairn_domain::access::ObjectRef::Group(id)) => format!("group:{id}"),
            None => String::new(),
        };
        let detail = format!("needs {permission}");
        self.audit(AuditNote {
            action: "permission.denied",
            target: &target_text,
            outcome: "denied",
            detail: &detail,
        })
        .await;
        let on = if target_text.is_empty() {
            String::new()
        } else {
            format!(" on {target_text}")
        };
        crate::metrics::auth_failure("forbidden");
        Err(ApiError::Forbidden(format!(
            "forbidden: {} may not {permission}{on}",
            self.principal.id
        )))
    }

    /// Like [`Caller::require`] without a target, for a permission the
    /// caller might hold only on some objects: refuses early only when no
    /// role of the caller lists it at all (globally or on grant).
    pub async fn require_somewhere(&self, permission: Permission) -> Result<(), ApiError> {
        let p = &self.principal;
        let scoped = p.scopes.is_empty() || p.scopes.iter().any(|s| s.matches(permission));
        let listed = p.roles.iter().any(|r| {
            r.permissions.iter().any(|x| x.matches(permission))
                || r.on_grant.iter().any(|x| x.matches(permission))
        });
        if scoped && listed {
            Ok(())
        } else {
            self.require(permission, None).await
        }
    }

    /// Append to the audit log; a failure to do so is logged, never
    /// hidden, but does not change the answer already decided.
    pub async fn audit(&self, note: AuditNote<'_>) {
        let Some(access) = &self.audit else {
            return;
        };
        let entry = NewAuditEntry {
            at: now(),
            actor: self.principal.id.clone(),
            action: note.action.to_owned(),
            target: note.target.to_owned(),
            outcome: note.outcome.to_owned(),
            detail: note.detail.to_owned(),
            request_id: self.request_id.clone(),
            client_addr: self.client_addr.clone(),
        };
        if let Err(e) = access.append_audit(entry).await {
            tracing::error!(error = %e, action = note.action, "writing the audit log failed");
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        parts.extensions.get::<Caller>().cloned().ok_or_else(|| {
            ApiError::Unauthorized(
                "authentication required: send Authorization: Bearer <token>".into(),
            )
        })
    }
}

/// The context of a request that brings no credentials (login, refresh):
/// its request id and client address, for the audit log.
pub struct Anonymous(pub Caller);

impl axum::extract::FromRequestParts<crate::AppState> for Anonymous {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &crate::AppState,
    ) -> Result<Self, ApiError> {
        let mut principal = Principal::anonymous();
        principal.id = "unauthenticated".to_owned();
        let request_id = parts
            .extensions
            .get::<crate::metrics::RequestId>()
            .map(|r| r.0.clone())
            .unwrap_or_default();
        let client =
            crate::edge::client::of_parts(&state.config.edge, &parts.extensions, &parts.headers)
                .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
        Ok(Self(Caller::new(
            Arc::new(principal),
            request_id,
            client,
            Some(state.auth.access.clone()),
        )))
    }
}

pub(crate) fn lockout_micros(config: &AuthConfig) -> i64 {
    micros(config.login_lockout)
}

pub(crate) fn ttl_secs(d: Duration) -> i64 {
    secs(d)
}
