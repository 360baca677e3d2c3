//! Rate limiting (docs/rate-limits.md): a budget per route class and
//! client address, checked before authentication, and one per route class
//! and principal, checked after it. Budgets live in this process by
//! default ([`bucket::MemoryBuckets`]) or in Redis when
//! `rate_limit_redis_url` is set ([`redis::RedisBuckets`]: all nodes
//! spend one budget). Answers carry `RateLimit-Limit`,
//! `RateLimit-Remaining`, `RateLimit-Reset` and `RateLimit-Policy`
//! (draft-ietf-httpapi-ratelimit-headers-06); a refusal is a 429 with
//! `Retry-After` and the API's error envelope (a GraphQL error on the
//! GraphQL endpoint), counted in `cairn_rate_limit_rejections_total`.

pub mod bucket;
pub mod redis;

use crate::AppState;
use crate::auth::Caller;
use crate::edge::pipeline::Next;
use crate::error::ApiError;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use bucket::{Clock, MemoryBuckets, MonotonicClock, Outcome, Params};
use cairn_domain::access::{Principal, PrincipalKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const GRAPHQL_QUERY: &str = "/api/v1/graphql/query";

/// `rate` requests per `period_secs` seconds, at most `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub rate: u64,
    pub burst: u64,
    #[serde(default = "one")]
    pub period_secs: u64,
}

fn one() -> u64 {
    1
}

impl Limit {
    pub const fn new(rate: u64, burst: u64) -> Self {
        Self {
            rate,
            burst,
            period_secs: 1,
        }
    }

    /// What is wrong with this budget, if anything.
    pub fn problem(&self) -> Option<String> {
        if !(1..=bucket::MAX_RATE).contains(&self.rate) {
            return Some(format!("rate must be from 1 to {}", bucket::MAX_RATE));
        }
        if self.burst == 0 {
            return Some("burst must be at least 1".into());
        }
        if !(1..=86_400).contains(&self.period_secs) {
            return Some("period_secs must be from 1 to 86400".into());
        }
        if self.burst.saturating_mul(self.period_secs) > bucket::MAX_BURST_PERIOD {
            return Some(format!(
                "burst * period_secs must not exceed {}",
                bucket::MAX_BURST_PERIOD
            ));
        }
        None
    }

    fn params(&self) -> Params {
        Params::new(self.rate, self.burst, self.period_secs)
    }

    /// Whether `self` lets more through than `other`: a higher sustained
    /// rate, or the same rate and a larger burst.
    fn more_generous_than(&self, other: &Limit) -> bool {
        let a = u128::from(self.rate) * u128::from(other.period_secs.max(1));
        let b = u128::from(other.rate) * u128::from(self.period_secs.max(1));
        a > b || (a == b && self.burst > other.burst)
    }
}

/// The route classes, each with its own budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `POST /api/v1/auth/login` and `/api/v1/auth/refresh`.
    Auth,
    /// Other `POST`, `PUT`, `PATCH` and `DELETE` under `/api/v1`.
    Write,
    /// Other requests under `/api/v1` (`GET`, `HEAD`, ...).
    Read,
    /// The GraphQL endpoint `/api/v1/graphql/query` (queries, mutations
    /// and subscription upgrades alike).
    Graphql,
}

impl Class {
    /// The class of a request; `None`: never limited (health routes,
    /// `/metrics`, anything outside `/api/v1`).
    pub fn of(method: &Method, path: &str) -> Option<Class> {
        if !(path.starts_with("/api/v1/") || path == "/api/v1") {
            return None;
        }
        if path == GRAPHQL_QUERY {
            return Some(Class::Graphql);
        }
        if method == Method::POST && matches!(path, "/api/v1/auth/login" | "/api/v1/auth/refresh") {
            return Some(Class::Auth);
        }
        if matches!(
            *method,
            Method::POST | Method::PUT | Method::PATCH | Method::DELETE
        ) {
            return Some(Class::Write);
        }
        Some(Class::Read)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Auth => "auth",
            Class::Write => "write",
            Class::Read => "read",
            Class::Graphql => "graphql",
        }
    }

    fn index(self) -> usize {
        match self {
            Class::Auth => 0,
            Class::Write => 1,
            Class::Read => 2,
            Class::Graphql => 3,
        }
    }
}

/// Who a budget belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The client address (IP), before authentication.
    Address,
    /// The authenticated principal.
    Principal,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Address => "address",
            Scope::Principal => "principal",
        }
    }
}

