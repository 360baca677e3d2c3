//! Cairn's HTTP surface: the EPR-compatible `/api/v1` REST routes and
//! GraphQL API, health routes and `/metrics`. Handlers parse input into domain types, call the
//! store, and render the envelope; they hold no business rules of their own.
// The edge pipeline (`edge::pipeline`) is one nested future of thirteen
// stages; computing its layout goes deeper than the default limit.
#![recursion_limit = "256"]

pub mod auth;
pub mod counted;
pub mod edge;
pub mod error;
pub mod extract;
pub mod graphql;
pub mod metrics;
pub mod page;
pub mod process_metrics;
pub mod routes;
pub mod service;
pub mod traced;

use axum::Router;
use cairn_store::Store;
use std::sync::Arc;
use std::time::Instant;

pub use error::ApiError;

/// Settings the HTTP layer needs.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Running in production mode (staging aids are refused).
    pub production: bool,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// GraphQL query limits.
    pub graphql: graphql::GraphqlConfig,
    /// `Idempotency-Key` on POST and PATCH (docs/idempotency.md).
    pub idempotency: edge::idempotency::IdempotencyConfig,
    /// Rate limits per address and per principal (docs/rate-limits.md).
    pub rate_limit: edge::ratelimit::RateLimitConfig,
    /// Issue 6: the HTTP edge (security headers, CORS, overload, timeouts,
    /// compression, ETags, fault injection; docs/edge.md).
    pub edge: edge::config::EdgeConfig,
    /// Request ids, trace context, metrics, log scrubbing (issue 6).
    pub observability: edge::trace::ObservabilityConfig,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            production: false,
            max_body_bytes: 1024 * 1024,
            graphql: graphql::GraphqlConfig::default(),
            idempotency: edge::idempotency::IdempotencyConfig::default(),
            rate_limit: edge::ratelimit::RateLimitConfig::default(),
            edge: edge::config::EdgeConfig::default(),
            observability: edge::trace::ObservabilityConfig::default(),
        }
    }
}

/// What every handler can reach: one shared allocation, so handing it to
/// a middleware or handler (axum clones it for each request and layer) is
/// one reference-count increment, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppStateInner>);

impl std::ops::Deref for AppState {
    type Target = AppStateInner;

    fn deref(&self) -> &AppStateInner {
        &self.0
    }
}

/// The fields of [`AppState`].
#[derive(Clone)]
pub struct AppStateInner {
    pub store: Arc<dyn Store>,
    pub config: Arc<ApiConfig>,
    pub started: Instant,
    pub start_time: cairn_domain::Timestamp,
    /// The outbox relay's sinks, for readiness (empty without sinks).
    pub sinks: cairn_delivery::relay::StatusHandle,
    /// Poked after every successful write so the relay delivers without
    /// waiting for its next poll (`None` without a relay).
    pub relay_wake: Option<Arc<tokio::sync::Notify>>,
    /// This node's live feed (GraphQL subscriptions), woken after every
    /// successful write like the relay (`None`: no subscriptions).
    pub live: Option<cairn_delivery::live::LiveHandle>,
    /// Authentication: credentials, sessions, the audit log.
    pub auth: Arc<auth::Auth>,
    /// Where `Idempotency-Key` claims and responses are stored (`None`:
    /// the header is ignored).
    pub idempotency: Option<Arc<dyn cairn_store::idempotency::IdempotencyStore>>,
    /// The rate limiter, one per application (every route shares it).
    pub rate_limit: Arc<edge::ratelimit::RateLimiter>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: ApiConfig, auth: Arc<auth::Auth>) -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_micros()).unwrap_or(0))
            .unwrap_or(0);
        let rate_limit = Arc::new(edge::ratelimit::RateLimiter::new(config.rate_limit.clone()));
        metrics::set_receiver_types_max(config.observability.receiver_types_max);
        edge::scrub::install(config.observability.scrub.clone());
        Self(Arc::new(AppStateInner {
            store,
            config: Arc::new(config),
            started: Instant::now(),
            start_time: cairn_domain::Timestamp::from_micros(now),
            sinks: cairn_delivery::relay::StatusHandle::default(),
            relay_wake: None,
            live: None,
            auth,
            idempotency: None,
            rate_limit,
        }))
    }

    /// The fields, to change while the application is being built.
    fn parts(&mut self) -> &mut AppStateInner {
        Arc::make_mut(&mut self.0)
    }

    /// Keep `Idempotency-Key` claims and responses in this store.
    pub fn with_idempotency(
        mut self,
        store: Arc<dyn cairn_store::idempotency::IdempotencyStore>,
    ) -> Self {
        self.parts().idempotency = Some(store);
        self
    }

    /// Serve subscriptions from this live feed.
    pub fn with_live(mut self, live: cairn_delivery::live::LiveHandle) -> Self {
        self.parts().live = Some(live);
        self
    }

    /// Report these sinks in readiness.
    pub fn with_sinks(
        mut self,
        sinks: cairn_delivery::relay::StatusHandle,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        let parts = self.parts();
        parts.sinks = sinks;
        parts.relay_wake = Some(wake);
        self
    }
}

/// The whole application router (before trailing-slash normalisation, which
/// must wrap it from outside: see [`service`]).
pub fn router(state: AppState) -> Router {
    routes::router(state)
}

/// The router wrapped so that `/x/` is served as `/x`: the service of one
/// connection. Its requests must carry `ConnectInfo<SocketAddr>` (the
/// server's connection loop adds it).
pub fn service(state: AppState) -> tower_http::normalize_path::NormalizePath<Router> {
    use tower::Layer;
    tower_http::normalize_path::NormalizePathLayer::trim_trailing_slash().layer(router(state))
}