/// One budget per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassLimits {
    pub auth: Limit,
    pub write: Limit,
    pub read: Limit,
    pub graphql: Limit,
}

impl ClassLimits {
    pub fn get(&self, class: Class) -> Limit {
        match class {
            Class::Auth => self.auth,
            Class::Write => self.write,
            Class::Read => self.read,
            Class::Graphql => self.graphql,
        }
    }

    /// Defaults per principal: a safety net against a runaway client,
    /// well above what one benchmark client sends on loopback.
    pub const PRINCIPAL: ClassLimits = ClassLimits {
        auth: Limit::new(10, 100),
        write: Limit::new(50_000, 100_000),
        read: Limit::new(50_000, 100_000),
        graphql: Limit::new(50_000, 100_000),
    };

    /// Defaults per client address (everything behind one NAT shares
    /// them; logins are also throttled per minute by the `auth_login_*`
    /// settings).
    pub const ADDRESS: ClassLimits = ClassLimits {
        auth: Limit::new(10, 100),
        write: Limit::new(50_000, 100_000),
        read: Limit::new(50_000, 100_000),
        graphql: Limit::new(50_000, 100_000),
    };
}

/// A role's own budgets per principal; a class it leaves out keeps the
/// default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleLimits {
    pub auth: Option<Limit>,
    pub write: Option<Limit>,
    pub read: Option<Limit>,
    pub graphql: Option<Limit>,
}

impl RoleLimits {
    pub fn get(&self, class: Class) -> Option<Limit> {
        match class {
            Class::Auth => self.auth,
            Class::Write => self.write,
            Class::Read => self.read,
            Class::Graphql => self.graphql,
        }
    }

    /// Every budget this role sets, with its class name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Limit)> {
        [
            ("auth", self.auth),
            ("write", self.write),
            ("read", self.read),
            ("graphql", self.graphql),
        ]
        .into_iter()
        .filter_map(|(name, l)| l.map(|l| (name, l)))
    }
}

/// What to do when Redis cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Let the request through (unlimited by that budget).
    Open,
    /// Refuse it: 503 with `Retry-After: 1`.
    Closed,
}

impl FailureMode {
    fn as_str(self) -> &'static str {
        match self {
            FailureMode::Open => "open",
            FailureMode::Closed => "closed",
        }
    }
}

/// The `rate_limit_*` settings.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    pub enabled: bool,
    pub principal: ClassLimits,
    pub address: ClassLimits,
    /// Per-principal budgets by role name.
    pub roles: BTreeMap<String, RoleLimits>,
    /// Share the budgets through this Redis (`redis://`, `rediss://`);
    /// `None`: this process only.
    pub redis_url: Option<String>,
    /// PEM file of the CAs a `rediss://` server's certificate must chain
    /// to, instead of the system's roots.
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// The certificate chain and key presented to a `rediss://` server
    /// that asks for one (mutual TLS); both or neither.
    pub redis_client_cert_file: Option<std::path::PathBuf>,
    pub redis_client_key_file: Option<std::path::PathBuf>,
    /// Prefix of every Redis key.
    pub redis_prefix: String,
    /// Longest wait for Redis per check.
    pub redis_timeout: Duration,
    pub redis_failure: FailureMode,
    /// Most keys held in memory per scope (in-memory store).
    pub max_keys: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            principal: ClassLimits::PRINCIPAL,
            address: ClassLimits::ADDRESS,
            roles: BTreeMap::new(),
            redis_url: None,
            redis_ca_file: None,
            redis_client_cert_file: None,
            redis_client_key_file: None,
            redis_prefix: "cairn:rl:".to_owned(),
            redis_timeout: Duration::from_millis(100),
            redis_failure: FailureMode::Open,
            max_keys: 100_000,
        }
    }
}

impl RateLimitConfig {
    /// The budget of `principal` for `class`: for each of its roles the
    /// role's own budget or else the default, and of those the most
    /// generous.
    pub fn principal_limit(&self, principal: &Principal, class: Class) -> Limit {
        let default = self.principal.get(class);
        if self.roles.is_empty() || principal.roles.is_empty() {
            return default;
        }
        principal
            .roles
            .iter()
            .map(|r| {
                self.roles
                    .get(r.name.as_str())
                    .and_then(|l| l.get(class))
                    .unwrap_or(default)
            })
            .reduce(|best, l| if l.more_generous_than(&best) { l } else { best })
            .unwrap_or(default)
    }
}

/// What is wrong with a role name of `rate_limit_roles`, if anything.
pub fn role_name_problem(name: &str) -> Option<String> {
    cairn_domain::access::RoleName::parse(name).err()
}

/// What is wrong with `rate_limit_redis_url` and the files of its TLS
/// (`rate_limit_redis_ca_file`, `rate_limit_redis_client_cert_file`,
/// `rate_limit_redis_client_key_file`), if anything, naming the setting.
pub fn redis_problem(config: &RateLimitConfig) -> Option<String> {
    redis_client(config, config.redis_url.as_deref()?).err()
}

/// The shared buckets' Redis client; errors name the setting.
fn redis_client(config: &RateLimitConfig, url: &str) -> Result<::redis::Client, String> {
    cairn_http::Identity::from_files(
        config.redis_client_cert_file.as_deref(),
        config.redis_client_key_file.as_deref(),
    )
    .and_then(|identity| {
        cairn_delivery::redis::client(url, config.redis_ca_file.as_deref(), identity)
    })
    .map_err(|e| format!("rate_limit_redis_{e}"))
}

enum Backend {
    Memory {
        address: MemoryBuckets,
        principal: MemoryBuckets,
    },
    Redis(Box<redis::RedisBuckets>),
}

/// The limiter of one application (shared by every route).
pub struct RateLimiter {
    config: RateLimitConfig,
    backend: Backend,
    policies: Policies,
    /// When the last "Redis unreachable" warning was logged (seconds on
    /// the limiter's clock, +1 so 0 means never).
    last_warning: AtomicU64,
    clock: MonotonicClock,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("enabled", &self.config.enabled)
            .field("redis", &self.config.redis_url.is_some())
            .finish_non_exhaustive()
    }
}

/// What a check told about one budget, for the response headers.
#[derive(Debug, Clone, Copy)]
pub struct Report {
    pub scope: Scope,
    pub class: Class,
    pub limit: Limit,
    pub outcome: Outcome,
}

/// The address budget's report, handed to [`by_principal`] in the
/// request's extensions: when the principal's budget is checked too, that
/// stage writes the headers of both (the request's extensions exist
/// already; the response's would be made for it).
#[derive(Debug, Clone, Copy)]
struct AddressReport(Report);

/// Whose budget a check spends.
#[derive(Debug, Clone, Copy)]
enum Key<'a> {
    Address(IpAddr),
    Principal(&'a str),
}

/// As Redis keys name it: the address's usual text, the principal's id.
impl std::fmt::Display for Key<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Address(ip) => ip.fmt(f),
            Key::Principal(id) => f.write_str(id),
        }
    }
}

impl Key<'_> {
    fn scope(self) -> Scope {
        match self {
            Key::Address(_) => Scope::Address,
            Key::Principal(_) => Scope::Principal,
        }
    }
}

enum Checked {
    Done(Report),
    /// Redis could not be asked; the failure mode says what happens.
    Failed,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        let backend = match &config.redis_url {
            Some(url) => Backend::Redis(Box::new(redis::RedisBuckets::new(
                redis_client(&config, url),
                &config.redis_prefix,
                config.redis_timeout,
            ))),
            None => {
                let clock: Arc<dyn Clock> = Arc::new(MonotonicClock::new());
                Backend::Memory {
                    address: MemoryBuckets::new(config.max_keys, clock.clone()),
                    principal: MemoryBuckets::new(config.max_keys, clock),
                }
            }
        };
        if config.enabled {
            tracing::info!(
                store = if config.redis_url.is_some() {
                    "redis"
                } else {
                    "memory"
                },
                failure_mode = config.redis_failure.as_str(),
                roles = config.roles.len(),
                "rate limiting per address and per principal"
            );
        } else {
            tracing::info!("rate limiting is off (rate_limit_enabled = false)");
        }
        Self {
            policies: Policies::new(&config),
            config,
            backend,
            last_warning: AtomicU64::new(0),
            clock: MonotonicClock::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    async fn check(&self, class: Class, key: Key<'_>, limit: Limit) -> Checked {
        let p = limit.params();
        let scope = key.scope();
        let outcome = match (&self.backend, key) {
            // In memory an address is its octets (no text to format).
            (Backend::Memory { address, .. }, Key::Address(IpAddr::V4(ip))) => {
                address.take(class.index(), ip.octets(), p)
            }
            (Backend::Memory { address, .. }, Key::Address(IpAddr::V6(ip))) => {
                address.take(class.index(), ip.octets(), p)
            }
            (Backend::Memory { principal, .. }, Key::Principal(id)) => {
                principal.take(class.index(), id, p)
            }
            (Backend::Redis(r), key) => {
                let key = format!("{}:{}:{key}", class.as_str(), scope.as_str());
                match r.take(&key, p).await {
                    Ok(o) => o,
                    Err(e) => {
                        self.backend_failed(&e);
                        return Checked::Failed;
                    }
                }
            }
        };
        Checked::Done(Report {
            scope,
            class,
            limit,
            outcome,
        })
    }

    fn backend_failed(&self, error: &str) {
        let mode = self.config.redis_failure;
        metrics::counter!("cairn_rate_limit_backend_errors_total", "mode" => mode.as_str())
            .increment(1);
        // One warning per 10 s at most.
        let now = self.clock.now_us() / 1_000_000 + 1;
        let last = self.last_warning.load(Ordering::Relaxed);
        if (last == 0 || now >= last + 10)
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error = %error,
                failure_mode = mode.as_str(),
                "rate limiting: Redis cannot be asked; requests are {} meanwhile \
                 (logged at most every 10 s; see cairn_rate_limit_backend_errors_total)",
                match mode {
                    FailureMode::Open => "let through",
                    FailureMode::Closed => "refused",
                }
            );
        }
    }
}

/// The limiter and the request's route class, when rate limiting is on
/// and the route has a class.
fn limited<'a>(state: &'a AppState, req: &Request) -> Option<(&'a RateLimiter, Class)> {
    let limiter = &state.rate_limit;
    if !limiter.enabled() {
        return None;
    }
    Class::of(req.method(), req.uri().path()).map(|class| (&**limiter, class))
}

/// Per-address budgets, before authentication; writes the `RateLimit-*`
/// headers when [`by_principal`] did not (it writes those of both).
pub async fn by_address(state: &AppState, mut req: Request, next: impl Next) -> Response {
    let Some((limiter, class)) = limited(state, &req) else {
        return next.run(req).await;
    };
    let graphql = class == Class::Graphql;
    // Without a peer address (a router served without connect info)
    // there is no address budget, only the principal's.
    let Some(addr) = crate::edge::client::ip(&state.config.edge, &req) else {
        return next.run(req).await;
    };
    let limit = limiter.config.address.get(class);
    let report = match limiter.check(class, Key::Address(addr), limit).await {
        Checked::Done(r) if !r.outcome.allowed => return limiter.refused(r, graphql),
        Checked::Done(r) => r,
        Checked::Failed if limiter.config.redis_failure == FailureMode::Closed => {
            return unavailable(graphql);
        }
        Checked::Failed => return next.run(req).await,
    };
    req.extensions_mut().insert(AddressReport(report));
    let mut res = next.run(req).await;
    // Unless `by_principal` wrote the headers of both budgets.
    if !res.headers().contains_key(&LIMIT) {
        limiter.write_headers(res.headers_mut(), &[report]);
    }
    res
}

/// Per-principal budgets, after authentication (requests without an
/// authenticated principal, and everyone when authentication is off,
/// have only their address's budget). Runs inside [`by_address`]: when it
/// checks a budget it writes the headers of both.
pub async fn by_principal(state: &AppState, req: Request, next: impl Next) -> Response {
    let Some((limiter, class)) = limited(state, &req) else {
        return next.run(req).await;
    };
    let graphql = class == Class::Graphql;
    let checked = {
        let Some(principal) = req
            .extensions()
            .get::<Caller>()
            .map(|c| &*c.principal)
            .filter(|p| p.kind != PrincipalKind::Anonymous)
        else {
            return next.run(req).await;
        };
        let limit = limiter.config.principal_limit(principal, class);
        limiter
            .check(class, Key::Principal(&principal.id), limit)
            .await
    };
    let address = req.extensions().get::<AddressReport>().map(|a| a.0);
    match checked {
        Checked::Done(r) => {
            let mut res = if r.outcome.allowed {
                next.run(req).await
            } else {
                limiter.refused(r, graphql)
            };
            // The address's budget first, as `RateLimit-Policy` lists them.
            match address {
                Some(a) => limiter.write_headers(res.headers_mut(), &[a, r]),
                None => limiter.write_headers(res.headers_mut(), &[r]),
            }
            res
        }
        Checked::Failed if limiter.config.redis_failure == FailureMode::Closed => {
            unavailable(graphql)
        }
        Checked::Failed => next.run(req).await,
    }
}

fn secs_ceil(us: u64) -> u64 {
    us.div_ceil(1_000_000)
}

impl RateLimiter {
    fn refused(&self, r: Report, graphql: bool) -> Response {
        metrics::counter!(
            "cairn_rate_limit_rejections_total",
            "class" => r.class.as_str(),
            "scope" => r.scope.as_str()
        )
        .increment(1);
        let retry_after = secs_ceil(r.outcome.retry_after_us).max(1);
        let l = r.limit;
        let error = ApiError::TooManyRequests {
            message: format!(
                "rate limit exceeded: {} {} requests per {} s per {} (burst {}); retry in {retry_after} s",
                l.rate,
                r.class.as_str(),
                l.period_secs,
                r.scope.as_str(),
                l.burst
            ),
            retry_after,
        };
        let mut res = if graphql {
            crate::graphql::api_error_response(error)
        } else {
            error.into_response()
        };
        let headers = res.headers_mut();
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        self.write_headers(headers, &[r]);
        res
    }
}

fn unavailable(graphql: bool) -> Response {
    let error = ApiError::Unavailable(
        "the rate limiter's store (Redis) cannot be reached; try again shortly".into(),
    );
    let mut res = if graphql {
        crate::graphql::api_error_response(error)
    } else {
        error.into_response()
    };
    res.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(1u64));
    res
}

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");

impl RateLimiter {
    /// The headers of the most restrictive budget (fewest requests left,
    /// then the longest wait until full); `RateLimit-Policy` lists every
    /// budget checked, that one first.
    fn write_headers(&self, headers: &mut HeaderMap, reports: &[Report]) {
        let Some(first) = reports.iter().min_by(|a, b| {
            a.outcome
                .remaining
                .cmp(&b.outcome.remaining)
                .then(b.outcome.reset_us.cmp(&a.outcome.reset_us))
        }) else {
            return;
        };
        // Every budget checked, that one first.
        let listed = || {
            std::iter::once(first)
                .chain(reports.iter().filter(|r| !std::ptr::eq(*r, first)))
                .map(|r| (r.scope, r.limit))
        };
        let (limit, policy) = match self.policies.get(first.class, listed()) {
            Some(made) => made,
            None => (
                HeaderValue::from(first.limit.burst),
                policy_value(first.class, listed()),
            ),
        };
        headers.insert(LIMIT.clone(), limit);
        headers.insert(REMAINING.clone(), number(first.outcome.remaining));
        headers.insert(RESET.clone(), number(secs_ceil(first.outcome.reset_us)));
        headers.insert(POLICY.clone(), policy);
    }
}

/// A count as a header value; the small ones (seconds to reset, the last
/// requests of a budget) without allocating.
fn number(n: u64) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(n as usize) {
        Some(s) if n < 10 => HeaderValue::from_static(s),
        _ => HeaderValue::from(n),
    }
}

/// `RateLimit-Policy` listing these budgets of `class` in order.
fn policy_value(class: Class, listed: impl Iterator<Item = (Scope, Limit)>) -> HeaderValue {
    let mut text = Vec::with_capacity(128);
    for (i, (scope, limit)) in listed.enumerate() {
        if i > 0 {
            text.extend_from_slice(b", ");
        }
        write_policy(&mut text, scope, class, limit);
    }
    HeaderValue::from_maybe_shared(axum::body::Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// One budget of `RateLimit-Policy`:
/// `<rate>;w=<period>;burst=<burst>;comment="<scope> <class>"`.
fn write_policy(out: &mut Vec<u8>, scope: Scope, class: Class, limit: Limit) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(n.format(limit.rate).as_bytes());
    out.extend_from_slice(b";w=");
    out.extend_from_slice(n.format(limit.period_secs).as_bytes());
    out.extend_from_slice(b";burst=");
    out.extend_from_slice(n.format(limit.burst).as_bytes());
    out.extend_from_slice(b";comment=\"");
    out.extend_from_slice(scope.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(class.as_str().as_bytes());
    out.push(b'"');
}

/// The `RateLimit-Limit` and `RateLimit-Policy` values of the budget
/// lists the configuration makes (per class: the address's budget alone,
/// and with each principal budget the defaults and roles give, in either
/// order), made once: they are the same on every response.
struct Policies([Vec<Made>; 4]);

/// The values for one list of budgets.
struct Made {
    listed: Vec<(Scope, Limit)>,
    limit: HeaderValue,
    policy: HeaderValue,
}

impl Policies {
    fn new(config: &RateLimitConfig) -> Self {
        let classes = [Class::Auth, Class::Write, Class::Read, Class::Graphql];
        Self(classes.map(|class| {
            let address = (Scope::Address, config.address.get(class));
            let mut principal: Vec<Limit> = vec![config.principal.get(class)];
            for limit in config.roles.values().filter_map(|r| r.get(class)) {
                if !principal.contains(&limit) {
                    principal.push(limit);
                }
            }
            let mut lists = vec![vec![address]];
            for limit in principal {
                let p = (Scope::Principal, limit);
                lists.extend([vec![address, p], vec![p, address], vec![p]]);
            }
            lists
                .into_iter()
                .map(|list| Made {
                    limit: HeaderValue::from(list[0].1.burst),
                    policy: policy_value(class, list.iter().copied()),
                    listed: list,
                })
                .collect()
        }))
    }

    /// `RateLimit-Limit` and `RateLimit-Policy` for these budgets, in
    /// this order, if the configuration makes them.
    fn get(
        &self,
        class: Class,
        listed: impl Iterator<Item = (Scope, Limit)> + Clone,
    ) -> Option<(HeaderValue, HeaderValue)> {
        self.0[class.index()]
            .iter()
            .find(|m| m.listed.iter().copied().eq(listed.clone()))
            .map(|m| (m.limit.clone(), m.policy.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_domain::access::Role;

    #[test]
    fn routes_fall_into_their_classes() {
        let c = |m: Method, p: &str| Class::of(&m, p).map(Class::as_str);
        assert_eq!(c(Method::POST, "/api/v1/auth/login"), Some("auth"));
        assert_eq!(c(Method::POST, "/api/v1/auth/refresh"), Some("auth"));
        assert_eq!(c(Method::POST, "/api/v1/auth/logout"), Some("write"));
        assert_eq!(c(Method::POST, "/api/v1/events"), Some("write"));
        assert_eq!(c(Method::PATCH, "/api/v1/groups/x"), Some("write"));
        assert_eq!(c(Method::DELETE, "/api/v1/keys/x"), Some("write"));
        assert_eq!(c(Method::GET, "/api/v1/events"), Some("read"));
        assert_eq!(c(Method::POST, "/api/v1/graphql/query"), Some("graphql"));
        assert_eq!(c(Method::GET, "/api/v1/graphql/query"), Some("graphql"));
        assert_eq!(c(Method::GET, "/healthz/liveness"), None);
        assert_eq!(c(Method::GET, "/metrics"), None);
        assert_eq!(c(Method::GET, "/api/v10"), None);
    }

    fn principal(roles: &[&str]) -> Principal {
        Principal {
            id: "user:x".into(),
            kind: PrincipalKind::User,
            roles: roles.iter().filter_map(|r| Role::builtin(r)).collect(),
            ..Principal::anonymous()
        }
    }

    #[test]
    fn a_principal_gets_the_most_generous_of_its_roles_budgets() {
        let mut config = RateLimitConfig::default();
        config.principal.write = Limit::new(100, 100);
        config.roles.insert(
            "producer".into(),
            RoleLimits {
                write: Some(Limit::new(500, 1000)),
                ..RoleLimits::default()
            },
        );
        config.roles.insert(
            "reader".into(),
            RoleLimits {
                write: Some(Limit::new(1, 1)),
                ..RoleLimits::default()
            },
        );
        let l = |roles: &[&str]| config.principal_limit(&principal(roles), Class::Write);
        assert_eq!(l(&["producer"]), Limit::new(500, 1000));
        assert_eq!(l(&["reader"]), Limit::new(1, 1));
        assert_eq!(l(&["reader", "producer"]), Limit::new(500, 1000));
        // A role without its own budget counts with the default.
        assert_eq!(l(&["reader", "maintainer"]), Limit::new(100, 100));
        assert_eq!(l(&[]), Limit::new(100, 100));
        assert_eq!(
            config.principal_limit(&principal(&["producer"]), Class::Read),
            config.principal.read,
            "classes the role leaves out keep the default"
        );
    }

    #[test]
    fn generosity_compares_sustained_rates_across_periods() {
        let per_minute = Limit {
            rate: 120,
            burst: 1,
            period_secs: 60,
        };
        assert!(Limit::new(3, 1).more_generous_than(&per_minute));
        assert!(!Limit::new(2, 1).more_generous_than(&per_minute));
        assert!(Limit::new(2, 5).more_generous_than(&per_minute), "burst");
    }

    #[test]
    fn budgets_outside_the_exact_range_are_named() {
        assert!(Limit::new(0, 1).problem().unwrap().contains("rate"));
        assert!(Limit::new(1, 0).problem().unwrap().contains("burst"));
        let long = Limit {
            rate: 1,
            burst: 1_000_000,
            period_secs: 3600,
        };
        assert!(long.problem().unwrap().contains("burst * period_secs"));
        assert_eq!(Limit::new(50_000, 100_000).problem(), None);
    }

    fn report(scope: Scope, limit: Limit, remaining: u64, reset_us: u64) -> Report {
        Report {
            scope,
            class: Class::Write,
            limit,
            outcome: Outcome {
                allowed: true,
                remaining,
                retry_after_us: 0,
                reset_us,
            },
        }
    }

    #[test]
    fn headers_report_the_tightest_budget_and_list_all() {
        let limiter = RateLimiter::new(RateLimitConfig::default());
        let limit = Limit::new(5, 10);
        let mut h = HeaderMap::new();
        limiter.write_headers(
            &mut h,
            &[
                report(Scope::Address, limit, 7, 600_000),
                report(Scope::Principal, limit, 3, 1_400_001),
            ],
        );
        assert_eq!(h["ratelimit-limit"], "10");
        assert_eq!(h["ratelimit-remaining"], "3");
        assert_eq!(h["ratelimit-reset"], "2");
        assert_eq!(
            h["ratelimit-policy"],
            "5;w=1;burst=10;comment=\"principal write\", 5;w=1;burst=10;comment=\"address write\""
        );
    }

    #[test]
    fn values_made_once_equal_those_made_per_response() {
        // A role budget, so the configuration makes more than the defaults.
        let mut config = RateLimitConfig::default();
        config.roles.insert(
            "producer".into(),
            RoleLimits {
                write: Some(Limit::new(7, 70)),
                ..RoleLimits::default()
            },
        );
        let limiter = RateLimiter::new(config.clone());
        let address = config.address.write;
        let cases = [
            vec![report(Scope::Address, address, 9, 0)],
            vec![
                report(Scope::Address, address, 9, 0),
                report(Scope::Principal, config.principal.write, 5, 0),
            ],
            vec![
                report(Scope::Address, address, 1, 0),
                report(Scope::Principal, Limit::new(7, 70), 5, 0),
            ],
            vec![report(Scope::Principal, Limit::new(7, 70), 12, 3_000_000)],
        ];
        for reports in cases {
            let first = reports
                .iter()
                .min_by_key(|r| r.outcome.remaining)
                .expect("a report");
            let listed: Vec<(Scope, Limit)> = std::iter::once(first)
                .chain(reports.iter().filter(|r| !std::ptr::eq(*r, first)))
                .map(|r| (r.scope, r.limit))
                .collect();
            let (limit, policy) = limiter
                .policies
                .get(Class::Write, listed.iter().copied())
                .expect("made once for this configuration");
            assert_eq!(
                policy,
                policy_value(Class::Write, listed.iter().copied()),
                "{listed:?}"
            );
            assert_eq!(limit, HeaderValue::from(first.limit.burst), "{listed:?}");
            let mut h = HeaderMap::new();
            limiter.write_headers(&mut h, &reports);
            assert_eq!(h["ratelimit-policy"], policy);
            assert_eq!(
                h["ratelimit-remaining"],
                first.outcome.remaining.to_string()
            );
            assert_eq!(
                h["ratelimit-reset"],
                first.outcome.reset_us.div_ceil(1_000_000).to_string()
            );
        }
        assert!(
            limiter
                .policies
                .get(
                    Class::Write,
                    [(Scope::Address, Limit::new(5, 10))].into_iter()
                )
                .is_none(),
            "a budget the configuration does not make is written per response"
        );
    }

    #[test]
    fn small_numbers_are_written_like_large_ones() {
        for n in [0u64, 1, 9, 10, 11, 99_999] {
            assert_eq!(number(n), HeaderValue::from(n), "{n}");
        }
    }
}
